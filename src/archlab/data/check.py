"""Checks a study's data section before anything is trained: the validation split leaves images
on both sides, and the dataset is where it will be loaded from (cheaply: no full read).

``archlab validate`` and ``archlab run`` call :func:`check_study_data` so that a missing or
damaged dataset, or an empty validation set, is one line and exit code 2 before any timing or
output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from archlab.data.loader import DatasetLocation, locate_dataset
from archlab.datasets import DatasetInfo, dataset_info
from archlab.errors import DataError, SpecError

if TYPE_CHECKING:  # the spec imports torch (via the layers); checking data does not need it
    from archlab.spec import DataSpec, Study

__all__ = ["IMBALANCE_RATIO", "ClassBalance", "check_data_memory", "check_study_data",
           "class_balance", "data_memory_bytes", "split_bounds", "validation_split_problem"]


def _record(dataset: str | DatasetInfo) -> DatasetInfo:
    return dataset_info(dataset) if isinstance(dataset, str) else dataset


def split_bounds(dataset: str | DatasetInfo) -> tuple[float, float]:
    """The open interval of validation fractions sure to leave images on both sides.

    The split is stratified: each class holds out ``round(fraction * class_size)`` images.
    Class sizes are known only after loading, but the largest class has at least
    ``train_size / num_classes`` images, so a fraction above ``num_classes / (2 * train_size)``
    holds out at least one image, and one below ``1 - that`` keeps at least one for training.
    """
    info = _record(dataset)
    edge = info.num_classes / (2 * max(1, info.train_size))
    return edge, 1 - edge


def validation_split_problem(dataset: str | DatasetInfo, fraction: float) -> str | None:
    """Why ``fraction`` would leave an empty validation or training set, or None if it cannot."""
    low, high = split_bounds(dataset)
    if low < fraction < high:
        return None
    info = _record(dataset)
    empty = "validation" if fraction <= low else "training"
    return (f"Expected a fraction above {low:.3g} and below {high:.6g}, received {fraction}: "
            f"it could leave the {empty} set empty ({info.name} has {info.train_size:,} "
            f"training images in {info.num_classes} classes, split per class)")


def check_study_data(
    study: Study,
    data_dir: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    download: bool = True,
) -> DatasetLocation:
    """Check ``study``'s validation split and locate its dataset; one-line errors otherwise.

    Raises :class:`SpecError` naming the file and ``data.validation.split`` for a split that
    could leave a side empty, and :class:`DataError` for a missing or damaged dataset (or a
    ``data_dir`` that does not exist). Reads no pixel: a user's source is listed (and its
    image headers read when it has no ``image_size``), a built-in's files only found.
    """
    spec = study.data
    # A source is found before its record is derived from it; a built-in's record is known.
    where = locate_dataset(spec.dataset, data_dir, cache_dir=cache_dir, download=download) \
        if spec.source is not None else None
    if not spec.validates_on_test:
        fraction = spec.validation.split  # type: ignore[union-attr]
        problem = validation_split_problem(spec.info, fraction)
        if problem:
            raise SpecError(f"{study.source}: field 'data.validation.split': {problem}")
    return where or locate_dataset(spec.dataset, data_dir, cache_dir=cache_dir,
                                   download=download)


@dataclass(frozen=True)
class ClassBalance:
    """Training images per class, as the record knows them (no pixel read)."""

    names: tuple[str, ...]
    counts: tuple[int, ...]

    @property
    def ratio(self) -> float:
        """Largest class over smallest (inf when a class has none)."""
        low = min(self.counts)
        return max(self.counts) / low if low else math.inf

    @property
    def imbalanced(self) -> bool:
        """The largest class holds over :data:`IMBALANCE_RATIO` times the smallest's images:
        accuracy then rewards the large classes, and per-class accuracy is worth reading."""
        return self.ratio > IMBALANCE_RATIO

    @property
    def largest(self) -> tuple[str, int]:
        i = max(range(len(self.counts)), key=self.counts.__getitem__)
        return self.names[i], self.counts[i]

    @property
    def smallest(self) -> tuple[str, int]:
        i = min(range(len(self.counts)), key=self.counts.__getitem__)
        return self.names[i], self.counts[i]


#: Largest-to-smallest class ratio above which ``validate`` flags a dataset as imbalanced.
IMBALANCE_RATIO = 1.5


def class_balance(info: DatasetInfo) -> ClassBalance | None:
    """The training split's class counts, when the record has them (a user's source), else
    None (a built-in's classes are known to be about even)."""
    if info.class_counts is None:
        return None
    return ClassBalance(info.class_names, info.class_counts)


def data_memory_bytes(info: DatasetInfo, spec: DataSpec) -> int:
    """Bytes the dataset takes in memory while a study trains on it: the loaded uint8 images
    plus the training and validation sets split out of them (a copy of the training images);
    Keras's ``normalize`` holds float32 images besides (4 bytes a value, both splits)."""
    train = info.train_size * math.prod(info.image_shape)
    total = info.uint8_bytes
    from archlab.spec import Normalize

    if isinstance(spec.preprocessing, Normalize):
        return total + 4 * total + (0 if spec.validates_on_test else 4 * train)
    return total + (0 if spec.validates_on_test else train)


def check_data_memory(study: Study, available: int) -> int:
    """Raise a one-line :class:`DataError` when the dataset alone cannot fit in ``available``
    bytes; return what is left for training."""
    from archlab.model import format_bytes

    info = study.data.info
    need = data_memory_bytes(info, study.data)
    if need > available:
        h, w, c = info.image_shape
        raise DataError(f"{study.source}: field 'data.dataset': Expected a dataset that fits in "
                        f"the {format_bytes(available)} of memory available, received "
                        f"{info.name}, which needs {format_bytes(need)} ({info.train_size:,} + "
                        f"{info.test_size:,} images of {h}x{w}x{c} as uint8, with its "
                        "training/validation split); use a smaller image_size or fewer images")
    return available - need
