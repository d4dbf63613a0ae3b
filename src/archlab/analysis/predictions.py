"""Predictions on the test set, computed once at the end of each finished run and stored beside
its weights: the confusion matrix and the most confident mistakes (their images included), so
the report never loads data or weights, nor runs a model."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

GALLERY = 12  # most confidently misclassified test images kept per run
PREDICTIONS_FILE = "predictions.safetensors"


@dataclass(frozen=True, eq=False)
class Predictions:
    """A run's test-set predictions, reduced to what the report shows."""

    class_names: tuple[str, ...]
    confusion: np.ndarray  # (k, k) int64: rows are true classes, columns predictions
    mistake_images: np.ndarray  # (m, H, W) float32, as the model saw them (preprocessed)
    mistake_true: np.ndarray  # (m,) int64
    mistake_pred: np.ndarray  # (m,) int64
    mistake_confidence: np.ndarray  # (m,) float64: the predicted class's probability

    def per_class(self) -> list[tuple[str, float, int]]:
        """(class name, accuracy, support) for each class; NaN accuracy where support is 0."""
        support = self.confusion.sum(axis=1)
        return [(name, float(self.confusion[i, i] / support[i]) if support[i] else math.nan,
                 int(support[i])) for i, name in enumerate(self.class_names)]


def compute_predictions(probabilities: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                        class_names: tuple[str, ...], top: int = GALLERY) -> Predictions:
    """Reduce softmax outputs (N, k) on the test set to a :class:`Predictions`."""
    proba = probabilities.detach().double().cpu().numpy()
    y = y_test.detach().cpu().numpy().astype(np.int64)
    pred = proba.argmax(1)
    k = len(class_names)
    confusion = np.bincount(y * k + pred, minlength=k * k).reshape(k, k).astype(np.int64)
    wrong = np.flatnonzero(pred != y)
    conf = proba[wrong, pred[wrong]]
    chosen = wrong[np.argsort(-conf, kind="stable")[:top]]
    images = x_test[torch.from_numpy(chosen).to(x_test.device)].detach().float().cpu().numpy()
    return Predictions(
        class_names=tuple(class_names), confusion=confusion,
        mistake_images=images.reshape(len(chosen), *images.shape[-2:]).astype(np.float32),
        mistake_true=y[chosen], mistake_pred=pred[chosen].astype(np.int64),
        mistake_confidence=proba[chosen, pred[chosen]])


def save_predictions(predictions: Predictions, path: Path) -> None:
    """Write ``predictions`` as safetensors (atomically; never pickle)."""
    from archlab.run.checkpoint import atomic_save

    tensors = {"confusion": torch.from_numpy(predictions.confusion),
               "mistake_images": torch.from_numpy(predictions.mistake_images),
               "mistake_true": torch.from_numpy(predictions.mistake_true),
               "mistake_pred": torch.from_numpy(predictions.mistake_pred),
               "mistake_confidence": torch.from_numpy(predictions.mistake_confidence)}
    atomic_save(tensors, path, {"class_names": json.dumps(list(predictions.class_names))})


def load_predictions(path: Path) -> Predictions:
    """Read what :func:`save_predictions` wrote (a bad file raises ``SafetensorError``/OSError)."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as fh:
        meta = fh.metadata() or {}
        t = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 - not a dict
    return Predictions(
        class_names=tuple(json.loads(meta["class_names"])), confusion=t["confusion"],
        mistake_images=t["mistake_images"], mistake_true=t["mistake_true"],
        mistake_pred=t["mistake_pred"], mistake_confidence=t["mistake_confidence"])
