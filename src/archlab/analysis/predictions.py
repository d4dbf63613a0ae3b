"""Predictions on the test set, computed once at the end of each finished run and stored beside
its weights: the confusion matrix, the most confident mistakes and a few sample test images per
class (their pixels included), so the report never loads data or weights, nor runs a model.

Images are stored as the run saw them. Raw pixels (a uint8 test set, (N, C, H, W) with C = 1,
3 or 4) are kept as uint8 ``(m, H, W, C)``; preprocessed float inputs as float32, ``(m, H, W)``
for one channel (what every run wrote before raw pixels reached this function) or
``(m, H, W, C)``. :func:`load_predictions` reads all of these.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["GALLERY", "PREDICTIONS_FILE", "SAMPLES", "Predictions", "compute_predictions",
           "load_predictions", "save_predictions"]

GALLERY = 12  # most confidently misclassified test images kept per run
SAMPLES = 20  # sample test images kept per run (a few per class; some classes of many)
MAX_PER_CLASS = 2  # sample images of one class, at most
PREDICTIONS_FILE = "predictions.safetensors"


def _no_images() -> np.ndarray:
    return np.zeros((0, 0, 0), dtype=np.float32)


def _no_labels() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Predictions:
    """A run's test-set predictions, reduced to what the report shows.

    Image arrays are uint8 ``(m, H, W, C)`` raw pixels, or float32 ``(m, H, W)`` /
    ``(m, H, W, C)`` preprocessed values (older runs, float inputs)."""

    class_names: tuple[str, ...]
    confusion: np.ndarray  # (k, k) int64: rows are true classes, columns predictions
    mistake_images: np.ndarray
    mistake_true: np.ndarray  # (m,) int64
    mistake_pred: np.ndarray  # (m,) int64
    mistake_confidence: np.ndarray  # (m,) float64: the predicted class's probability
    sample_images: np.ndarray = field(default_factory=_no_images)  # none in older files
    sample_labels: np.ndarray = field(default_factory=_no_labels)  # (s,) int64

    def per_class(self) -> list[tuple[str, float, int]]:
        """(class name, accuracy, support) for each class; NaN accuracy where support is 0."""
        support = self.confusion.sum(axis=1)
        return [(name, float(self.confusion[i, i] / support[i]) if support[i] else math.nan,
                 int(support[i])) for i, name in enumerate(self.class_names)]

    def confused_pairs(self, top: int = 10) -> list[tuple[int, int, int, float]]:
        """The ``top`` most frequent mistakes: (true class, predicted class, count, share of
        the true class's test images), most frequent first (ties: class order)."""
        cm = self.confusion
        support = cm.sum(axis=1)
        off = cm.copy()
        np.fill_diagonal(off, 0)
        flat = np.flatnonzero(off)
        order = flat[np.argsort(-off.ravel()[flat], kind="stable")][:top]
        k = cm.shape[0]
        return [(int(i // k), int(i % k), int(off.flat[i]),
                 float(off.flat[i] / support[i // k])) for i in order]


def _images(x: torch.Tensor, index: np.ndarray) -> np.ndarray:
    """The images ``x[index]`` as stored: uint8 (m, H, W, C) for raw pixels; float32
    (m, H, W) for one preprocessed channel, else (m, H, W, C)."""
    picked = x[torch.from_numpy(index).to(x.device)].detach().cpu()
    if picked.ndim == 3:  # (m, H, W): one channel without its axis
        picked = picked[:, None]
    if picked.dtype == torch.uint8:
        return np.ascontiguousarray(picked.permute(0, 2, 3, 1).numpy())
    values = picked.float().numpy().astype(np.float32)
    if values.shape[1] == 1:
        return np.ascontiguousarray(values[:, 0])
    return np.ascontiguousarray(values.transpose(0, 2, 3, 1))


def _sample_index(y: np.ndarray, k: int, limit: int) -> np.ndarray:
    """The first test images of each class (up to :data:`MAX_PER_CLASS`, ``limit`` in all),
    class by class; with more classes than ``limit``, one image of ``limit`` classes spread
    evenly over the class list."""
    if limit <= 0 or not len(y):
        return np.zeros(0, dtype=np.int64)
    present = [c for c in range(k) if (y == c).any()]
    per = max(1, min(MAX_PER_CLASS, limit // max(len(present), 1)))
    if len(present) > limit:
        spread = np.linspace(0, len(present) - 1, limit).round().astype(int)
        present = [present[i] for i in spread]
    chosen = [np.flatnonzero(y == c)[:per] for c in present]
    return np.concatenate(chosen).astype(np.int64)


def compute_predictions(probabilities: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                        class_names: tuple[str, ...], top: int = GALLERY,
                        samples: int = SAMPLES) -> Predictions:
    """Reduce softmax outputs (N, k) on the test set to a :class:`Predictions`.

    ``x_test`` is the test set the run saw: raw uint8 pixels (N, C, H, W), kept as they are,
    or preprocessed floats (N, 1, H, W) (or (N, C, H, W)), kept as float32."""
    proba = probabilities.detach().double().cpu().numpy()
    y = y_test.detach().cpu().numpy().astype(np.int64)
    pred = proba.argmax(1)
    k = len(class_names)
    confusion = np.bincount(y * k + pred, minlength=k * k).reshape(k, k).astype(np.int64)
    wrong = np.flatnonzero(pred != y)
    conf = proba[wrong, pred[wrong]]
    chosen = wrong[np.argsort(-conf, kind="stable")[:top]]
    sample = _sample_index(y, k, samples)
    return Predictions(
        class_names=tuple(class_names), confusion=confusion,
        mistake_images=_images(x_test, chosen),
        mistake_true=y[chosen], mistake_pred=pred[chosen].astype(np.int64),
        mistake_confidence=proba[chosen, pred[chosen]],
        sample_images=_images(x_test, sample), sample_labels=y[sample])


def save_predictions(predictions: Predictions, path: Path) -> None:
    """Write ``predictions`` as safetensors (atomically; never pickle)."""
    from archlab.store.layout import atomic_save

    p = predictions
    tensors = {"confusion": p.confusion, "mistake_images": p.mistake_images,
               "mistake_true": p.mistake_true, "mistake_pred": p.mistake_pred,
               "mistake_confidence": p.mistake_confidence}
    if len(p.sample_labels):
        tensors |= {"sample_images": p.sample_images, "sample_labels": p.sample_labels}
    atomic_save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()},
                path, {"class_names": json.dumps(list(p.class_names))})


def load_predictions(path: Path) -> Predictions:
    """Read what :func:`save_predictions` wrote, in any of its versions (older files hold
    float32 (m, H, W) mistakes and no samples). A bad file raises ``SafetensorError``/OSError;
    one whose parts do not fit together raises ``ValueError``."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as fh:
        meta = fh.metadata() or {}
        t = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 - not a dict
    names = json.loads(meta["class_names"])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("class_names is not a list of names")
    pred = Predictions(
        class_names=tuple(names), confusion=t["confusion"],
        mistake_images=t["mistake_images"], mistake_true=t["mistake_true"],
        mistake_pred=t["mistake_pred"], mistake_confidence=t["mistake_confidence"],
        sample_images=t.get("sample_images", _no_images()),
        sample_labels=t.get("sample_labels", _no_labels()))
    _check(pred)
    return pred


def _check_images(images: np.ndarray, count: int, what: str) -> None:
    if len(images) != count:
        raise ValueError(f"{len(images)} {what} images for {count} labels")
    if count == 0:
        return
    if images.ndim == 4 and images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what} images with {images.shape[-1]} channels")
    if images.ndim not in (3, 4) or (images.ndim == 3 and images.dtype == np.uint8):
        raise ValueError(f"{what} images of shape {images.shape} and type {images.dtype}")
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{what} images of type {images.dtype}")


def _check(p: Predictions) -> None:
    """Shapes and labels that fit together (a damaged file must not reach the drawing)."""
    k = len(p.class_names)
    if p.confusion.shape != (k, k):
        raise ValueError(f"a confusion matrix of shape {p.confusion.shape} for {k} classes")
    m = len(p.mistake_true)
    if len(p.mistake_pred) != m or len(p.mistake_confidence) != m:
        raise ValueError("mistake labels of different lengths")
    _check_images(p.mistake_images, m, "mistake")
    _check_images(p.sample_images, len(p.sample_labels), "sample")
    for labels in (p.mistake_true, p.mistake_pred, p.sample_labels):
        if len(labels) and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"a class label outside 0..{k - 1}")
