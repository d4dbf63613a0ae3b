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
    gather_gallery,
    gather_scatter,
    gather_weights,
    read_predictions,
    read_weights,
)
from tests.analysis.crafted import model, results


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
    assert gallery.captions[0] == "0→1 99%"
    assert gather_gallery(_predictions(0)) is None


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
