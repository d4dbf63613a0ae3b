"""Downloading a dataset's files from its mirrors into the user cache, atomically and verified.

A file arrives as `<name>.gz.part` beside its destination, is verified (bounded decompression,
SHA-256 of the content) and only then renamed into place, so the cache never holds a partial or
wrong file, whatever kills the process.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from archlab.data.archives import check_archive
from archlab.data.idx import find_file, read_verified
from archlab.datasets import Archive, DataFile
from archlab.errors import DataError

__all__ = ["DOWNLOAD_TIMEOUT", "MAX_DOWNLOAD_BYTES", "DownloadError", "download_archive",
           "download_missing"]

log = logging.getLogger(__name__)

#: Seconds to wait on a mirror (connect and each read) before trying the next one.
DOWNLOAD_TIMEOUT = 30.0
#: Largest download of one IDX file (the largest, Fashion-MNIST train images, is ~26 MB
#: gzip'd); an archive's record says its own bound.
MAX_DOWNLOAD_BYTES = 128 * 1024 * 1024


class DownloadError(Exception):
    """One file could not be fetched from one mirror (the caller tries the next mirror)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable  # the mirror itself failed: skip it for the other files


def download_missing(cache: Path, files: Sequence[DataFile], mirrors: Sequence[str]) -> list[str]:
    """Download every file missing from ``cache``; return the failures (empty if all arrived)."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [f"cannot create cache {cache}: {exc.strerror or exc}"]
    dead: dict[str, str] = {}  # mirror -> why it cannot be reached
    failures: list[str] = []
    incomplete = False
    for f in files:
        if find_file(cache, f) is not None:
            continue
        for mirror in mirrors:
            if mirror in dead:
                continue
            url = mirror.rstrip("/") + "/" + f.gz_name
            try:
                download_one(url, cache / f.gz_name, f)
            except DownloadError as exc:
                log.info("could not fetch %s: %s", url, exc)
                if exc.unreachable:
                    dead[mirror] = str(exc)
                else:
                    failures.append(f"{url}: {exc}")
                continue
            break
        else:
            incomplete = True
    if not incomplete:
        return []
    return [f"{mirror}: {why}" for mirror, why in dead.items()] + failures


def download_archive(cache: Path, archive: Archive, mirrors: Sequence[str]) -> list[str]:
    """Download ``archive`` into ``cache`` from the first mirror that serves it whole, with
    its published MD5; return the failures (empty when it arrived)."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [f"cannot create cache {cache}: {exc.strerror or exc}"]
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + archive.name
        try:
            fetch_verified(url, cache / archive.name, lambda tmp: check_archive(tmp, archive),
                           max_bytes=archive.max_bytes, suffix=".part")
            return []
        except DownloadError as exc:
            log.info("could not fetch %s: %s", url, exc)
            failures.append(f"{url}: {exc}")
    return failures


def download_one(url: str, dest: Path, f: DataFile) -> None:
    """Fetch ``url`` to a temp file beside ``dest``, verify it, then rename it to ``dest``."""
    # The temp name ends in .gz so that read_verified decompresses it.
    fetch_verified(url, dest, lambda tmp: read_verified(tmp, f), max_bytes=MAX_DOWNLOAD_BYTES,
                   suffix=".part.gz")


def fetch_verified(url: str, dest: Path, verify: Callable[[Path], object], *, max_bytes: int,
                   suffix: str) -> None:
    """Fetch ``url`` (at most ``max_bytes``) to a temp file beside ``dest``, run ``verify`` on
    it (a :class:`DataError` is a checksum mismatch), then rename it to ``dest``."""
    log.info("downloading %s", url)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=suffix)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(url, out, max_bytes)
            out.flush()
            os.fsync(out.fileno())
        try:
            verify(tmp)
        except DataError as exc:
            raise DownloadError(f"checksum mismatch ({_strip_path(str(exc), tmp)})") from exc
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _strip_path(message: str, path: Path) -> str:
    """The temp file's name means nothing to the user: the URL is named instead."""
    return message.replace(f"{path}: ", "").replace(str(path), "the download")


def _fetch(url: str, out: BinaryIO, max_bytes: int = MAX_DOWNLOAD_BYTES) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "archlab"})
    total = 0
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
            while chunk := response.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise DownloadError(f"larger than {max_bytes} bytes")
                out.write(chunk)
            expected = response.headers.get("Content-Length")
            if expected and expected.isdigit() and int(expected) != total:
                raise DownloadError(f"transfer cut off after {total} of {expected} bytes")
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"HTTP {exc.code}") from exc
    except urllib.error.URLError as exc:  # DNS, refused connection, TLS
        raise DownloadError(str(exc.reason), unreachable=True) from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:  # timeouts, resets, cut-offs
        raise DownloadError(str(exc) or type(exc).__name__, unreachable=True) from exc
