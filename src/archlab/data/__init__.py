"""Data: the dataset files (found, checked, verified, downloaded) and the tensors a run trains on.

The facts about each dataset (shapes, classes, sizes, files, checksums, mirrors) live in
:mod:`archlab.datasets`; this package acts on them.
"""

from typing import TYPE_CHECKING, Any

from archlab.data.check import check_study_data, split_bounds, validation_split_problem
from archlab.data.idx import check_file, parse_idx, read_idx, read_verified
from archlab.data.loader import (
    ENV_CACHE_DIR,
    ENV_DATA_DIR,
    DatasetLocation,
    RawDataset,
    default_cache_dir,
    load_dataset,
    locate_dataset,
    sample_path,
)

if TYPE_CHECKING:
    from archlab.data.tensors import Tensors, prepare_tensors, preprocess, stratified_split

#: Imported on first use: the tensors need torch, finding and reading files does not.
_TENSORS = ("Tensors", "prepare_tensors", "preprocess", "stratified_split")


def __getattr__(name: str) -> Any:
    if name in _TENSORS:
        from archlab.data import tensors

        return getattr(tensors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ENV_CACHE_DIR",
    "ENV_DATA_DIR",
    "DatasetLocation",
    "RawDataset",
    "Tensors",
    "check_file",
    "check_study_data",
    "default_cache_dir",
    "load_dataset",
    "locate_dataset",
    "parse_idx",
    "prepare_tensors",
    "preprocess",
    "read_idx",
    "read_verified",
    "sample_path",
    "split_bounds",
    "stratified_split",
    "validation_split_problem",
]
