"""Stored predictions: raw uint8 pixels kept as they are (grey, RGB, RGBA, any size), float
inputs as before, sample images per class, and files written before any of this still read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from archlab.analysis.predictions import (
    MAX_PER_CLASS,
    SAMPLES,
    Predictions,
    compute_predictions,
    load_predictions,
    save_predictions,
)
from tests.report.crafted_predictions import class_names, images, probabilities


def _raw(channels: int, k: int = 10, per_class: int = 6, size: tuple[int, int] = (20, 24),
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(channels)
    labels = np.repeat(np.arange(k), per_class)
    x = torch.from_numpy(rng.integers(0, 256, size=(len(labels), channels, *size),
                                      dtype=np.uint8))
    return probabilities(labels, k, 0.6), x, torch.from_numpy(labels)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_raw_pixels_are_stored_as_they_are(tmp_path: Path, channels: int) -> None:
    proba, x, y = _raw(channels)
    pred = compute_predictions(proba, x, y, class_names(10))
    wrong = np.flatnonzero(proba.numpy().argmax(1) != y.numpy())
    assert len(pred.mistake_true) == min(12, len(wrong))
    assert pred.mistake_images.dtype == np.uint8
    assert pred.mistake_images.shape == (len(pred.mistake_true), 20, 24, channels)
    # each stored mistake is the very test image, channels last, not stretched or scaled
    index = [int(np.flatnonzero((x.permute(0, 2, 3, 1).numpy() == img).all(axis=(1, 2, 3)))[0])
             for img in pred.mistake_images]
    assert (y.numpy()[index] == pred.mistake_true).all()
    assert pred.sample_images.dtype == np.uint8
    assert pred.sample_images.shape[1:] == (20, 24, channels)
    path = tmp_path / "p.safetensors"
    save_predictions(pred, path)
    back = load_predictions(path)
    for name in ("confusion", "mistake_images", "mistake_true", "mistake_pred",
                 "mistake_confidence", "sample_images", "sample_labels"):
        a, b = getattr(pred, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert back.class_names == class_names(10)


def test_float_inputs_keep_todays_layout() -> None:
    """Preprocessed floats (N, 1, H, W), as every caller passed until now: float32 (m, H, W),
    the values the model saw."""
    proba, x, y = _raw(1)
    xf = (x.float() / 255 - 0.5) / 0.25
    pred = compute_predictions(proba, xf, y, class_names(10))
    assert pred.mistake_images.dtype == np.float32
    assert pred.mistake_images.shape == (len(pred.mistake_true), 20, 24)
    assert pred.sample_images.shape == (len(pred.sample_labels), 20, 24)
    assert pred.mistake_images.min() < 0  # not rescaled
    xc = images(y.numpy(), 3, 16).float() / 255  # float colour: stored (m, H, W, C)
    pred = compute_predictions(proba, xc, y, class_names(10))
    assert pred.mistake_images.shape == (len(pred.mistake_true), 16, 16, 3)


def test_samples_a_few_per_class_and_spread_over_many_classes() -> None:
    proba, x, y = _raw(3, k=10)
    pred = compute_predictions(proba, x, y, class_names(10))
    labels = pred.sample_labels.tolist()
    assert labels == sorted(labels) and len(labels) == 10 * MAX_PER_CLASS
    assert all(labels.count(c) == MAX_PER_CLASS for c in range(10))
    # the first test images of each class, in test order
    assert np.array_equal(pred.sample_images[0], x[0].permute(1, 2, 0).numpy())
    k = 100
    labels = np.repeat(np.arange(k), 2)
    pred = compute_predictions(probabilities(labels, k, 0.5), images(labels, 3, 8),
                               torch.from_numpy(labels), class_names(k))
    shown = pred.sample_labels.tolist()
    assert len(shown) == SAMPLES and len(set(shown)) == SAMPLES  # one each of 20 classes
    assert shown[0] == 0 and shown[-1] == k - 1  # spread over the whole list


def test_confused_pairs_most_frequent_first() -> None:
    cm = np.array([[5, 3, 0], [0, 9, 1], [4, 0, 2]], dtype=np.int64)
    pred = Predictions(("a", "b", "c"), cm, np.zeros((0, 0, 0), np.float32),
                       np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    assert pred.confused_pairs() == [(2, 0, 4, pytest.approx(4 / 6)), (0, 1, 3, 3 / 8),
                                     (1, 2, 1, 0.1)]
    assert pred.confused_pairs(top=1) == [(2, 0, 4, pytest.approx(4 / 6))]


def test_files_written_before_raw_pixels_still_read(tmp_path: Path) -> None:
    """A file as archlab wrote it until now: float32 (m, H, W) mistakes, no samples."""
    path = tmp_path / "old.safetensors"
    m = 3
    save_file({"confusion": torch.eye(10, dtype=torch.int64) * 9 + 1,
               "mistake_images": torch.rand(m, 28, 28),
               "mistake_true": torch.tensor([0, 1, 2]), "mistake_pred": torch.tensor([1, 2, 3]),
               "mistake_confidence": torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64)},
              str(path), metadata={"class_names": '["0","1","2","3","4","5","6","7","8","9"]'})
    pred = load_predictions(path)
    assert pred.mistake_images.shape == (m, 28, 28) and pred.mistake_images.dtype == np.float32
    assert len(pred.sample_labels) == 0


@pytest.mark.parametrize("damage", ["label", "images", "channels", "names"])
def test_parts_that_do_not_fit_are_refused(tmp_path: Path, damage: str) -> None:
    proba, x, y = _raw(3)
    pred = compute_predictions(proba, x, y, class_names(10))
    tensors = {"confusion": pred.confusion, "mistake_images": pred.mistake_images,
               "mistake_true": pred.mistake_true, "mistake_pred": pred.mistake_pred,
               "mistake_confidence": pred.mistake_confidence}
    names = '["a"]' if damage == "names" else str(list(class_names(10))).replace("'", '"')
    if damage == "label":
        tensors["mistake_pred"] = pred.mistake_pred + 10
    elif damage == "images":
        tensors["mistake_images"] = pred.mistake_images[:-1]
    elif damage == "channels":
        tensors["mistake_images"] = np.zeros((*pred.mistake_images.shape[:3], 2), np.uint8)
    path = tmp_path / "bad.safetensors"
    save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()},
              str(path), metadata={"class_names": names})
    with pytest.raises(ValueError):
        load_predictions(path)
