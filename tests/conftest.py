"""Shared fixtures: the real MNIST beside the checkout, and a tiny two-model study."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import archlab

#: The real MNIST (four gzip'd IDX files) that CI places beside the checkout.
MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"

#: Two small models on the embedded sample, two epochs: a run takes about a second.
TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "data": {"dataset": "mnist-sample", "validation": {"split": 0.1}},
    "train": {"optimizer": {"name": "adam"}, "batch_size": 128, "epochs": 2},
    "models": {
        "mlp": {"layers": ["Flatten", {"Dense": {"units": 16, "activation": "relu"}},
                           {"Dense": {"units": 10, "activation": "softmax"}}]},
        "cnn": {"layers": [{"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
                           {"MaxPooling2D": {"pool_size": 2}},
                           {"Dropout": {"rate": 0.25}},
                           "Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]},
    },
}


@pytest.fixture
def mnist_dir() -> Path:
    """The real MNIST files; tests that need them skip where they are absent."""
    if not MNIST_DIR.is_dir():
        pytest.skip(f"real MNIST not found at {MNIST_DIR}")
    return MNIST_DIR


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the test: on a shared machine more only wait on each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config() -> dict[str, Any]:
    """A fresh deep copy of :data:`TINY` to modify."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_study(tiny_config: dict[str, Any]) -> archlab.Study:
    """:data:`TINY` parsed."""
    return archlab.parse_study(tiny_config)
