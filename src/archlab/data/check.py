"""Checks a study's data section before anything is trained: the validation split leaves images
on both sides, and the dataset is where it will be loaded from (cheaply: no full read).

``archlab validate`` and ``archlab run`` call :func:`check_study_data` so that a missing or
damaged dataset, or an empty validation set, is one line and exit code 2 before any timing or
output.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from archlab.data.loader import DatasetLocation, locate_dataset
from archlab.datasets import dataset_info
from archlab.errors import SpecError

if TYPE_CHECKING:  # the spec imports torch (via the layers); checking data does not need it
    from archlab.spec import Study

__all__ = ["check_study_data", "split_bounds", "validation_split_problem"]


def split_bounds(dataset: str) -> tuple[float, float]:
    """The open interval of validation fractions sure to leave images on both sides.

    The split is stratified: each class holds out ``round(fraction * class_size)`` images.
    Class sizes are known only after loading, but the largest class has at least
    ``train_size / num_classes`` images, so a fraction above ``num_classes / (2 * train_size)``
    holds out at least one image, and one below ``1 - that`` keeps at least one for training.
    """
    info = dataset_info(dataset)
    edge = info.num_classes / (2 * info.train_size)
    return edge, 1 - edge


def validation_split_problem(dataset: str, fraction: float) -> str | None:
    """Why ``fraction`` would leave an empty validation or training set, or None if it cannot."""
    low, high = split_bounds(dataset)
    if low < fraction < high:
        return None
    info = dataset_info(dataset)
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
    ``data_dir`` that does not exist). Reads no image.
    """
    spec = study.data
    if not spec.validates_on_test:
        fraction = spec.validation.split  # type: ignore[union-attr]
        problem = validation_split_problem(spec.dataset, fraction)
        if problem:
            raise SpecError(f"{study.source}: field 'data.validation.split': {problem}")
    return locate_dataset(spec.dataset, data_dir, cache_dir=cache_dir, download=download)
