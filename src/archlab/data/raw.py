"""A dataset as loaded: uint8 images (N, H, W, C) and int64 labels, with its record."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from archlab.datasets import DatasetInfo

__all__ = ["RawDataset"]


@dataclass(frozen=True, eq=False)
class RawDataset:
    """A dataset as loaded: uint8 images (N, H, W, C) and int64 labels (N,), with its record
    (a user source's carries the data's fingerprint)."""

    info: DatasetInfo
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # the directory or file it was loaded from, or "embedded"
    skipped: tuple[str, ...] = ()  # unreadable images left out ("path: reason")
    from_cache: bool = False  # decoded images read back from the verified cache

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.info.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def fingerprint(self) -> str | None:
        """A user source's content hash (None for a built-in: its name pins its files)."""
        return self.info.fingerprint

    @property
    def nbytes(self) -> int:
        """Bytes the images and labels take in memory."""
        return sum(a.nbytes for a in (self.x_train, self.y_train, self.x_test, self.y_test))
