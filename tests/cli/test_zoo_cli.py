"""`archlab zoo list|show`, `archlab summary` of one model or a whole study."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

import archlab
from archlab.cli import main


def test_zoo_list_json_has_every_model_with_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo", "list", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    keys = {"study", "model", "total_params", "trainable_params", "non_trainable_params"}
    assert all(keys <= set(r) for r in rows)
    assert all(r["total_params"] == r["trainable_params"] + r["non_trainable_params"]
               for r in rows)
    assert {r["study"] for r in rows} == set(archlab.zoo_names())
    by_ref = {(r["study"], r["model"]): r["total_params"] for r in rows}
    assert by_ref["kernels-padding", "m10"] == 37_987_722
    assert by_ref["keras-mnist-cnn", "cnn"] == 1_199_882


def test_residual_study_is_listed_and_validates(capsys: pytest.CaptureFixture[str]) -> None:
    """The residual study (beyond the notebooks): listed with its Keras counts, and
    `archlab validate zoo:residual` passes with both models."""
    assert main(["zoo", "list", "--format", "json"]) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)
            if r["study"] == "residual"}
    assert sorted(rows) == ["m9", "resnet"]
    assert (rows["resnet"]["total_params"], rows["resnet"]["non_trainable_params"]) == (
        78_426, 672)
    assert rows["resnet"]["ref"] == "zoo:residual:resnet"
    assert rows["m9"]["total_params"] == 3_210_378
    assert main(["validate", "zoo:residual", "--no-timing"]) == 0
    captured = capsys.readouterr()
    assert "ok: 2 model(s) valid" in captured.out and "error" not in captured.err
    assert main(["zoo", "list"]) == 0
    table = capsys.readouterr().out
    cells = [[c.strip() for c in line.split("│")[1:4]] for line in table.splitlines()]
    assert ["residual", "resnet", "78,426"] in cells, table


@pytest.mark.parametrize("name", ["quickstart", "zoo:keras-mnist-cnn", "residual"])
def test_zoo_show_prints_the_file_exactly(name: str, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    assert main(["zoo", "show", name]) == 0
    text = capsys.readouterr().out
    shipped = resources.files("archlab").joinpath("zoo", name.removeprefix("zoo:") + ".yaml")
    assert text == shipped.read_text(encoding="utf-8")
    copy = tmp_path / "mine.yaml"  # what a user does with it: copy, then load
    copy.write_text(text)
    assert archlab.load_study(copy).models.keys() == archlab.load_study(
        "zoo:" + name.removeprefix("zoo:")).models.keys()


def test_zoo_show_unknown_name_is_one_line_with_a_hint(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo", "show", "quickstrat"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("error: zoo:quickstrat: Expected a built-in study, received "
                            "'zoo:quickstrat' (did you mean 'zoo:quickstart'?)\n")


def test_summary_of_one_model_is_keras_style(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "zoo:keras-mnist-cnn:cnn"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert text.count('Model: "') == 1
    assert "Layer (type)" in text and "Output Shape" in text and "Param #" in text
    assert any("conv2d_1 (Conv2D)" in ln and "(None, 26, 26, 32)" in ln and "320" in ln
               for ln in lines)
    assert any("dense_1 (Dense)" in ln and "1,179,776" in ln for ln in lines)
    assert "Total params: 1,199,882" in text
    assert "Non-trainable params: 0" in text


def test_summary_of_a_zoo_study_prints_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "zoo:kernels-padding"]) == 0
    text = capsys.readouterr().out
    models = list(archlab.load_study("zoo:kernels-padding").models)
    assert [ln[len('Model: "'):-1] for ln in text.splitlines()
            if ln.startswith('Model: "')] == models
    assert text.count("Total params:") == len(models)
    assert "Total params: 37,987,722" in text  # m10


STUDY = ("name: s\nmodels:\n  a:\n    layers: [Flatten, {Dense: {units: 10, activation: "
         "softmax}}]\n  b:\n    layers: [Flatten, {Dense: {units: 32}}, {Dense: {units: 10, "
         "activation: softmax}}]\n")


def test_summary_of_a_study_file_and_of_one_of_its_models(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(STUDY)
    assert main(["summary", str(f)]) == 0
    text = capsys.readouterr().out
    assert 'Model: "a"' in text and 'Model: "b"' in text
    assert "Total params: 7,850" in text and "Total params: 25,450" in text
    assert main(["summary", f"{f}:b"]) == 0
    text = capsys.readouterr().out
    assert 'Model: "a"' not in text and "Total params: 25,450" in text


@pytest.mark.parametrize("ref,expected", [
    ("zoo:kernels-padding:nope", "Expected a model of study 'kernels-padding'"),
    ("zoo:a:b:c", "Expected zoo:STUDY or zoo:STUDY:MODEL"),
    ("missing.yaml", "missing.yaml: No such study file"),
    ("missing.yaml:m", "missing.yaml: No such study file"),
])
def test_summary_errors_are_one_line(ref: str, expected: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", ref]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1


def test_quickstart_is_a_small_study_with_repeats() -> None:
    """The first study a user runs: CNNs smaller than the MLP, 3 seeds, seconds of compute."""
    study = archlab.load_study("zoo:quickstart")
    built = archlab.validate_study(study)
    assert study.data.dataset == "mnist-sample" and study.train.repeats >= 3
    mlps = [m for m in built if not any(r.layer == "Conv2D" for r in built[m].rows)]
    cnns = [m for m in built if m not in mlps]
    assert len(mlps) == 1 and len(cnns) == 2
    assert all(built[c].total_params < built[mlps[0]].total_params / 2 for c in cnns)
    # Training compute of the whole study (a training step costs ~3 forward passes): about
    # 60 G multiply-adds, which 2 CPU cores train in about 20 s (small convolutions run far
    # below peak). The old quickstart's conv3 alone would have cost 157 G with 3 repeats.
    n_train = 4500
    total = sum(3 * b.macs_per_sample * n_train * study.train_for(m).epochs
                * study.train_for(m).repeats for m, b in built.items())
    assert total < 80e9


@pytest.mark.slow
def test_quickstart_ranks_the_cnns_above_the_mlp(tmp_path: Path) -> None:
    """What the quickstart teaches (trains its 9 runs: ~20 s on 2 idle cores)."""
    out = tmp_path / "qs"
    # One torch thread: on a machine shared with other jobs, two threads on two cores wait on
    # each other and the study takes minutes instead of seconds.
    assert main(["run", "zoo:quickstart", "--out", str(out), "--quiet", "--no-report",
                 "--threads", "1"]) == 0
    accuracy = {r.model: r.metrics["test_accuracy"].mean
                for r in archlab.collect_results(out).models}
    assert min(accuracy["conv2"], accuracy["conv3"]) > accuracy["mlp32"] + 0.01, accuracy
