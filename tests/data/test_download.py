"""archlab.data.download: fetching from mirrors (local HTTP servers), fallback, verification."""

from __future__ import annotations

import gzip
import http.server
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from archlab.data import download, load_dataset
from archlab.datasets import dataset_info
from archlab.errors import DataError
from tests.data.conftest import QuietHandler, closed_port_url
from tests.data.test_loader import FILES, check_mnist

GZ_FILES = sorted(f"{n}.gz" for n in FILES)


def cache_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def test_download_then_cache(mnist_dir: Path, tmp_path: Path, serve) -> None:
    server = serve(mnist_dir)
    cache = tmp_path / "cache"
    ds = load_dataset("mnist", mirrors=[server.url], cache_dir=cache)
    check_mnist(ds)
    assert ds.source == str((cache / "mnist").resolve())
    assert cache_files(cache / "mnist") == GZ_FILES
    server.stop()
    again = load_dataset("mnist", mirrors=[server.url], cache_dir=cache)  # server is down
    assert again.source == ds.source
    assert np.array_equal(again.x_test, ds.x_test)


def test_download_into_env_cache_dir(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                     tmp_path: Path, serve) -> None:
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(tmp_path / "env-cache"))
    ds = load_dataset("mnist", mirrors=[serve(mnist_dir).url])
    assert ds.source == str((tmp_path / "env-cache" / "mnist").resolve())


class CutOffHandler(QuietHandler):
    """Promises more bytes than it sends, then closes the connection."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + bytes(100))
        self.close_connection = True


def test_mirror_fallback(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                         serve) -> None:
    monkeypatch.setattr(download, "DOWNLOAD_TIMEOUT", 0.3)
    server = serve(mnist_dir)
    cut = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CutOffHandler)
    threading.Thread(target=cut.serve_forever, args=(0.05,), daemon=True).start()
    with socket.socket() as hanging:  # accepts connections (backlog) but never answers
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(8)
        mirrors = [
            closed_port_url(),
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
    check_mnist(ds)
    assert cache_files(tmp_path / "mnist") == GZ_FILES


def test_partial_cache_downloads_only_missing(mnist_dir: Path, tmp_path: Path, serve) -> None:
    cache = tmp_path / "mnist"
    cache.mkdir()
    for name in FILES[:3]:
        shutil.copy(mnist_dir / f"{name}.gz", cache)
    only_last = tmp_path / "srv"
    only_last.mkdir()
    shutil.copy(mnist_dir / f"{FILES[3]}.gz", only_last)
    load_dataset("mnist", mirrors=[serve(only_last).url], cache_dir=tmp_path)
    assert cache_files(cache) == GZ_FILES


@pytest.mark.parametrize("damage", ["truncate", "wrong-content", "bomb"])
def test_corrupt_download_is_refused(mnist_dir: Path, tmp_path: Path, serve,
                                     damage: str) -> None:
    served = tmp_path / "srv"
    served.mkdir()
    for name in FILES:
        shutil.copy(mnist_dir / f"{name}.gz", served)
    bad = served / "t10k-labels-idx1-ubyte.gz"
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:2000])
    elif damage == "wrong-content":
        content = bytearray(gzip.decompress(bad.read_bytes()))
        content[-1] = (content[-1] + 1) % 10
        bad.write_bytes(gzip.compress(bytes(content)))
    else:  # 20 MB of zeros for a 10 kB file: decompression stops at the expected size
        bad.write_bytes(gzip.compress(bytes(20 * 2**20), compresslevel=1))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_dataset("mnist", mirrors=[serve(served).url], cache_dir=cache)
    msg = str(info.value)
    assert "\n" not in msg and "t10k-labels-idx1-ubyte.gz" in msg
    left = cache_files(cache / "mnist")
    assert "t10k-labels-idx1-ubyte.gz" not in left
    assert not [n for n in left if ".part" in n]  # no temp files left behind
    assert len(left) == 3  # the good files are kept


def test_offline_nothing_found(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("mnist", cache_dir=tmp_path, mirrors=[closed_port_url()])
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
    assert "apt-get install dataset-fashion-mnist" in str(info.value)


def test_no_mirrors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="download failed: no mirrors given"):
        load_dataset("mnist", cache_dir=tmp_path, mirrors=[])


def test_records_name_mirrors_for_every_file_dataset() -> None:
    for name in ("mnist", "fashion-mnist"):
        assert all(m.startswith(("http://", "https://")) and m.endswith("/")
                   for m in dataset_info(name).mirrors)
