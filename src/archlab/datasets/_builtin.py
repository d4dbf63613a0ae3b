"""Every fact about a dataset, in one record per dataset.

The loader (files, checksums, mirrors, system directories), the model builder (input shape,
class count), the projection (split sizes) and the study schema (the accepted dataset names) all
read :data:`DATASETS`; adding a dataset means adding one :class:`DatasetInfo` here.

This module imports nothing beyond the standard library, so the schema and the CLI can read it
without paying for numpy or torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from archlab.errors import DataError

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "DataFile",
    "DatasetInfo",
    "dataset_info",
]

#: IDX magic numbers of the two file kinds (unsigned bytes; 3 dimensions or 1).
IDX_MAGIC: dict[str, int] = {"images": 2051, "labels": 2049}


@dataclass(frozen=True)
class DataFile:
    """One IDX file as its canonical name (decompressed), content SHA-256 and array shape."""

    name: str
    sha256: str  # of the decompressed content, so any mirror's gzip (or a plain file) matches
    kind: Literal["images", "labels"]
    shape: tuple[int, ...]  # (N, H, W) for images, (N,) for labels

    @property
    def count(self) -> int:
        """Number of items (images or labels)."""
        return self.shape[0]

    @property
    def gz_name(self) -> str:
        """The name of the gzip'd file the mirrors serve."""
        return self.name + ".gz"

    @property
    def header_size(self) -> int:
        """Bytes of the IDX header: the magic number, then one 4-byte size per dimension."""
        return 4 + 4 * len(self.shape)

    @property
    def size(self) -> int:
        """Exact size of the decompressed file in bytes (header, then one byte per value).

        Known before reading, so a reader can stop at this many bytes: a gzip bomb in a data
        directory is refused after at most this much decompression, not after all of it.
        """
        return self.header_size + math.prod(self.shape)


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset: what the model sees, what the files are and where to find them."""

    name: str
    image_shape: tuple[int, int, int]  # (H, W, C), Keras's channels-last order
    class_names: tuple[str, ...]
    train_size: int
    test_size: int
    files: tuple[DataFile, ...] = ()  # train images, train labels, test images, test labels
    mirrors: tuple[str, ...] = ()  # base URLs serving `<file>.gz`, tried in order
    system_dirs: tuple[Path, ...] = ()  # where a system package may have installed the files
    embedded: tuple[str, ...] | None = None  # a .npz inside the package, instead of files
    description: str = ""

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def is_embedded(self) -> bool:
        """True for a dataset shipped inside the package (no files, no download)."""
        return self.embedded is not None


def _idx_files(
    shas: tuple[str, str, str, str], train: int, test: int, h: int, w: int
) -> tuple[DataFile, ...]:
    """The four files of an MNIST-format dataset, in the order the loader returns them."""
    return (
        DataFile("train-images-idx3-ubyte", shas[0], "images", (train, h, w)),
        DataFile("train-labels-idx1-ubyte", shas[1], "labels", (train,)),
        DataFile("t10k-images-idx3-ubyte", shas[2], "images", (test, h, w)),
        DataFile("t10k-labels-idx1-ubyte", shas[3], "labels", (test,)),
    )


_DIGITS = tuple(str(d) for d in range(10))

_MNIST = DatasetInfo(
    name="mnist",
    image_shape=(28, 28, 1),
    class_names=_DIGITS,
    train_size=60000,
    test_size=10000,
    # Decompressed MD5s match those published for the original files (see the shared README).
    files=_idx_files(
        (
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
        60000, 10000, 28, 28,
    ),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    system_dirs=(Path("/usr/share/datasets/mnist"),),
    description="MNIST handwritten digits",
)

_FASHION = DatasetInfo(
    name="fashion-mnist",
    image_shape=(28, 28, 1),
    class_names=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    train_size=60000,
    test_size=10000,
    # Decompressed MD5s: f4a8712d7a061bf5bd6d2ca38dc4d50a, 9018921c3c673c538a1fc5bad174d6f9,
    # 8181f5470baa50b63fa0f6fddb340f0a, 15d484375f8d13e6eb1aabb0c3f46965 (the content of the
    # published .gz files whose MD5s are 8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...).
    files=_idx_files(
        (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
        60000, 10000, 28, 28,
    ),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    # Debian's `dataset-fashion-mnist` package installs the four .gz files here.
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    description="Zalando's Fashion-MNIST clothing images",
)

_SAMPLE = DatasetInfo(
    name="mnist-sample",
    image_shape=(28, 28, 1),
    class_names=_DIGITS,
    train_size=5000,
    test_size=1000,
    embedded=("data", "mnist_sample.npz"),  # see src/archlab/data/README.md
    description="5,000 training and 1,000 test images of MNIST, shipped inside the package",
)

#: The registry: every dataset a study may name, by name.
DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (_MNIST, _FASHION, _SAMPLE)}

#: The accepted names in registry order (the study schema's `dataset` choices).
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """The record of dataset ``name``; a one-line :class:`DataError` naming the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
