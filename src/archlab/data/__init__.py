"""Data: the dataset files (found, verified, downloaded) and the tensors a run trains on."""

from archlab.data.loader import (
    DATASETS,
    DEFAULT_MIRRORS,
    SAMPLE_RESOURCE,
    SYSTEM_DIRS,
    DataFile,
    RawDataset,
    dataset_files,
    default_cache_dir,
    load_dataset,
)
from archlab.data.tensors import Tensors, prepare_tensors, stratified_split

__all__ = [
    "DATASETS",
    "DEFAULT_MIRRORS",
    "SAMPLE_RESOURCE",
    "SYSTEM_DIRS",
    "DataFile",
    "RawDataset",
    "Tensors",
    "dataset_files",
    "default_cache_dir",
    "load_dataset",
    "prepare_tensors",
    "stratified_split",
]
