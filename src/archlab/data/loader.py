"""Finding and loading a dataset: a built-in's files (plain or .gz) or archive in a data
directory, the user cache or a system directory, else from the mirrors, or the sample embedded
in the package; or the user's own source (:mod:`archlab.data.sources`).

Where a built-in dataset is looked for, in order:

1. the ``data_dir`` argument, else ``$ARCHLAB_DATA_DIR`` (if either is given, it must exist and
   hold the files, or the archive: a mistyped directory is an error, never a silent
   fall-through);
2. the user cache ``<cache>/<name>/`` (``cache_dir``, else ``$ARCHLAB_CACHE_DIR``, else
   ``~/.cache/archlab``; an archive's folder is shared by the records made from it, e.g.
   ``cifar100/`` for cifar100 and cifar100-coarse);
3. the record's system directories (e.g. ``/usr/share/datasets/fashion-mnist`` from Debian);
4. the record's mirrors, downloading ``<file>.gz`` (or the archive) atomically into the cache.

:func:`locate_dataset` answers "where would it come from" with cheap checks only (files present,
sizes right), so ``validate`` and ``run`` can report a missing or damaged dataset before any
timing or output; :func:`load_dataset` then reads and verifies every byte.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archlab.data.archives import find_archive, read_archive
from archlab.data.download import download_archive, download_missing
from archlab.data.idx import check_file, find_file, read_idx
from archlab.data.raw import RawDataset
from archlab.data.sources import load_source
from archlab.datasets import DatasetInfo, Source, dataset_info
from archlab.datasets.listing import ENV_CACHE_DIR, cache_root
from archlab.errors import DataError

__all__ = [
    "ENV_CACHE_DIR",
    "ENV_DATA_DIR",
    "DatasetLocation",
    "DatasetRef",
    "RawDataset",
    "default_cache_dir",
    "load_dataset",
    "locate_dataset",
    "sample_path",
]

ENV_DATA_DIR = "ARCHLAB_DATA_DIR"
#: Anything a study may name as its dataset: a built-in's name or a source.
DatasetRef = str | Source


@dataclass(frozen=True)
class DatasetLocation:
    """Where a dataset will be loaded from, as found by :func:`locate_dataset`."""

    name: str
    directory: Path | None  # None: embedded in the package
    download: bool = False  # the files are not here yet: they will be downloaded into directory

    @property
    def embedded(self) -> bool:
        """True for the dataset shipped inside the package."""
        return self.directory is None

    def __str__(self) -> str:
        if self.directory is None:
            return f"{self.name}: embedded in archlab"
        if self.download:
            return f"{self.name}: not on this machine; will be downloaded into {self.directory}"
        return f"{self.name}: {self.directory}"


def default_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The user cache root: ``cache_dir``, else ``$ARCHLAB_CACHE_DIR``, else ~/.cache/archlab."""
    return cache_root(cache_dir)


def sample_path(name: str = "mnist-sample") -> Path:
    """The file of an embedded dataset inside the installed package."""
    info = dataset_info(name)
    if info.embedded is None:
        raise DataError(f"{name} is not embedded in archlab; it is loaded from files")
    return Path(str(importlib.resources.files("archlab").joinpath(*info.embedded)))


def _needs(info: DatasetInfo) -> list[str]:
    """The file names a directory must hold for ``info``: its archive, or its files."""
    return [info.archive.name] if info.archive is not None else [f.name for f in info.files]


def locate_dataset(
    dataset: DatasetRef,
    data_dir: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
) -> DatasetLocation:
    """Where ``dataset`` (a built-in's name, or a source) would be loaded from, unread.

    Checks that the files are present with the right sizes (a plain file's length, a gzip
    file's recorded size; an archive's presence) and raises a one-line :class:`DataError`
    naming the directory or file otherwise. A dataset found nowhere locally is reported as to
    be downloaded when downloading is allowed (the network itself is not tried here). A
    source's file or folder must exist.
    """
    if not isinstance(dataset, str):
        path = dataset.path
        if not path.exists():
            what = "file" if dataset.kind in ("csv", "npz") else "directory"
            raise DataError(f"{path}: no such {what} (data.dataset.{dataset.kind})")
        return DatasetLocation(dataset.label, path)
    name = dataset
    info = dataset_info(name)
    needs = _needs(info)
    explicit, origin = _explicit_dir(data_dir)
    # A directory named on the command line must exist even for the embedded dataset (it is a
    # typo either way); a stale $ARCHLAB_DATA_DIR does not stop the embedded one from loading.
    if explicit is not None and (data_dir is not None or not info.is_embedded):
        if not explicit.exists():
            holds = f" (it should hold {', '.join(needs)}{_plain_or_gz(info)})" if needs else ""
            raise DataError(f"{name}: {origin} {explicit} does not exist{holds}")
        if not explicit.is_dir():
            raise DataError(f"{name}: {origin} {explicit} is not a directory")
    if info.is_embedded:
        return DatasetLocation(name, None)

    if explicit is not None:
        missing = _missing(explicit, info)
        if missing:
            raise DataError(f"{name}: {origin} {explicit} lacks {', '.join(missing)}"
                            f"{_plain_or_gz(info, ' (each may be plain or .gz)')}")
        return _checked(info, explicit)

    cache = _cache_folder(info, cache_dir)
    for directory in (cache, *info.system_dirs):
        if not _missing(directory, info):
            return _checked(info, directory)
    urls = info.mirrors if mirrors is None else tuple(mirrors)
    if download and urls:
        return DatasetLocation(name, cache, download=True)
    raise _not_found(info, cache, download, [] if urls else ["no mirrors given"])


def load_dataset(
    dataset: DatasetRef,
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
) -> RawDataset:
    """Load ``dataset``: a built-in's name (looked for in the places listed in this module's
    docstring) or a user's source (:func:`archlab.data.sources.load_source`)."""
    if not isinstance(dataset, str):
        locate_dataset(dataset)
        return load_source(dataset)
    info = dataset_info(dataset)
    where = locate_dataset(dataset, data_dir, cache_dir=cache_dir, download=download,
                           mirrors=mirrors)
    if where.directory is None:
        return _load_embedded(info)
    if where.download:
        urls = info.mirrors if mirrors is None else tuple(mirrors)
        if info.archive is not None:
            failures = download_archive(where.directory, info.archive, urls)
        else:
            failures = download_missing(where.directory, info.files, urls)
        if failures:
            raise _not_found(info, where.directory, download, failures)
    if info.archive is not None:
        path = find_archive(where.directory, info.archive)
        if path is None:  # removed since it was located
            raise DataError(f"{info.name}: {where.directory} lacks {info.archive.name}")
        return _make(info, *read_archive(path, info), source=str(path.resolve()))
    return _load_dir(info, where.directory)


# -- resolution helpers -------------------------------------------------------------------------


def _plain_or_gz(info: DatasetInfo, text: str = ", each plain or .gz") -> str:
    return "" if info.archive is not None else text


def _cache_folder(info: DatasetInfo, cache_dir: str | Path | None) -> Path:
    folder = info.archive.folder if info.archive is not None else info.name
    return default_cache_dir(cache_dir) / folder


def _explicit_dir(data_dir: str | Path | None) -> tuple[Path | None, str]:
    if data_dir is not None:
        return Path(data_dir).expanduser(), "data directory"
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser(), f"${ENV_DATA_DIR}"
    return None, ""


def _missing(directory: Path, info: DatasetInfo) -> list[str]:
    if info.archive is not None:
        return [] if find_archive(directory, info.archive) else [info.archive.name]
    return [f.name for f in info.files if find_file(directory, f) is None]


def _checked(info: DatasetInfo, directory: Path) -> DatasetLocation:
    if info.archive is not None:  # its MD5 is checked when it is read
        return DatasetLocation(info.name, directory)
    for f in info.files:
        path = find_file(directory, f)
        assert path is not None  # callers check presence first
        check_file(path, f)
    return DatasetLocation(info.name, directory)


def _not_found(info: DatasetInfo, cache: Path, download: bool, failures: list[str]) -> DataError:
    places = [f"a directory given as data_dir or ${ENV_DATA_DIR}", str(cache)]
    places += [str(p) for p in info.system_dirs]
    what = (f"the archive {info.archive.name}" if info.archive is not None
            else f"{', '.join(f.name for f in info.files)} (plain or .gz)")
    msg = f"{info.name} not found: put {what} in one of: {'; '.join(places)}"
    if info.name == "fashion-mnist":
        msg += " (Debian: apt-get install dataset-fashion-mnist)"
    if not download:
        msg += "; downloading is disabled"
    elif failures:
        msg += "; download failed: " + "; ".join(failures)
    return DataError(" ".join(msg.split()))


# -- loading ------------------------------------------------------------------------------------


def _load_dir(info: DatasetInfo, directory: Path) -> RawDataset:
    arrays: list[np.ndarray] = []
    for f in info.files:
        path = find_file(directory, f)
        if path is None:  # removed since it was located
            raise DataError(f"{info.name}: {directory} lacks {f.name}")
        arrays.append(read_idx(path, f))
    x_train, y_train, x_test, y_test = arrays
    return _make(info, x_train[..., None], y_train, x_test[..., None], y_test,
                 str(directory.resolve()))


def _make(
    info: DatasetInfo,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    source: str,
) -> RawDataset:
    classes = info.class_names
    shape = info.image_shape
    for split, x, y, n in (("train", x_train, y_train, info.train_size),
                           ("test", x_test, y_test, info.test_size)):
        if x.dtype != np.uint8 or x.shape != (n, *shape) or y.shape != (n,):
            raise DataError(f"{info.name} ({source}): malformed {split} arrays: images "
                            f"{x.shape} {x.dtype}, labels {y.shape}, expected ({n}, "
                            f"{', '.join(map(str, shape))}) uint8 and ({n},)")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataError(f"{info.name} ({source}): {split} labels outside "
                            f"0..{len(classes) - 1}")
    return RawDataset(info, x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64),
                      source)


def _load_embedded(info: DatasetInfo) -> RawDataset:
    try:
        with np.load(sample_path(info.name)) as npz:
            arrays = [npz[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"the embedded {info.name} is missing or unreadable: {exc}") from exc
    x_train, y_train, x_test, y_test = arrays
    return _make(info, x_train[..., None], y_train, x_test[..., None], y_test,
                 source="embedded")
