"""Full-MNIST reproduction (slow: ~20-40 min on 2 CPU cores). Run with `pytest -m slow`."""

from __future__ import annotations

from pathlib import Path

import pytest

from archlab import collect_results, load_study, run_study

MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


@pytest.mark.slow
def test_keras_mnist_cnn_reaches_99_percent(tmp_path: Path) -> None:
    if not MNIST.exists():
        pytest.skip(f"full MNIST not found at {MNIST}")
    study = load_study("zoo:keras-mnist-cnn")
    run_study(study, tmp_path, data_dir=MNIST)
    (cnn,) = collect_results(tmp_path).models
    assert cnn.n == 1
    assert cnn.metrics["test_accuracy"].mean >= 0.990  # Keras's example reports 99.25 %
