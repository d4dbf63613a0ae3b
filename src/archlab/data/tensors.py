"""A dataset ready for training: the seeded, stratified validation split, and the preprocessing
that turns each batch of uint8 images into the model's float input on the training device.

Images stay uint8, (N, H, W, C), in memory and on the device: a quarter of float32's size, and
a GPU receives them as uint8. :class:`Preprocess` converts one batch at a time:

- ``scale``: x / 255 (Keras's ``Rescaling(1/255)``);
- ``standardize``: (x - mean) / std per channel, mean and std of the training split only
  (Keras's ``Normalization`` adapted to it);
- ``normalize``: Keras's ``utils.normalize(x, axis, order)`` divides each image by norms taken
  along an axis of the whole array, so it is computed once, as Keras computes it, and such a
  dataset is held as float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from archlab.data.loader import RawDataset
from archlab.datasets.listing import stratified_split
from archlab.errors import DataError
from archlab.spec import DataSpec, Normalize

__all__ = ["Preprocess", "Tensors", "channel_stats", "prepare_tensors", "preprocess",
           "stratified_split"]


@dataclass(frozen=True)
class Preprocess:
    """Model input from a batch of images: (B, H, W, C) uint8 (or already-float images) to
    float32 (B, C, H, W). Picklable: it travels with the data to ``--jobs`` and Ray workers."""

    kind: Literal["scale", "standardize", "float"]
    mean: tuple[float, ...] = ()  # per channel, 0-255 units (standardize)
    std: tuple[float, ...] = ()
    _consts: dict[Any, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, compare=False, repr=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)  # NHWC storage, NCHW input: a view (for C = 1, contiguous)
        if self.kind == "float":
            return x
        xf = x.float()
        if self.kind == "scale":
            return xf.div_(255.0)  # the same float32 values as numpy's x / 255.0
        mean, std = self._on(xf.device)
        return xf.sub_(mean).div_(std)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._consts:
            shape = (1, len(self.mean), 1, 1)
            self._consts[device] = (
                torch.tensor(self.mean, dtype=torch.float32, device=device).view(shape),
                torch.tensor(self.std, dtype=torch.float32, device=device).view(shape))
        return self._consts[device]

    def __getstate__(self) -> dict[str, Any]:
        return {"kind": self.kind, "mean": self.mean, "std": self.std}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in {**state, "_consts": {}}.items():
            object.__setattr__(self, key, value)

    def to_json(self) -> dict[str, Any]:
        """What export metadata records: the kind and, for standardize, mean and std."""
        if self.kind == "standardize":
            return {"standardize": {"mean": list(self.mean), "std": list(self.std)}}
        return {"kind": self.kind}


@dataclass
class Tensors:
    """A dataset ready for training: images (N, H, W, C) uint8 (float32 for ``normalize``),
    int64 labels, and the :class:`Preprocess` that makes a batch the model's input."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]
    validation_is_test: bool
    pre: Preprocess = field(default_factory=lambda: Preprocess("scale"))

    def to(self, device: torch.device | str) -> Tensors:
        """The same data on ``device`` (as uint8: MNIST is 47 MB, CIFAR-10 184 MB)."""
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                 for k, v in self.__dict__.items()}
        return Tensors(**moved)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]


def _normalized(x: np.ndarray, spec: Normalize) -> np.ndarray:
    """keras.utils.normalize(x, axis, order) of (N, H, W, C) images, each channel on its own.

    The axis counts the (images, height, width) array, as for MNIST (notebook 004): on uint8
    it computes in float64 (np.linalg.norm's dtype); Keras then feeds float32."""
    args = spec.normalize
    axis = args.axis % 3  # -1 is width, -2 height, -3 the images
    x64 = x.astype(np.float64)
    norm = np.atleast_1d(np.linalg.norm(x64, args.order, axis))
    norm[norm == 0] = 1
    return (x64 / np.expand_dims(norm, axis)).astype(np.float32)


def channel_stats(x: np.ndarray, rows: np.ndarray | None = None
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (population) of (N, H, W, C) uint8 images (of
    ``rows`` only, when given), in float64, a chunk at a time (no copy of the whole array); a
    constant channel's std is taken as 1."""
    c = x.shape[-1]
    total = np.zeros(c)
    squares = np.zeros(c)
    count = 0
    n = len(x) if rows is None else len(rows)
    for i in range(0, n, 4096):
        part = x[i:i + 4096] if rows is None else x[rows[i:i + 4096]]
        chunk = part.reshape(-1, c).astype(np.float64)
        total += chunk.sum(0)
        squares += np.square(chunk).sum(0)
        count += len(chunk)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean ** 2, 0.0))
    std[std < 1e-6] = 1.0
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def preprocess(x: np.ndarray, spec: DataSpec | str | Normalize | Mapping[str, Any],
               stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, H, W, C) as the model's float32 (N, C, H, W) input, as
    ``spec`` (a study's data section, or its ``preprocessing`` value) preprocesses them
    (``stats``: the training split's mean and std, for standardize)."""
    if x.ndim == 3:
        x = x[..., None]
    how = spec.preprocessing if isinstance(spec, DataSpec) else spec
    if isinstance(how, Mapping):
        how = Normalize.model_validate(how)
    if isinstance(how, Normalize):
        return torch.from_numpy(np.ascontiguousarray(_normalized(x, how))).permute(0, 3, 1, 2)
    if how == "standardize":
        if stats is None:
            raise ValueError("standardize needs the training split's mean and std")
        pre = Preprocess("standardize", *stats)
    else:
        pre = Preprocess("scale")
    return pre(torch.from_numpy(np.ascontiguousarray(x)))


def prepare_tensors(raw: RawDataset, spec: DataSpec, split_seed: int) -> Tensors:
    """Carve out the validation set the spec asks for and attach its preprocessing.

    Raises a one-line :class:`DataError` if the split leaves the validation or training set
    empty.
    """
    normalize = isinstance(spec.preprocessing, Normalize)
    if normalize:  # per-array norms: computed once, on each split's whole array, as Keras does
        x_train = torch.from_numpy(_normalized(raw.x_train, spec.preprocessing))
        x_test = torch.from_numpy(_normalized(raw.x_test, spec.preprocessing))
    else:
        x_train, x_test = torch.from_numpy(raw.x_train), torch.from_numpy(raw.x_test)
    y_train = torch.from_numpy(raw.y_train.astype(np.int64))
    y_test = torch.from_numpy(raw.y_test.astype(np.int64))
    train_rows: np.ndarray | None = None
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
        train_rows = tr
    if normalize:
        pre = Preprocess("float")
    elif spec.preprocessing == "standardize":
        pre = Preprocess("standardize", *channel_stats(raw.x_train, train_rows))
    else:
        pre = Preprocess("scale")
    return Tensors(x_train, y_train, x_val, y_val, x_test, y_test, tuple(raw.class_names),
                   spec.validates_on_test, pre)
