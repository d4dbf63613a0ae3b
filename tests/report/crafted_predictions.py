"""Crafted test-set predictions for report tests: colour or grey uint8 images, any number of
classes with any names, reduced by the real :func:`compute_predictions` from chosen softmax
outputs, and written into a crafted store's runs as a finished run would. Nothing trains."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from archlab.analysis.predictions import Predictions, compute_predictions, save_predictions
from archlab.store import PREDICTIONS_FILE, Store

#: Names up to 30 characters and past them, with spaces, slashes and no spaces at all.
LONG_NAMES = ("T-shirt/top", "Trouser", "Pullover with a very long name", "Dress", "Coat",
              "sandal_with_an_underscored_name", "Shirt", "Sneaker", "Bag", "Ankle boot",
              "a class name longer than thirty characters, wrapped")


def class_names(k: int) -> tuple[str, ...]:
    """``k`` distinct names: :data:`LONG_NAMES` first, then 'class 11 (a medium name)', ..."""
    extra = [f"class {i} ({'a medium name' if i % 3 else 'x'})" for i in range(len(LONG_NAMES),
                                                                            k)]
    return tuple((list(LONG_NAMES) + extra)[:k])


def images(labels: np.ndarray, channels: int = 3, size: int = 32) -> torch.Tensor:
    """uint8 (N, C, H, W) test images: a disc on a dark ground, its hue and place set by the
    label (C = 3 colour, 4 colour with a transparent corner, 1 grey)."""
    n = len(labels)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    out = np.zeros((n, channels, size, size), dtype=np.uint8)
    for i, c in enumerate(labels):
        hue = (int(c) * 0.618) % 1.0
        cx, cy = 0.3 + 0.4 * ((int(c) * 7 % 10) / 9), 0.3 + 0.4 * ((int(c) * 3 % 10) / 9)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < 0.08).astype(np.float64)
        rgb = np.array([abs(hue * 6 - 3) - 1, 2 - abs(hue * 6 - 2), 2 - abs(hue * 6 - 4)])
        rgb = np.clip(rgb, 0, 1)
        picture = 30 + 225 * disc[None] * rgb[:, None, None]
        if channels == 1:
            out[i, 0] = np.rint(picture.mean(axis=0))
        else:
            out[i, :3] = np.rint(picture)
        if channels == 4:
            out[i, 3] = 255
            out[i, 3, : size // 4, : size // 4] = 0  # a transparent corner
    return torch.from_numpy(out)


def probabilities(labels: np.ndarray, k: int, accuracy: float, seed: int = 0) -> torch.Tensor:
    """Softmax-like rows: about ``accuracy`` of them right; the wrong ones mostly predict the
    next class (so the most-confused pairs are (c, c + 1)), some a random one."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    logits = rng.normal(0.0, 0.3, size=(n, k))
    wrong = rng.random(n) > accuracy
    target = labels.copy()
    nearby = rng.random(n) < 0.7
    target[wrong & nearby] = (labels[wrong & nearby] + 1) % k
    shift = rng.integers(1, k, size=n)
    target[wrong & ~nearby] = (labels[wrong & ~nearby] + shift[wrong & ~nearby]) % k
    logits[np.arange(n), target] += rng.uniform(1.0, 6.0, size=n)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return torch.from_numpy(p / p.sum(axis=1, keepdims=True))


def crafted(k: int, *, per_class: int = 10, accuracy: float = 0.8, channels: int = 3,
            size: int = 32, seed: int = 0, names: tuple[str, ...] | None = None,
            x: torch.Tensor | None = None) -> Predictions:
    """:func:`compute_predictions` of a crafted test set (``per_class`` images a class)."""
    labels = np.repeat(np.arange(k), per_class)
    x = images(labels, channels, size) if x is None else x
    return compute_predictions(probabilities(labels, k, accuracy, seed), x,
                               torch.from_numpy(labels), names or class_names(k))


def write_predictions(directory: Path, run_id: str, predictions: Predictions) -> None:
    """Store ``predictions`` as run ``run_id``'s file (its checksum recorded, as a run does)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / PREDICTIONS_FILE
        save_predictions(predictions, path)
        data = path.read_bytes()
    with Store(directory) as store:
        store.import_file(run_id, PREDICTIONS_FILE, data)
