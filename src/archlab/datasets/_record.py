"""The record of one dataset: what the model sees, what the files are and where they come from.

A built-in dataset's record is written out in :mod:`archlab.datasets._builtin`; a user's source
(a folder, a CSV list, an ``.npz``, an IDX directory) gets a record derived from its files by
:mod:`archlab.datasets.scan`. Everything downstream (model builder, loader, projection, report)
reads the record, never the source.

Standard library only: the schema and the CLI read records without paying for numpy or torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["IDX_MAGIC", "Archive", "DataFile", "DatasetInfo", "Format"]

#: IDX magic numbers of the two file kinds (unsigned bytes; 3 dimensions or 1).
IDX_MAGIC: dict[str, int] = {"images": 2051, "labels": 2049}

#: How a dataset's pixels are stored: MNIST's IDX files; the CIFAR binary versions (records of
#: label byte(s) + 3,072 pixel bytes in a tar.gz); EMNIST's zip of gzip'd IDX files; an .npz
#: inside the package; or one of the user's sources.
Format = Literal["idx", "cifar", "emnist", "embedded", "folder", "csv", "npz", "user-idx"]


@dataclass(frozen=True)
class DataFile:
    """One file (or archive member): its canonical name, checksum and array shape.

    ``kind`` "images"/"labels" are IDX files; "records" are CIFAR's fixed-size binary records
    (``shape`` = (N, bytes per record)). ``sha256`` is of the decompressed content, so any
    mirror's gzip (or a plain file) matches; where only the served .gz file's published MD5 is
    known (KMNIST), ``md5`` holds that instead. Archive members carry neither: the archive's
    own checksum covers them.
    """

    name: str
    sha256: str | None
    kind: Literal["images", "labels", "records"]
    shape: tuple[int, ...]  # (N, H, W) for images, (N,) for labels, (N, record bytes)
    md5: str | None = None  # of the .gz file as the mirrors serve it

    @property
    def count(self) -> int:
        """Number of items (images, labels or records)."""
        return self.shape[0]

    @property
    def gz_name(self) -> str:
        """The name of the gzip'd file the mirrors serve."""
        return self.name + ".gz"

    @property
    def header_size(self) -> int:
        """Bytes of the IDX header: the magic number, then one 4-byte size per dimension
        (CIFAR records have none)."""
        return 0 if self.kind == "records" else 4 + 4 * len(self.shape)

    @property
    def size(self) -> int:
        """Exact size of the decompressed file in bytes (header, then one byte per value).

        Known before reading, so a reader can stop at this many bytes: a gzip bomb in a data
        directory is refused after at most this much decompression, not after all of it.
        """
        return self.header_size + math.prod(self.shape)


@dataclass(frozen=True)
class Archive:
    """A dataset served as one archive (CIFAR's tar.gz, EMNIST's zip) with its published MD5.

    ``max_bytes`` bounds a download (the archive's size with some room); ``files`` in the
    record are its members, read straight out of it (nothing is extracted to disk)."""

    name: str  # the file name on the mirrors and in a data directory or the cache
    md5: str
    max_bytes: int
    folder: str  # its folder in the user cache (records sharing an archive share it)


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset: what the model sees, what the files are and where to find them."""

    name: str
    image_shape: tuple[int, int, int]  # (H, W, C), Keras's channels-last order
    class_names: tuple[str, ...]
    train_size: int
    test_size: int
    format: Format = "idx"
    files: tuple[DataFile, ...] = ()  # train images, train labels, test images, test labels
    archive: Archive | None = None  # the files are members of this archive
    mirrors: tuple[str, ...] = ()  # base URLs serving `<file>.gz` (or the archive), in order
    system_dirs: tuple[Path, ...] = ()  # where a system package may have installed the files
    embedded: tuple[str, ...] | None = None  # a .npz inside the package, instead of files
    description: str = ""
    #: Format details: which byte of a CIFAR record is the label; EMNIST's images are stored
    #: transposed and its letters are numbered from 1.
    label_byte: int = 0
    transpose: bool = False
    label_offset: int = 0
    #: Derived records only: where the user's data is, and a hash of its content and options
    #: (part of the identity of every run trained on it).
    source: str | None = None
    fingerprint: str | None = None
    #: Images per class in the training split, where known without reading pixels.
    class_counts: tuple[int, ...] | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def channels(self) -> int:
        """Colour channels: 1 grey, 3 RGB, 4 RGBA."""
        return self.image_shape[2]

    @property
    def is_embedded(self) -> bool:
        """True for a dataset shipped inside the package (no files, no download)."""
        return self.embedded is not None

    @property
    def is_builtin(self) -> bool:
        """True for a record of the registry (its name pins its files' checksums)."""
        return self.source is None

    @property
    def uint8_bytes(self) -> int:
        """Bytes of every image of the dataset held as uint8, as archlab holds them."""
        h, w, c = self.image_shape
        return (self.train_size + self.test_size) * h * w * c
