"""A user's source as a record (:class:`~archlab.datasets.DatasetInfo`): shape, classes, split
sizes and class counts, derived from its listing (:mod:`archlab.datasets.listing`) or its
arrays' headers and labels (:mod:`archlab.datasets.arrays`), without decoding an image. What
``validate`` and the model builder need."""

from __future__ import annotations

from collections import Counter

from archlab.datasets._record import DatasetInfo
from archlab.datasets.arrays import (
    find_idx_files,
    idx_header,
    labels_classes,
    npz_labels,
    npz_members,
    read_idx_labels,
)
from archlab.datasets.listing import Listing, common_size, listing_of, split_counts
from archlab.datasets.sources import IdxSource, ImageOptions, NpzSource, Source
from archlab.errors import DataError

__all__ = ["derive_record"]


def _listing_record(listing: Listing) -> DatasetInfo:
    source = listing.source
    h, w = source.image_size if source.image_size is not None else common_size(listing)
    k = len(listing.class_names)
    if listing.has_test:
        train_counts = Counter(listing.labels("train"))
        train = [train_counts.get(c, 0) for c in range(k)]
        test_size = len(listing.entries) - sum(train)
    else:
        train, test = split_counts(listing.labels(), k, listing.test_split or 0.0)
        test_size = sum(test)
    return DatasetInfo(
        name=source.label, image_shape=(int(h), int(w), source.channels),
        class_names=listing.class_names, train_size=sum(train), test_size=test_size,
        format=source.kind,  # type: ignore[arg-type]
        description=f"{len(listing.entries):,} images in {k} classes from {source.path}",
        source=str(source.path), class_counts=tuple(train))


def _npz_record(source: NpzSource) -> DatasetInfo:
    import numpy as np

    path = source.path
    members = npz_members(path)
    ys, stored = npz_labels(path)
    shape = members["x_train"][0]
    if len(shape) == 3:
        shape = (*shape, 1)
    if len(shape) != 4 or shape[3] not in (1, 3, 4):
        raise DataError(f"{path}: array 'x_train' has shape {members['x_train'][0]}; expected "
                        "(N, H, W) or (N, H, W, C) with C = 1, 3 or 4")
    classes = labels_classes(ys, source.class_names, stored, path)
    counts = np.bincount(ys[0], minlength=len(classes))
    return DatasetInfo(
        name=source.label, image_shape=(shape[1], shape[2], shape[3]), class_names=classes,
        train_size=len(ys[0]), test_size=len(ys[1]), format="npz",
        description=f"arrays of {path}", source=str(path),
        class_counts=tuple(int(c) for c in counts))


def _idx_record(source: IdxSource) -> DatasetInfo:
    import numpy as np

    files = find_idx_files(source.path)
    heads = [idx_header(f) for f in files]
    for f, (kind, dims), want in zip(files, heads, ("images", "labels") * 2, strict=True):
        if kind != want or len(dims) != (3 if want == "images" else 1):
            raise DataError(f"{f}: an IDX {kind} file of {len(dims)} dimensions; expected "
                            f"{want} ({'N, H, W' if want == 'images' else 'N'})")
    for i in (0, 2):
        if heads[i][1][0] != heads[i + 1][1][0]:
            raise DataError(f"{files[i]}: {heads[i][1][0]:,} images but {files[i + 1].name} "
                            f"has {heads[i + 1][1][0]:,} labels")
    ys = [read_idx_labels(files[i], heads[i][1][0]) for i in (1, 3)]
    classes = labels_classes(ys, source.class_names, None, source.path)
    _, h, w = heads[0][1]
    if source.transpose:
        h, w = w, h
    counts = np.bincount(ys[0], minlength=len(classes))
    return DatasetInfo(
        name=source.label, image_shape=(h, w, 1), class_names=classes,
        train_size=heads[0][1][0], test_size=heads[2][1][0], format="user-idx",
        description=f"IDX files of {source.path}", source=str(source.path),
        class_counts=tuple(int(c) for c in counts))


def derive_record(source: Source) -> DatasetInfo:
    """The record of a user's source: shape, classes, split sizes, class counts."""
    if isinstance(source, ImageOptions):
        return _listing_record(listing_of(source))  # type: ignore[arg-type]
    if isinstance(source, NpzSource):
        return _npz_record(source)
    return _idx_record(source)
