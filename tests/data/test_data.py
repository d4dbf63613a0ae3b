"""Tests for archlab.data: IDX loading, verification, resolution order, downloads, the sample."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import archlab
from archlab.data import DATASETS, RawDataset, dataset_files, load_dataset
from archlab.data import loader as _data
from archlab.errors import DataError

MNIST_DIR = Path(__file__).resolve().parents[3] / "shared/datasets/mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = [f.name for f in dataset_files("mnist")]

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

needs_mnist = pytest.mark.skipif(
    not MNIST_DIR.is_dir(), reason=f"real MNIST files not found at {MNIST_DIR}"
)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the user's env, cache or system directories."""
    monkeypatch.delenv("ARCHLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(tmp_path / "default-cache"))
    monkeypatch.setattr(_data, "SYSTEM_DIRS", {"mnist": (), "fashion-mnist": ()})


class _Server:
    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator:
    servers: list[_Server] = []

    def start(directory: Path) -> _Server:
        servers.append(_Server(directory))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _check_mnist(ds: RawDataset) -> None:
    assert ds.name == "mnist"
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.x_test.dtype == np.uint8
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == TRAIN_COUNTS
    assert np.bincount(ds.y_test).tolist() == TEST_COUNTS
    assert ds.class_names == tuple("0123456789")


def _cache_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


# -- local files ------------------------------------------------------------------------------


@needs_mnist
def test_load_real_mnist_dir() -> None:
    ds = load_dataset("mnist", MNIST_DIR, download=False)
    _check_mnist(ds)
    assert ds.source == str(MNIST_DIR.resolve())
    assert ds.x_train.flags.writeable


@needs_mnist
def test_plain_and_gz_files_mixed(tmp_path: Path) -> None:
    for i, name in enumerate(FILES):
        src = MNIST_DIR / f"{name}.gz"
        if i % 2:
            shutil.copy(src, tmp_path / src.name)
        else:
            (tmp_path / name).write_bytes(gzip.decompress(src.read_bytes()))
    _check_mnist(load_dataset("mnist", tmp_path, download=False))


@needs_mnist
def test_corrupt_local_file_is_refused(tmp_path: Path) -> None:
    for name in FILES:
        shutil.copy(MNIST_DIR / f"{name}.gz", tmp_path)
    labels = gzip.decompress((MNIST_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(labels[:-10])  # truncated, plain
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_dataset("mnist", tmp_path, download=False)
    assert "t10k-labels-idx1-ubyte" in str(info.value)


@needs_mnist
def test_truncated_gz_is_refused(tmp_path: Path) -> None:
    for name in FILES:
        shutil.copy(MNIST_DIR / f"{name}.gz", tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="checksum mismatch.*train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", tmp_path, download=False)


def test_explicit_dir_missing_files_is_an_error(tmp_path: Path, serve) -> None:
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"")
    server = serve(tmp_path)  # a working mirror must not be used: no silent fall-through
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path, mirrors=[server.url], cache_dir=tmp_path / "c")
    msg = str(info.value)
    assert str(tmp_path) in msg and "\n" not in msg
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "train-labels-idx1-ubyte," not in msg
    assert not (tmp_path / "c").exists()


@needs_mnist
def test_env_data_dir_is_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ARCHLAB_DATA_DIR", str(MNIST_DIR))
    ds = load_dataset("mnist", download=False, cache_dir=tmp_path)
    assert ds.source == str(MNIST_DIR.resolve())
    _check_mnist(ds)


def test_env_data_dir_missing_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ARCHLAB_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="ARCHLAB_DATA_DIR.*nowhere.*train-images-idx3-ubyte"):
        load_dataset("mnist", download=False, cache_dir=tmp_path)


@needs_mnist
def test_system_dir_is_used_after_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_data, "SYSTEM_DIRS", {"mnist": (tmp_path / "none", MNIST_DIR)})
    ds = load_dataset("mnist", download=False, cache_dir=tmp_path / "cache")
    assert ds.source == str(MNIST_DIR.resolve())


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset 'cifar'.*mnist-sample"):
        load_dataset("cifar")


def test_dataset_files() -> None:
    assert DATASETS == ("mnist", "fashion-mnist", "mnist-sample")
    for name in ("mnist", "fashion-mnist"):
        files = dataset_files(name)
        assert [f.name for f in files] == FILES
        assert [f.count for f in files] == [60000, 60000, 10000, 10000]
        assert all(len(f.sha256) == 64 for f in files)
    assert dataset_files("mnist-sample") == ()


def test_idx_header_validation() -> None:
    f = dataset_files("mnist")[3]  # t10k labels: magic 2049, 10000 items
    good = (2049).to_bytes(4, "big") + (10000).to_bytes(4, "big") + bytes(10000)
    assert _data._parse_idx(good, "x", f).shape == (10000,)
    with pytest.raises(DataError, match="magic number 2051"):
        _data._parse_idx((2051).to_bytes(4, "big") + good[4:], "x", f)
    with pytest.raises(DataError, match="bytes, expected 10008"):
        _data._parse_idx(good[:-1], "x", f)
    with pytest.raises(DataError, match="items, expected 10000"):
        _data._parse_idx(good[:4] + (9999).to_bytes(4, "big") + good[8:-1], "x", f)
    with pytest.raises(DataError, match="too short"):
        _data._parse_idx(b"\0\0", "x", f)


# -- downloads --------------------------------------------------------------------------------


@needs_mnist
def test_download_then_cache(tmp_path: Path, serve) -> None:
    server = serve(MNIST_DIR)
    cache = tmp_path / "cache"
    ds = load_dataset("mnist", mirrors=[server.url], cache_dir=cache)
    _check_mnist(ds)
    assert ds.source == str((cache / "mnist").resolve())
    assert _cache_files(cache / "mnist") == sorted(f"{n}.gz" for n in FILES)
    server.stop()
    again = load_dataset("mnist", mirrors=[server.url], cache_dir=cache)  # server is down
    assert again.source == ds.source
    assert np.array_equal(again.x_test, ds.x_test)


@needs_mnist
def test_download_into_env_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, serve):
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(tmp_path / "env-cache"))
    ds = load_dataset("mnist", mirrors=[serve(MNIST_DIR).url])
    assert ds.source == str((tmp_path / "env-cache" / "mnist").resolve())


class _CutOffHandler(_QuietHandler):
    """Promises more bytes than it sends, then closes the connection."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + bytes(100))
        self.close_connection = True


@needs_mnist
def test_mirror_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, serve) -> None:
    monkeypatch.setattr(_data, "DOWNLOAD_TIMEOUT", 0.3)
    server = serve(MNIST_DIR)
    cut = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutOffHandler)
    threading.Thread(target=cut.serve_forever, args=(0.05,), daemon=True).start()
    with socket.socket() as hanging:  # accepts connections (backlog) but never answers
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(8)
        mirrors = [
            _closed_port_url(),
            f"http://127.0.0.1:{hanging.getsockname()[1]}/",
            f"http://127.0.0.1:{cut.server_address[1]}/",
            server.url + "missing/",
            server.url,
        ]
        try:
            ds = load_dataset("mnist", mirrors=mirrors, cache_dir=tmp_path)
        finally:
            cut.shutdown()
            cut.server_close()
    _check_mnist(ds)
    assert _cache_files(tmp_path / "mnist") == sorted(f"{n}.gz" for n in FILES)


@needs_mnist
def test_partial_cache_downloads_only_missing(tmp_path: Path, serve) -> None:
    cache = tmp_path / "mnist"
    cache.mkdir()
    for name in FILES[:3]:
        shutil.copy(MNIST_DIR / f"{name}.gz", cache)
    only_last = tmp_path / "srv"
    only_last.mkdir()
    shutil.copy(MNIST_DIR / f"{FILES[3]}.gz", only_last)
    load_dataset("mnist", mirrors=[serve(only_last).url], cache_dir=tmp_path)
    assert _cache_files(cache) == sorted(f"{n}.gz" for n in FILES)


@needs_mnist
@pytest.mark.parametrize("damage", ["truncate", "wrong-content"])
def test_corrupt_download_is_refused(tmp_path: Path, serve, damage: str) -> None:
    served = tmp_path / "srv"
    served.mkdir()
    for name in FILES:
        shutil.copy(MNIST_DIR / f"{name}.gz", served)
    bad = served / "t10k-labels-idx1-ubyte.gz"
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:2000])
    else:
        content = bytearray(gzip.decompress(bad.read_bytes()))
        content[-1] = (content[-1] + 1) % 10
        bad.write_bytes(gzip.compress(bytes(content)))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_dataset("mnist", mirrors=[serve(served).url], cache_dir=cache)
    msg = str(info.value)
    assert "\n" not in msg and "t10k-labels-idx1-ubyte.gz" in msg
    left = _cache_files(cache / "mnist")
    assert "t10k-labels-idx1-ubyte.gz" not in left
    assert not [n for n in left if n.endswith(".part")]  # no temp files left behind
    assert len(left) == 3  # the good files are kept


def test_offline_nothing_found(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("mnist", cache_dir=tmp_path, mirrors=[_closed_port_url()])
    msg = str(info.value)
    assert "\n" not in msg
    assert all(name in msg for name in FILES)
    assert str(tmp_path / "mnist") in msg and "ARCHLAB_DATA_DIR" in msg
    assert "download failed" in msg
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_download_disabled(tmp_path: Path, serve) -> None:
    server = serve(tmp_path)
    with pytest.raises(DataError, match="downloading is disabled") as info:
        load_dataset("fashion-mnist", cache_dir=tmp_path, download=False, mirrors=[server.url])
    assert "\n" not in str(info.value) and "train-images-idx3-ubyte" in str(info.value)


# -- embedded sample and Fashion-MNIST --------------------------------------------------------


def test_mnist_sample_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_data, "DEFAULT_MIRRORS", {})  # any network use would fail
    ds = load_dataset("mnist-sample", download=False)
    assert ds.source == "embedded"
    assert ds.x_train.shape == (5000, 28, 28) and ds.x_test.shape == (1000, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.x_test.dtype == np.uint8
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert set(ds.y_train.tolist()) == set(range(10)) == set(ds.y_test.tolist())
    assert ds.class_names == tuple("0123456789")


def test_sample_file_is_small() -> None:
    path = Path(archlab.__file__).parent.joinpath(*_data.SAMPLE_RESOURCE)
    assert path.stat().st_size <= 2 * 1024 * 1024


@needs_mnist
def test_mnist_sample_is_a_real_subset() -> None:
    path = Path(archlab.__file__).parent.joinpath(*_data.SAMPLE_RESOURCE)
    with np.load(path) as npz:
        train_index, test_index = npz["train_index"], npz["test_index"]
    rng = np.random.default_rng(0)  # the documented draw
    assert np.array_equal(train_index, np.sort(rng.choice(60000, 5000, replace=False)))
    assert np.array_equal(test_index, np.sort(rng.choice(10000, 1000, replace=False)))
    full = load_dataset("mnist", MNIST_DIR, download=False)
    sample = load_dataset("mnist-sample")
    assert np.array_equal(sample.x_train, full.x_train[train_index])
    assert np.array_equal(sample.y_train, full.y_train[train_index])
    assert np.array_equal(sample.x_test, full.x_test[test_index])
    assert np.array_equal(sample.y_test, full.y_test[test_index])


@pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason=f"{FASHION_DIR} absent (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_from_system_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_data, "SYSTEM_DIRS", {"fashion-mnist": (FASHION_DIR,)})
    ds = load_dataset("fashion-mnist", download=False, cache_dir=tmp_path)
    assert ds.source == str(FASHION_DIR.resolve())
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert len(ds.class_names) == 10
