"""The user's own data, loaded: a folder or CSV list of images (decoded through the verified
cache of :mod:`archlab.data.images`), an ``.npz`` of Keras's ``load_data`` arrays, or a
directory of IDX files. Each becomes a :class:`~archlab.data.loader.RawDataset` whose record
carries the data's fingerprint: a hash of the pixels, labels, file names and the source's
options, which every run on it records in its identity (a changed folder retrains).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from archlab.data.idx import parse_idx, read_verified
from archlab.data.images import decode_listing, sha256_of
from archlab.data.raw import RawDataset
from archlab.datasets import CsvSource, DataFile, DatasetInfo, FolderSource, IdxSource, NpzSource
from archlab.datasets.arrays import find_idx_files, idx_header
from archlab.datasets.listing import Listing, listing_of, stratified_split
from archlab.datasets.scan import derive_record
from archlab.errors import DataError

__all__ = ["load_source"]


def _fingerprint(content: str, source: object) -> str:
    options = source.options()  # type: ignore[attr-defined]
    blob = json.dumps({"content": content, "options": options}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _ordered(listing: Listing) -> tuple[Listing, int]:
    """``listing`` with its training images first, then its test images, and how many train:
    decoded in this order, the two splits are views of one array (no copy)."""
    if listing.has_test:
        train = [e for e in listing.entries if e.split == "train"]
        test = [e for e in listing.entries if e.split == "test"]
    else:
        labels = np.array(listing.labels(), dtype=np.int64)
        keep, held = stratified_split(labels, listing.test_split or 0.0, listing.source.seed)
        train = [listing.entries[i] for i in keep]
        test = [listing.entries[i] for i in held]
    if not train or not test:
        empty = "test" if not test else "training"
        raise DataError(f"{listing.source.path}: the {empty} set is empty "
                        f"({len(listing.entries):,} images in {len(listing.class_names)} "
                        "classes); add images or change data.dataset.test_split")
    return dataclasses.replace(listing, entries=tuple(train + test)), len(train)


def _load_images(source: FolderSource | CsvSource) -> RawDataset:
    listing, n_train = _ordered(listing_of(source))
    decoded = decode_listing(listing)  # the images' common size is read only if not cached
    images, labels = decoded.images, decoded.labels
    is_train = np.array([e.split == "train" or (e.split is None and i < n_train)
                         for i, e in enumerate(listing.entries)])
    if decoded.skipped:  # the kept images, in the same order: find the split again
        kept = {e.path for e in decoded.entries}
        is_train = np.array([t for e, t in zip(listing.entries, is_train, strict=True)
                             if e.path in kept])
    n = int(is_train.sum())
    if is_train[:n].all():
        x_train, y_train, x_test, y_test = images[:n], labels[:n], images[n:], labels[n:]
    else:
        x_train, y_train = images[is_train], labels[is_train]
        x_test, y_test = images[~is_train], labels[~is_train]
    if not len(x_test) or not len(x_train):
        raise DataError(f"{source.path}: no readable image left in the "
                        f"{'test' if not len(x_test) else 'training'} set")
    k = len(listing.class_names)
    info = DatasetInfo(
        name=source.label, image_shape=tuple(images.shape[1:]),  # type: ignore[arg-type]
        class_names=listing.class_names, train_size=len(x_train), test_size=len(x_test),
        format=source.kind,  # type: ignore[arg-type]
        description=f"{len(images):,} images in {k} classes from {source.path}",
        source=str(source.path), fingerprint=_fingerprint(decoded.sha256, source),
        class_counts=tuple(int(c) for c in np.bincount(y_train, minlength=k)))
    return RawDataset(info, x_train, y_train, x_test, y_test, str(source.path),
                      skipped=decoded.skipped, from_cache=decoded.from_cache)


def _checked_arrays(where: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                    y_test: np.ndarray, classes: int) -> tuple[np.ndarray, ...]:
    out = []
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.dtype != np.uint8:
            raise DataError(f"{where}: x_{split} has dtype {x.dtype}; expected uint8 images "
                            "(0-255)")
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[3] not in (1, 3, 4):
            raise DataError(f"{where}: x_{split} has shape {x.shape}; expected (N, H, W) or "
                            "(N, H, W, C) with C = 1, 3 or 4")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if len(x) != len(y):
            raise DataError(f"{where}: x_{split} holds {len(x):,} images but y_{split} "
                            f"{len(y):,} labels")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
            raise DataError(f"{where}: y_{split} holds labels outside 0..{classes - 1} "
                            f"(found {int(y.min())}..{int(y.max())})")
        out += [x, y.astype(np.int64)]
    if out[0].shape[1:] != out[2].shape[1:]:
        raise DataError(f"{where}: x_train images are {out[0].shape[1:]} but x_test images "
                        f"{out[2].shape[1:]}")
    return tuple(out)


def _finish(source: NpzSource | IdxSource, record: DatasetInfo, arrays: tuple[np.ndarray, ...]
            ) -> RawDataset:
    x_train, y_train, x_test, y_test = arrays
    content = hashlib.sha256((sha256_of(x_train, y_train, x_test, y_test) + json.dumps(
        list(record.class_names))).encode()).hexdigest()
    info = dataclasses.replace(record, image_shape=tuple(x_train.shape[1:]),
                               train_size=len(x_train), test_size=len(x_test),
                               fingerprint=_fingerprint(content, source))
    return RawDataset(info, x_train, y_train, x_test, y_test, str(source.path))


def _load_npz(source: NpzSource) -> RawDataset:
    record = derive_record(source)  # headers, labels and class names checked
    try:
        with np.load(source.path, allow_pickle=False) as npz:
            raw = [npz[name] for name in ("x_train", "y_train", "x_test", "y_test")]
    except (OSError, ValueError) as exc:
        raise DataError(f"{source.path}: not a readable .npz "
                        f"({' '.join(str(exc).split())})") from None
    return _finish(source, record, _checked_arrays(str(source.path), *raw,
                                                   classes=record.num_classes))


def _load_idx(source: IdxSource) -> RawDataset:
    record = derive_record(source)
    arrays = []
    for path in find_idx_files(source.path):
        kind, dims = idx_header(path)
        f = DataFile(path.name.removesuffix(".gz"), None, kind, dims)  # type: ignore[arg-type]
        arrays.append(parse_idx(read_verified(path, f), path, f))
    x_train, y_train, x_test, y_test = arrays
    if source.transpose:
        x_train, x_test = x_train.transpose(0, 2, 1), x_test.transpose(0, 2, 1)
    return _finish(source, record, _checked_arrays(
        str(source.path), np.ascontiguousarray(x_train), y_train, np.ascontiguousarray(x_test),
        y_test, classes=record.num_classes))


def load_source(source: FolderSource | CsvSource | NpzSource | IdxSource) -> RawDataset:
    """Load a user's source (see the module doc); one-line :class:`DataError` otherwise."""
    if isinstance(source, FolderSource | CsvSource):
        return _load_images(source)
    if isinstance(source, NpzSource):
        return _load_npz(source)
    return _load_idx(source)
