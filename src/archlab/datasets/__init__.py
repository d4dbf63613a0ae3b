"""Datasets: one record per dataset, built in or derived from the user's own source.

A study names its data as a built-in (``mnist``, ``cifar10``, ...: :data:`DATASETS`) or as a
source (:mod:`archlab.datasets.sources`: a folder, a CSV list, an ``.npz``, an IDX directory).
Either way everything downstream reads one :class:`DatasetInfo`: :func:`record_of` gives it.
"""

from __future__ import annotations

from archlab.datasets._builtin import DATASET_NAMES, DATASETS, dataset_info
from archlab.datasets._record import IDX_MAGIC, Archive, DataFile, DatasetInfo, Format
from archlab.datasets.sources import (
    SOURCE_KEYS,
    CsvSource,
    FolderSource,
    IdxSource,
    ImageOptions,
    NpzSource,
    Source,
)

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "IDX_MAGIC",
    "SOURCE_KEYS",
    "Archive",
    "CsvSource",
    "DataFile",
    "DatasetInfo",
    "FolderSource",
    "Format",
    "IdxSource",
    "ImageOptions",
    "NpzSource",
    "Source",
    "dataset_info",
    "record_of",
]


def record_of(dataset: str | Source) -> DatasetInfo:
    """The record of a built-in name, or the record derived from a source's files (cheap: no
    pixel is decoded; see :func:`archlab.datasets.scan.derive_record`)."""
    if isinstance(dataset, str):
        return dataset_info(dataset)
    from archlab.datasets.scan import derive_record

    return derive_record(dataset)
