"""IDX files (MNIST's format), plain or gzip'd: a cheap check, and a bounded, verified read.

Every file's decompressed size is known in advance from its record (header + N x H x W bytes),
so nothing here ever holds or decompresses more than that (plus one byte, to tell "longer"
from "exactly right"): a gzip bomb or a wrong, huge file is refused after at most one file's
worth of work. Whatever is read is then checked against the SHA-256 of the canonical content.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from archlab.datasets import IDX_MAGIC, DataFile
from archlab.errors import DataError

__all__ = ["GZIP_MAGIC", "check_file", "find_file", "md5_file", "parse_idx", "read_bounded",
           "read_idx",
           "read_verified"]

GZIP_MAGIC = b"\x1f\x8b"

_FETCH_AGAIN = "delete it and fetch it again"
_CHUNK = 1 << 20


def find_file(directory: Path, f: DataFile) -> Path | None:
    """The plain file in ``directory`` if present, else the .gz one, else None."""
    for candidate in (directory / f.name, directory / f.gz_name):
        if candidate.is_file():
            return candidate
    return None


def check_file(path: Path, f: DataFile) -> None:
    """Cheap checks that ``path`` can be ``f`` (no decompression): raise a one-line DataError.

    A plain file must have exactly ``f.size`` bytes. A gzip file must start with the gzip magic
    number and its trailer must record ``f.size`` decompressed bytes (gzip stores the size
    modulo 2**32 in its last four bytes; the canonical files are single-member gzips).
    """
    try:
        size = path.stat().st_size
        if not path.name.endswith(".gz"):
            if size != f.size:
                raise DataError(f"{path}: {size:,} bytes, expected {f.size:,} for {f.name} "
                                f"(truncated, corrupt or a different file); {_FETCH_AGAIN}")
            return
        with path.open("rb") as fh:
            head = fh.read(2)
            if size < 18 or head != GZIP_MAGIC:  # 10-byte header + 8-byte trailer at least
                raise DataError(f"{path}: not a gzip file (truncated or corrupt); {_FETCH_AGAIN}")
            fh.seek(-4, 2)
            recorded = int.from_bytes(fh.read(4), "little")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if recorded != f.size % 2**32:
        raise DataError(f"{path}: its gzip trailer records {recorded:,} decompressed bytes, "
                        f"expected {f.size:,} for {f.name} (truncated, corrupt or a different "
                        f"file); {_FETCH_AGAIN}")


def read_bounded(stream: BinaryIO, limit: int, where: Path | str, what: str) -> bytearray:
    """Exactly ``limit`` bytes of ``stream`` (a file, or a gzip or archive member stream);
    a one-line :class:`DataError` when it holds fewer or more. Never reads past ``limit + 1``:
    a gzip bomb costs at most one file's worth of work."""
    buf = bytearray(limit + 1)  # one byte more: a file that fills it is too long
    view = memoryview(buf)
    filled = 0
    try:
        # Chunked reads: gzip decompresses only what each read asks for, and no temporary
        # copy of the whole content is made beside the buffer.
        while filled <= limit and (chunk := stream.read(min(_CHUNK, limit + 1 - filled))):
            view[filled:filled + len(chunk)] = chunk
            filled += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{where}: not a valid gzip file (truncated or corrupt: {exc}); "
                        f"{_FETCH_AGAIN}") from exc
    except OSError as exc:
        raise DataError(f"cannot read {where}: {exc.strerror or exc}") from exc
    finally:
        view.release()
    if filled > limit:
        raise DataError(f"{where}: decompresses to more than the {limit:,} bytes of {what} "
                        f"(a different file, or a gzip bomb); reading stopped there; delete it")
    if filled < limit:
        raise DataError(f"{where}: {filled:,} bytes of content, expected {limit:,} for {what} "
                        f"(truncated or corrupt); {_FETCH_AGAIN}")
    del buf[limit:]
    return buf


def _read_bounded(path: Path, f: DataFile) -> bytearray:
    """The decompressed content of ``path``, refusing to read past ``f.size`` bytes."""
    try:
        with path.open("rb") as raw:
            if not path.name.endswith(".gz"):
                size = path.stat().st_size
                if size != f.size:  # known without reading a byte
                    raise DataError(f"{path}: {size:,} bytes, expected {f.size:,} for {f.name} "
                                    f"(truncated, corrupt or a different file); {_FETCH_AGAIN}")
                return read_bounded(raw, f.size, path, f.name)
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return read_bounded(stream, f.size, path, f.name)  # type: ignore[arg-type]
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc


def md5_file(path: Path) -> str:
    """The MD5 of a file's bytes, as datasets publish them (read in chunks)."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK * 8):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def read_verified(path: Path, f: DataFile) -> bytearray:
    """The decompressed content of ``path`` once its size and checksum match ``f``: the
    SHA-256 of the content, or (a record that has only the served file's published MD5) the
    MD5 of the .gz file itself; a plain copy of such a file gets the size and header checks."""
    if f.sha256 is None and f.md5 is not None and path.name.endswith(".gz"):
        got = md5_file(path)
        if got != f.md5:
            raise DataError(f"checksum mismatch: {path} has MD5 {got}, expected {f.md5} for "
                            f"{f.gz_name} (corrupt or a different file); {_FETCH_AGAIN}")
    data = _read_bounded(path, f)
    if f.sha256 is None:
        return data
    digest = hashlib.sha256(data).hexdigest()
    if digest != f.sha256:
        raise DataError(f"checksum mismatch: {path} has SHA-256 {digest}, expected {f.sha256} "
                        f"for {f.name} (corrupt or a different file); {_FETCH_AGAIN}")
    return data


def parse_idx(data: bytes | bytearray, path: Path | str, f: DataFile) -> np.ndarray:
    """Parse an IDX file of unsigned bytes, checking magic number, dimensions and length.

    The array shares ``data``'s memory (writeable when ``data`` is a bytearray): MNIST's training
    images are 47 MB, and a copy would double the peak.
    """
    header = f.header_size
    magic = IDX_MAGIC[f.kind]
    if len(data) < header:
        raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise DataError(f"{path}: IDX magic number {got}, expected {magic} ({f.kind})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=len(f.shape), offset=4))
    if dims[0] != f.count:
        raise DataError(f"{path}: {dims[0]} items, expected {f.count}")
    if dims != f.shape:
        raise DataError(f"{path}: shape {dims}, expected {f.shape}")
    if len(data) != f.size:
        raise DataError(f"{path}: {len(data)} bytes, expected {f.size} for shape {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: Path, f: DataFile) -> np.ndarray:
    """Read (bounded), verify (SHA-256) and parse one IDX file, plain or .gz."""
    return parse_idx(read_verified(path, f), path, f)
