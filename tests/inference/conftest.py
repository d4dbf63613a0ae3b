"""Trained studies shared by the inference tests (each trained once per test session)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import archlab

#: A small CNN that reaches about 97 % on mnist-sample's test set in 8 epochs (~10 s on a core).
DIGITS: dict[str, Any] = {
    "name": "digits",
    "seed": 1,
    "data": {"dataset": "mnist-sample", "validation": {"split": 0.1}},
    "train": {"optimizer": {"name": "adam"}, "batch_size": 64, "epochs": 8},
    "models": {"cnn": {"layers": [
        {"Conv2D": {"filters": 16, "kernel_size": 3, "activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 2}},
        {"Conv2D": {"filters": 32, "kernel_size": 3, "activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 2}},
        {"Dropout": {"rate": 0.25}},
        "Flatten",
        {"Dense": {"units": 64, "activation": "relu"}},
        {"Dropout": {"rate": 0.25}},
        {"Dense": {"units": 10, "activation": "softmax"}},
    ]}},
}


def train(study: archlab.Study, directory: Path, **kwargs: Any) -> Path:
    archlab.run_study(study, directory, threads=1, device="cpu", **kwargs)
    return directory


@dataclass(frozen=True)
class Trained:
    """A trained study and the roles its models play in the tests (names come from the zoo)."""

    directory: Path
    name: str
    models: tuple[str, ...]  # in study order
    conv: str  # the deepest model with a Conv2D
    mlp: str  # a model without one


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """zoo:quickstart trained for one epoch, one seed per model (a few seconds)."""
    study = archlab.override_training(archlab.load_study("zoo:quickstart"), epochs=1)
    directory = train(study, tmp_path_factory.mktemp("quickstart"), repeats=1)
    convs = [m for m, spec in study.models.items()
             if any(layer.type == "Conv2D" for layer in spec.layers)]
    return Trained(directory, study.name, tuple(study.models),
                   max(convs, key=lambda m: len(study.models[m].layers)),
                   next(m for m in study.models if m not in convs))


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:data:`DIGITS` trained on mnist-sample."""
    return train(archlab.parse_study(DIGITS), tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def sample() -> archlab.RawDataset:
    return archlab.load_dataset("mnist-sample")


def write_digit(image: np.ndarray, path: Path, rng: np.random.Generator, *, size: int,
                dark_on_light: bool, rgb: bool = False) -> Path:
    """One 28x28 MNIST digit as a PNG a person might make: resized to ``size``, placed off
    centre with margins, in either polarity (dark ink on light paper at random grey levels),
    with a little noise, grey or RGB."""
    a = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC),
                   dtype=np.float64).clip(0, 255) / 255.0
    margins = rng.integers(0, size // 2 + 1, size=4)  # top, bottom, left, right
    a = np.pad(a, ((margins[0], margins[1]), (margins[2], margins[3])))
    if dark_on_light:
        paper, ink = rng.uniform(200, 255), rng.uniform(0, 70)
        a = paper - a * (paper - ink)
    else:
        ground, chalk = rng.uniform(0, 40), rng.uniform(190, 255)
        a = ground + a * (chalk - ground)
    a = np.clip(a + rng.normal(0, 2.0, a.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(a)
    (im.convert("RGB") if rgb else im).save(path)
    return path
