"""A model trained on the user's colour images, outside its study: predict decodes and resizes
image files as its folder said, standardize's numbers travel with the weights, and an export's
metadata carries the input shape, channels, class names and preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import archlab
from archlab.inference import load_images, load_trained
from archlab.inference.export import export_model
from archlab.inference.predict import predict_images
from tests.imagefiles import digits, tinted, write_folder

STUDY = {
    "name": "tints",
    "data": {"validation": {"split": 0.2}, "preprocessing": "standardize"},
    "train": {"optimizer": {"name": "adam"}, "batch_size": 16, "epochs": 4},
    "models": {"mlp": {"layers": ["Flatten", {"Dense": {"units": 16, "activation": "relu"}},
                                  {"Dense": {"units": 3, "activation": "softmax"}}]}},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLP on 24x24 RGB digits tinted by class (colour alone tells the class)."""
    root = tmp_path_factory.mktemp("tints")
    folder = write_folder(root / "images", 15, 3, rgb=True, sizes=(28, 20))
    config = {**STUDY, "data": {**STUDY["data"], "dataset": {"folder": str(folder),
                                                             "image_size": [24, 24]}}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARCHLAB_CACHE_DIR", str(root / "cache"))
        archlab.run_study(archlab.parse_study(config), root / "out", threads=1, device="cpu")
    return root / "out"


def test_the_model_knows_its_input_and_its_training_split_statistics(trained: Path) -> None:
    model = load_trained(trained, "mlp")
    info = model.info
    assert info.input_shape == (3, 24, 24) and info.channels == 3
    assert info.class_names == ("digit0", "digit1", "digit2")
    assert info.preprocessing == "standardize" and info.stats is not None
    mean, std = info.stats
    assert len(mean) == len(std) == 3 and all(s > 0 for s in std)
    assert info.image == {"color_mode": "rgb", "crop_to_aspect_ratio": False,
                          "image_size": [24, 24], "interpolation": "bilinear",
                          "pad_to_aspect_ratio": False}


def test_predict_resizes_colour_files_as_the_folder_did(trained: Path, tmp_path: Path) -> None:
    model = load_trained(trained, "mlp")
    x, y = digits(5, 3, split="test")
    paths = []
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        size = (40, 40) if i % 2 else (24, 24)
        path = tmp_path / f"{i}.png"
        Image.fromarray(tinted(img, int(label))).resize(size).save(path)
        paths.append(path)
    batch = load_images(paths, model)
    assert batch.shape == (15, 3, 24, 24) and batch.dtype == torch.float32
    # standardized with the training split's numbers: (x - mean) / std per channel
    mean, std = model.info.stats  # type: ignore[misc]
    raw = np.asarray(Image.open(paths[0]).convert("RGB"), np.float32)
    expected = (raw - np.array(mean, np.float32)) / np.array(std, np.float32)
    np.testing.assert_allclose(batch[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    predicted = [p.label for p in predict_images(model, paths)]
    assert np.mean([p == f"digit{c}" for p, c in zip(predicted, y, strict=True)]) >= 0.8


def test_the_export_metadata_carries_the_input_contract(trained: Path, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    path = export_model(trained, tmp_path / "m.onnx", model="mlp").path
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["input_shape"]) == ["batch", 3, 24, 24] and meta["channels"] == "3"
    assert json.loads(meta["class_names"]) == ["digit0", "digit1", "digit2"]
    assert set(json.loads(meta["preprocess"])["standardize"]) == {"mean", "std"}
    assert json.loads(meta["image"])["image_size"] == [24, 24]
    model = load_trained(trained, "mlp")
    x = load_images([next((trained.parent / "images" / "digit1").iterdir())], model)
    session = onnxruntime.InferenceSession(str(path))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5)
