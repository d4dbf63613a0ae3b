"""Datasets served as one archive: CIFAR-10/100's binary tar.gz, EMNIST's zip of IDX files.

The archive is checked against its published MD5 (once per process and file state), then the
members the record names are read straight out of it, each bounded by its known size: nothing
is extracted to disk, so a member's name cannot point outside the cache, and a member that
is larger than it should be is refused after at most its own size.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from archlab.data.idx import md5_file, parse_idx, read_bounded
from archlab.datasets import Archive, DataFile, DatasetInfo
from archlab.errors import DataError

__all__ = ["check_archive", "read_archive"]

_FETCH_AGAIN = "delete it and fetch it again"
#: (path, size, mtime_ns) -> MD5, for archives already checked by this process
_CHECKED: dict[tuple[str, int, int], str] = {}
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def check_archive(path: Path, archive: Archive) -> None:
    """Raise a one-line :class:`DataError` unless ``path`` has ``archive``'s published MD5."""
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if st.st_size > archive.max_bytes:
        raise DataError(f"{path}: {st.st_size:,} bytes, more than {archive.name} can be "
                        f"({archive.max_bytes:,}); {_FETCH_AGAIN}")
    key = (str(path), st.st_size, st.st_mtime_ns)
    digest = _CHECKED.get(key) or md5_file(path)
    if digest != archive.md5:
        raise DataError(f"checksum mismatch: {path} has MD5 {digest}, expected {archive.md5} "
                        f"for {archive.name} (corrupt, truncated or a different file); "
                        f"{_FETCH_AGAIN}")
    _CHECKED[key] = digest


def _split_members(info: DatasetInfo) -> tuple[list[DataFile], list[DataFile]]:
    train = [f for f in info.files if "test" not in f.name.rsplit("/", 1)[-1]]
    test = [f for f in info.files if "test" in f.name.rsplit("/", 1)[-1]]
    return train, test


def _cifar_records(data: bytes | bytearray, f: DataFile, info: DatasetInfo
                   ) -> tuple[np.ndarray, np.ndarray]:
    n, width = f.shape
    rec = np.frombuffer(data, dtype=np.uint8).reshape(n, width)
    labels = rec[:, info.label_byte].astype(np.int64)
    h, w, c = info.image_shape
    # Each record's pixels are the red, green and blue planes, each row by row.
    images = rec[:, width - h * w * c:].reshape(n, c, h, w).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _read_cifar(path: Path, info: DatasetInfo) -> Arrays:
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for f in info.files:
                try:
                    member = tar.getmember(f.name)
                except KeyError:
                    raise DataError(f"{path}: no member {f.name} (not the binary version of "
                                    f"{info.name}?); {_FETCH_AGAIN}") from None
                if not member.isfile() or member.size != f.size:
                    raise DataError(f"{path}: member {f.name} has {member.size:,} bytes, "
                                    f"expected {f.size:,}; {_FETCH_AGAIN}")
                stream = tar.extractfile(member)
                assert stream is not None  # a regular file
                parts[f.name] = _cifar_records(read_bounded(stream, f.size, path, f.name), f,
                                               info)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: not a readable tar.gz ({' '.join(str(exc).split())}); "
                        f"{_FETCH_AGAIN}") from None
    return _joined(info, parts)


def _read_emnist(path: Path, info: DatasetInfo) -> Arrays:
    parts: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for f in info.files:
                try:
                    with zf.open(f.name) as member, gzip.GzipFile(fileobj=member) as stream:
                        data = read_bounded(stream, f.size, f"{path}:{f.name}",  # type: ignore[arg-type]
                                            f.name)
                except KeyError:
                    raise DataError(f"{path}: no member {f.name}; {_FETCH_AGAIN}") from None
                parts[f.name] = parse_idx(data, f"{path}:{f.name}", f)
    except (zipfile.BadZipFile, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: not a readable zip ({' '.join(str(exc).split())}); "
                        f"{_FETCH_AGAIN}") from None
    x_train, y_train, x_test, y_test = (parts[f.name] for f in info.files)
    if info.transpose:  # EMNIST stores each image transposed
        x_train, x_test = x_train.transpose(0, 2, 1), x_test.transpose(0, 2, 1)
    return (np.ascontiguousarray(x_train)[..., None], y_train.astype(np.int64)
            + info.label_offset, np.ascontiguousarray(x_test)[..., None],
            y_test.astype(np.int64) + info.label_offset)


def _joined(info: DatasetInfo, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> Arrays:
    train, test = _split_members(info)

    def cat(files: list[DataFile]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(parts[f.name] for f in files), strict=True)
        return (np.concatenate(xs) if len(xs) > 1 else xs[0],
                np.concatenate(ys) if len(ys) > 1 else ys[0])

    return (*cat(train), *cat(test))


def read_archive(path: Path, info: DatasetInfo) -> Arrays:
    """(x_train, y_train, x_test, y_test) of an archive dataset: images (N, H, W, C) uint8,
    labels int64, after the archive's MD5 is checked."""
    assert info.archive is not None
    check_archive(path, info.archive)
    if info.format == "cifar":
        return _read_cifar(path, info)
    if info.format == "emnist":
        return _read_emnist(path, info)
    raise DataError(f"{info.name}: no reader for archives of format {info.format!r}")


def find_archive(directory: Path, archive: Archive) -> Path | None:
    """``directory/<archive name>`` if it is a file."""
    path = directory / archive.name
    return path if os.path.isfile(path) else None
