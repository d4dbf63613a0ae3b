"""Reading run files for the report never trusts them, and gathered figure data is typed."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from archlab import build_model, parse_study
from archlab.analysis.predictions import Predictions, save_predictions
from archlab.errors import StoreError
from archlab.report.gather import (
    NAME_CHARS,
    display_images,
    gather_gallery,
    gather_samples,
    gather_scatter,
    gather_weights,
    name_lines,
    read_predictions,
    read_weights,
    short_label,
)
from tests.analysis.crafted import model, results
from tests.report.crafted_predictions import crafted


class _Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, ("raise SystemExit('unpickled!')",))


def test_pickled_weights_are_refused_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    path.write_bytes(pickle.dumps({"w": _Boom()}))
    with pytest.raises(StoreError) as err:
        read_weights(path)
    text = str(err.value)
    assert text.startswith("weights.safetensors is not a readable safetensors file (")
    assert "\n" not in text


@pytest.mark.parametrize("data", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}x"])
def test_truncated_or_garbled_weights_are_refused(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "weights.safetensors"
    path.write_bytes(data)
    with pytest.raises(StoreError, match="not a readable safetensors file"):
        read_weights(path)


def test_weights_that_do_not_fit_the_model(tmp_path: Path) -> None:
    study = parse_study({"name": "w", "models": {"mlp32": {"layers": [
        "Flatten", {"Dense": {"units": 32, "activation": "relu"}},
        {"Dense": {"units": 10, "activation": "softmax"}}]}}})
    built = build_model(study, "mlp32", device="meta")
    good = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in built.module.state_dict().items()}
    path = tmp_path / "w.safetensors"
    save_file(good, str(path))
    layers = gather_weights(built, read_weights(path))
    assert [x.name for x in layers] == [r.name for r in built.rows if r.layer == "Dense"]
    assert all(x.weights is not None and x.weights.ndim == 1 for x in layers)
    wrong = dict(good)
    key = next(k for k in good if k.endswith(".core.weight"))
    wrong[key] = torch.zeros(3, 3)
    del wrong[next(k for k in good if k.endswith(".core.bias"))]
    save_file(wrong, str(path))
    with pytest.raises(StoreError) as err:
        gather_weights(built, read_weights(path))
    assert str(err.value).startswith("the saved weights do not fit the model rebuilt from its "
                                     "stored config: tensors 1 missing")
    assert f"1 of another shape (first: {key})" in str(err.value)


def _predictions(mistakes: int) -> Predictions:
    rng = np.random.default_rng(0)
    return Predictions(
        class_names=tuple(str(i) for i in range(10)),
        confusion=np.eye(10, dtype=np.int64) * 9 + 1,
        mistake_images=rng.normal(size=(mistakes, 28, 28)).astype(np.float32),
        mistake_true=np.arange(mistakes, dtype=np.int64) % 10,
        mistake_pred=(np.arange(mistakes, dtype=np.int64) + 1) % 10,
        mistake_confidence=np.linspace(0.99, 0.6, mistakes))


def test_predictions_round_trip_and_gallery(tmp_path: Path) -> None:
    path = tmp_path / "predictions.safetensors"
    save_predictions(_predictions(5), path)
    pred = read_predictions(path)
    assert pred.confusion.shape == (10, 10) and pred.class_names[3] == "3"
    gallery = gather_gallery(pred)
    assert gallery is not None and gallery.images.dtype == np.uint8
    # normalized inputs (negative values too) are stretched to the full grey range, per image
    assert (gallery.images.min(axis=(1, 2)) == 0).all()
    assert (gallery.images.max(axis=(1, 2)) == 255).all()
    assert gallery.captions[0] == ("0", "→ 1 (99%)") and gallery.true_lines[0] == 1
    assert gather_gallery(_predictions(0)) is None
    assert gather_samples(pred) is None  # a file without samples (as older runs wrote)


def test_gallery_captions_hold_whole_class_names() -> None:
    """Names up to NAME_CHARS characters are whole, on one line; longer ones wrap onto a
    second line at a separator near the middle, and are cut with "…" only past two lines."""
    assert name_lines("T-shirt/top") == ["T-shirt/top"]
    thirty = "Pullover with a very long name"
    assert len(thirty) == NAME_CHARS and name_lines(thirty) == [thirty]
    assert name_lines("sandal_with_an_underscored_name") == ["sandal_with_an_underscored_",
                                                             "name"]
    assert name_lines("a class name longer than thirty characters, wrapped") == [
        "a class name longer than", "thirty characters, wrapped"]
    assert name_lines("x" * 75) == ["x" * 30, "x" * 29 + "…"]
    assert short_label(thirty) == thirty and short_label(thirty + "!") == thirty[:29] + "…"
    k = 11
    pred = crafted(k, accuracy=0.3)
    gallery = gather_gallery(pred)
    assert gallery is not None
    for caption, t, p, first in zip(gallery.captions, pred.mistake_true, pred.mistake_pred,
                                    gallery.true_lines, strict=True):
        assert " ".join(caption[:first]) == " ".join(name_lines(pred.class_names[t]))
        assert caption[first].startswith("→ ")
        assert caption[-1].endswith("%)")
        assert all(len(line) <= NAME_CHARS + len("→ ") + len(" (100%)") for line in caption)
        assert p != t
    samples = gather_samples(pred)
    assert samples is not None and not samples.mistakes
    assert pred.sample_labels.tolist() == list(range(k))  # 20 // 11: one image a class
    assert samples.captions == [tuple(name_lines(n)) for n in pred.class_names]


def test_images_are_drawn_as_the_dataset_holds_them() -> None:
    """uint8 pixels are not stretched: grey stays grey (H, W), RGB stays RGB, RGBA is laid over
    white; floats (older files) are stretched per image."""
    grey = np.array([[[[10], [20]], [[30], [40]]]], dtype=np.uint8)  # (1, 2, 2, 1)
    assert np.array_equal(display_images(grey), grey[..., 0])
    rgb = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    assert np.array_equal(display_images(rgb), rgb)
    rgba = np.zeros((1, 1, 2, 4), dtype=np.uint8)
    rgba[0, 0, 0] = (200, 100, 0, 255)  # opaque
    rgba[0, 0, 1] = (200, 100, 0, 0)  # transparent: white
    assert display_images(rgba).tolist() == [[[[200, 100, 0], [255, 255, 255]]]]
    floats = np.array([[[-1.0, 0.0], [0.5, 1.0]]], dtype=np.float32)
    assert display_images(floats).tolist() == [[[0, 128], [191, 255]]]


def test_bad_predictions_file(tmp_path: Path) -> None:
    path = tmp_path / "predictions.safetensors"
    save_file({"confusion": torch.zeros(2, 2)}, str(path))  # safetensors, but not predictions
    with pytest.raises(StoreError, match="predictions.safetensors is not a readable "
                                         "predictions file"):
        read_predictions(path)


def test_scatter_points_use_the_median_time() -> None:
    r = results(model("a", [0.9, 0.92], seconds=[10.0, 100.0]), model("b", [], failed=1))
    (point,) = gather_scatter(r, "time")
    assert (point.label, point.x) == ("a", 55.0)
    r = results(model("a", [0.9, 0.92, 0.91], seconds=[10.0, 100.0, 12.0]))
    (point,) = gather_scatter(r, "time")
    assert point.x == 12.0 and point.accuracy == pytest.approx(0.91)
    assert point.error == pytest.approx(0.01)
    (point,) = gather_scatter(r, "params")
    assert point.x == 100.0
