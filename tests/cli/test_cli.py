"""The CLI as a user meets it: zoo list, summary, validate, dry-run compute projections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archlab import build_model, load_study
from archlab.cli import main


def test_zoo_list_json_has_every_model_with_counts(capsys) -> None:
    assert main(["zoo", "list", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    keys = {"study", "model", "total_params", "trainable_params", "non_trainable_params"}
    assert all(keys <= set(r) for r in rows)
    assert all(r["total_params"] == r["trainable_params"] + r["non_trainable_params"]
               for r in rows)
    studies = {r["study"] for r in rows}
    assert {"conv-depth", "conv-stacks", "kernels-padding", "depth-l2", "mlp-hparams",
            "keras-mnist-cnn", "quickstart"} <= studies
    by_ref = {(r["study"], r["model"]): r["total_params"] for r in rows}
    assert by_ref["kernels-padding", "m10"] == 37_987_722
    assert by_ref["keras-mnist-cnn", "cnn"] == 1_199_882


def test_summary_is_keras_style(capsys) -> None:
    assert main(["summary", "zoo:keras-mnist-cnn:cnn"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert "Layer (type)" in text and "Output Shape" in text and "Param #" in text
    assert any("conv2d_1 (Conv2D)" in ln and "(None, 26, 26, 32)" in ln and "320" in ln
               for ln in lines)
    assert any("dense_1 (Dense)" in ln and "1,179,776" in ln for ln in lines)
    assert "Total params: 1,199,882" in text
    assert "Non-trainable params: 0" in text


def test_summary_of_a_study_file_model(tmp_path: Path, capsys) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("name: s\nmodels:\n  a:\n    layers: [Flatten, {Dense: {units: 10, "
                 "activation: softmax}}]\n")
    assert main(["summary", f"{f}:a"]) == 0
    assert "Total params: 7,850" in capsys.readouterr().out


def test_dry_run_prints_compute_and_trains_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    assert main(["run", "zoo:quickstart", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "MACs/sample" in text and "MACs/epoch" in text and "projected" in text
    assert not out.exists()


def test_heavy_models_are_visible_before_training() -> None:
    # Notebook 003's m6 and m10 cost ~14x and ~90x the Keras mnist-cnn per sample.
    cnn = build_model(load_study("zoo:keras-mnist-cnn"), "cnn", device="meta").macs_per_sample
    kp = load_study("zoo:kernels-padding")
    m6 = build_model(kp, "m6", device="meta").macs_per_sample
    m10 = build_model(kp, "m10", device="meta").macs_per_sample
    assert m6 / cnn == pytest.approx(14, rel=0.1)
    assert m10 / cnn == pytest.approx(90, rel=0.05)
    # Hand-computed: conv 3x3x1x32 on 26x26 + 3x3x32x64 on 24x24 + dense 9216x128 + 128x10.
    assert cnn == 26 * 26 * 32 * 9 + 24 * 24 * 64 * 9 * 32 + 9216 * 128 + 128 * 10


def test_results_on_a_directory_without_store_is_a_one_line_error(tmp_path: Path,
                                                                   capsys) -> None:
    assert main(["results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("device,expected", [
    ("tpu", "Expected cpu, cuda, cuda:N or auto, received 'tpu'"),
    ("cuda", "sees no CUDA device"),
])
def test_bad_or_missing_device_is_a_one_line_error(device: str, expected: str, tmp_path: Path,
                                                   capsys) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["run", "zoo:quickstart", "--device", device, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_auto_device_is_cpu_without_cuda() -> None:
    import torch

    from archlab.run import resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
