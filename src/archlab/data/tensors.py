"""A dataset ready for training: preprocessing (Keras's scale or ``utils.normalize``) and the
seeded, stratified validation split, as float32 NCHW tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from archlab.data.loader import RawDataset
from archlab.errors import DataError
from archlab.spec import DataSpec, Normalize

__all__ = ["Tensors", "prepare_tensors", "preprocess", "stratified_split"]


@dataclass
class Tensors:
    """A dataset ready for training: float32 NCHW images, int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]
    validation_is_test: bool

    def to(self, device: torch.device | str) -> Tensors:
        """The same data on ``device`` (MNIST is ~200 MB as float32: it fits on any GPU)."""
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                 for k, v in self.__dict__.items()}
        return Tensors(**moved)


def preprocess(x: np.ndarray, spec: DataSpec) -> torch.Tensor:
    """uint8 images (N, H, W) as float32 (N, 1, H, W), scaled or normalized as ``spec`` asks."""
    if isinstance(spec.preprocessing, Normalize):
        # keras.utils.normalize(x, axis, order) on the raw (N, H, W) array, as notebook 004 did.
        # On uint8 it computes in float64 (np.linalg.norm's dtype); Keras then feeds float32.
        args = spec.preprocessing.normalize
        x64 = x.astype(np.float64)
        norm = np.atleast_1d(np.linalg.norm(x64, args.order, args.axis))
        norm[norm == 0] = 1
        xf = (x64 / np.expand_dims(norm, args.axis)).astype(np.float32)
    else:
        xf = x.astype(np.float32)
        xf /= 255.0
    return torch.from_numpy(np.ascontiguousarray(xf)).unsqueeze(1)  # (N, 1, H, W)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """Indices (train, val): `fraction` of each class held out, chosen with `seed`."""
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        val.append(idx[: int(round(fraction * len(idx)))])
    val_idx = np.sort(np.concatenate(val))
    mask = np.ones(len(labels), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def prepare_tensors(raw: RawDataset, spec: DataSpec, split_seed: int) -> Tensors:
    """Preprocess a RawDataset and carve out the validation set the spec asks for.

    Raises a one-line :class:`DataError` if the split leaves the validation or training set
    empty.
    """
    x_train, x_test = preprocess(raw.x_train, spec), preprocess(raw.x_test, spec)
    y_train = torch.from_numpy(raw.y_train.astype(np.int64))
    y_test = torch.from_numpy(raw.y_test.astype(np.int64))
    if spec.validates_on_test:
        x_val, y_val = x_test, y_test
    else:
        fraction = spec.validation.split  # type: ignore[union-attr]
        tr, va = stratified_split(raw.y_train, fraction, split_seed)
        if len(va) == 0 or len(tr) == 0:
            # validate refuses such fractions from the record's sizes; this catches the rest
            # (a dataset whose classes are smaller than its record suggests).
            empty = "validation" if len(va) == 0 else "training"
            raise DataError(f"{raw.name}: validation split {fraction} leaves the {empty} set "
                            f"empty ({len(raw.y_train):,} training images in "
                            f"{len(raw.class_names)} classes, split per class); change "
                            "data.validation.split")
        x_val, y_val = x_train[va], y_train[va]
        x_train, y_train = x_train[tr], y_train[tr]
    return Tensors(x_train, y_train, x_val, y_val, x_test, y_test, tuple(raw.class_names),
                   spec.validates_on_test)
