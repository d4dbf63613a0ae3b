"""Classify image files with a trained model: the top classes and their probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from archlab.inference.images import load_images
from archlab.inference.load import TrainedModel

__all__ = ["BATCH", "ClassScore", "Prediction", "predict_images"]

#: Images per forward pass (bounds memory on a long list of files).
BATCH = 256


@dataclass(frozen=True)
class ClassScore:
    """One class and its probability."""

    index: int
    name: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    """The top classes of one image, most probable first."""

    image: str
    top: tuple[ClassScore, ...]

    @property
    def label(self) -> str:
        """The most probable class's name."""
        return self.top[0].name

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "label": self.label,
                "top": [{"class": s.name, "index": s.index, "probability": s.probability}
                        for s in self.top]}


@torch.no_grad()
def predict_images(model: TrainedModel, paths: Sequence[str | Path], *,
                   top: int = 3) -> list[Prediction]:
    """Read each image (any size, either polarity), prepare it as the model's study prepared
    its data (see :func:`archlab.preprocess_images`) and return its ``top`` classes.

    Every file is read before anything runs: an unreadable one raises
    :class:`~archlab.inference.images.ImageError` naming it."""
    if top < 1:
        raise ValueError(f"top must be at least 1, received {top}")
    x = load_images(paths, model)
    names = model.info.class_names
    k = min(top, len(names))
    out: list[Prediction] = []
    for start in range(0, len(x), BATCH):
        proba = model(x[start:start + BATCH]).double()
        values, indices = proba.topk(k, dim=1)
        for row, (vals, idx) in enumerate(zip(values.tolist(), indices.tolist(), strict=True)):
            out.append(Prediction(str(paths[start + row]), tuple(
                ClassScore(i, names[i], float(v)) for v, i in zip(vals, idx, strict=True))))
    return out
