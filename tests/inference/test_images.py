"""Real images to model input: MNIST's own recipe (grey, polarity, crop, 20x20, centre of mass),
then the study's preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import archlab
from archlab.data import prepare_tensors
from archlab.inference import ImageError, mnist_format, preprocess_images, read_image


def _centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(a.shape)
    return float((a * ys).sum() / a.sum()), float((a * xs).sum() / a.sum())


def _box(a: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def test_real_mnist_digits_come_back_almost_unchanged(sample: archlab.RawDataset) -> None:
    x = sample.x_test[..., 0][:300]
    again = np.stack([mnist_format(im) for im in x])
    assert again.dtype == np.uint8 and again.shape == (300, 28, 28)
    assert (again == x).all(axis=(1, 2)).mean() > 0.6  # most are the very same image
    assert np.abs(again.astype(int) - x).mean() < 0.5  # the rest differ by rounding


@pytest.mark.parametrize("size", [28, 56, 100, 300])
def test_any_size_and_polarity_gives_the_mnist_layout(sample: archlab.RawDataset,
                                                      size: int) -> None:
    digit = sample.x_test[..., 0][7]
    big = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC))
    big = np.pad(big, ((size // 3, 5), (2, size // 2)))  # off centre
    for image in (big, 255 - big, (230 - big.astype(float) * 0.8).astype(np.uint8)):
        out = mnist_format(image)
        assert max(_box(out)) == 20
        cy, cx = _centre_of_mass(out.astype(float))
        assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
        assert np.corrcoef(out.ravel(), digit.ravel())[0, 1] > 0.85


def test_aspect_ratio_is_kept() -> None:
    tall = np.zeros((120, 60), np.uint8)
    tall[10:110, 25:35] = 255  # a 100x10 stroke: a "1"
    out = mnist_format(tall)
    assert _box(out) == (20, 2)
    wide = np.full((50, 200), 255, np.uint8)
    wide[20:30, 20:180] = 0  # dark on light, 10x160
    assert _box(mnist_format(wide))[1] == 20 and _box(mnist_format(wide))[0] <= 2


def test_fashion_mnist_fills_the_field_and_centres_the_box() -> None:
    shirt = np.full((90, 60), 250, np.uint8)
    shirt[:, 10:50] = 40  # a dark 90x40 product on white
    out = mnist_format(shirt, dataset="fashion-mnist")
    assert _box(out)[0] == 28 and out[:, :8].max() == 0 and out[:, -8:].max() == 0


def test_read_image_handles_rgb_alpha_and_16_bit(sample: archlab.RawDataset,
                                                 tmp_path: Path) -> None:
    digit = sample.x_test[..., 0][3]
    grey = tmp_path / "g.png"
    Image.fromarray(digit).save(grey)
    rgba = np.zeros((28, 28, 4), np.uint8)  # black ink, transparent paper
    rgba[..., 3] = digit
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(digit.astype(np.uint16) * 257).save(tmp_path / "w.png")  # 16-bit
    Image.fromarray(np.stack([255 - digit] * 3, -1)).save(tmp_path / "c.jpg", quality=95)
    expected = mnist_format(read_image(grey))
    for name in ("a.png", "w.png", "c.jpg"):
        got = mnist_format(read_image(tmp_path / name))
        assert np.abs(got.astype(int) - expected).mean() < 6, name


def test_unreadable_and_blank_images_are_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image\n")
    with pytest.raises(ImageError, match=r"notes\.png: not a readable image"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(ImageError, match="no such image file"):
        read_image(tmp_path / "absent.png")
    with pytest.raises(ImageError, match="blank image"):
        mnist_format(np.full((40, 40), 200, np.uint8))


def test_study_preprocessing_is_applied(sample: archlab.RawDataset) -> None:
    for prep in ("scale", {"normalize": {"axis": 1, "order": 2}}):
        spec = archlab.DataSpec.model_validate({"dataset": "mnist-sample",
                                                "validation": "test", "preprocessing": prep})
        x = preprocess_images(sample.x_test[..., 0][:20], spec, mnist_style=False)
        prepared = prepare_tensors(sample, spec, 0)
        expected = prepared.pre(prepared.x_test[:20])  # what the trainer feeds the model
        assert x.dtype == torch.float32 and x.shape == (20, 1, 28, 28)
        assert torch.equal(x, expected)
    scale = archlab.DataSpec.model_validate({"dataset": "mnist-sample"})
    inverted = preprocess_images([255 - sample.x_test[0, ..., 0]], scale)  # dark on light
    assert inverted.shape == (1, 1, 28, 28) and float(inverted.min()) == 0.0
    assert float(inverted.max()) == 1.0 and float(inverted[0, 0, 0, 0]) == 0.0
    with pytest.raises(ImageError, match=r"Expected MNIST-like images of shape \(N, 28, 28\)"):
        preprocess_images(np.zeros((2, 30, 30), np.uint8), spec, mnist_style=False)
