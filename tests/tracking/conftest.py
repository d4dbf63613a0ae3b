"""One small trained study for the exporters: a swept model (two points), a plain CNN, and an
Optuna search (two trials and a confirmation run), one epoch each on the embedded sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import archlab

STUDY: dict[str, Any] = {
    "name": "track",
    "seed": 5,
    "data": {"dataset": "mnist-sample", "validation": {"split": 0.1}},
    "train": {"optimizer": {"name": "adam"}, "batch_size": 256, "epochs": 2, "repeats": 1},
    "models": {
        "mlp": {"layers": ["Flatten", {"Dense": {"units": 8, "activation": "relu"}},
                           {"Dense": {"units": 10, "activation": "softmax"}}],
                "sweep": {"layers.1.Dense.units": [4, 8]}},
        "cnn": {"layers": [{"Conv2D": {"filters": 2, "kernel_size": 3, "activation": "relu"}},
                           {"MaxPooling2D": {"pool_size": 2}}, "Flatten",
                           {"Dense": {"units": 10, "activation": "softmax"}}]},
        "s": {"layers": ["Flatten", {"Dense": {"units": 8, "activation": "relu"}},
                         {"Dense": {"units": 10, "activation": "softmax"}}]},
    },
    "search": {"base": "s", "space": {"layers.1.Dense.units": {"int": [4, 16]}},
               "trials": 2, "sampler": "random", "pruner": "none",
               "confirm": {"top": 1, "repeats": 2}},
}


@pytest.fixture(scope="package")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained study's directory (read-only for the tests: copy it to change it)."""
    out = tmp_path_factory.mktemp("tracking") / "track"
    outcome = archlab.run_study(archlab.load_study(STUDY), out, threads=1, progress=None)
    assert not outcome.failed and not outcome.interrupted
    return out
