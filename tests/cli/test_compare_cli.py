"""`archlab results DIR1 DIR2 ...` and `archlab report DIR1 DIR2 ... -o OUT` as a user meets
them: crafted stores for the table's shape and the refusals, and real (tiny) studies on the
embedded mnist-sample for the examples: two data preparations of the same model, and the same
study before and after a change (and mnist against fashion-mnist where that is installed)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from archlab.cli import main
from tests.analysis.crafted import accuracy_store, snapshot

_store = functools.partial(accuracy_store, first_seed=20)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    a = _store(tmp_path / "a", {"cnn": [0.97, 0.972, 0.971], "mlp": [0.93, 0.931, 0.929]},
               study="mnist-study")
    b = _store(tmp_path / "b", {"cnn": [0.981, 0.983, 0.982]}, study="bigger")
    return a, b


def test_results_of_two_studies_is_one_table(pair: tuple[Path, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    before = [snapshot(d) for d in pair]
    assert main(["results", str(pair[0]), str(pair[1])]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[0].startswith("comparison: mnist-study, bigger")
    header = next(line for line in lines if line.lstrip().startswith("study"))
    for col in ("model", "test acc", "95% CI", "n"):
        assert col in header
    assert "dataset" not in header and "dataset: mnist (every model)" in captured.out
    flat = "".join(captured.out.split())
    for name in ("mnist-study/cnn", "bigger/cnn", "mlp"):
        assert name in flat
    assert "bigger/cnnbeatsmnist-study/cnnby1.10pp" in flat
    assert [snapshot(d) for d in pair] == before  # nothing written into either study


def test_machine_formats_and_out(pair: tuple[Path, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", *map(str, pair), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(m["study"], m["model"], m["dataset"], m["n"]) for m in data["models"]] == [
        ("mnist-study", "mnist-study/cnn", "mnist", 3), ("mnist-study", "mlp", "mnist", 3),
        ("bigger", "bigger/cnn", "mnist", 3)]
    assert main(["results", *map(str, pair), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("study,model,model_name,dataset,")
    out = tmp_path / "cmp"
    assert main(["results", *map(str, pair), "-o", str(out), "--wide"]) == 0
    text = capsys.readouterr().out
    assert f"tables: {out}/results.md" in text and "val loss" in text
    assert "| study | model | dataset | test acc |" in (out / "results.md").read_text()
    assert json.loads((out / "results.json").read_text())["same_dataset"] is True


def test_different_datasets_warn_on_stderr(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    a = _store(tmp_path / "a", {"cnn": [0.98, 0.981]}, study="digits")
    b = _store(tmp_path / "b", {"cnn": [0.88, 0.885]}, study="clothes",
               dataset="fashion-mnist")
    assert main(["results", str(a), str(b)]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("warning: The compared runs use different datasets "
                                   "(mnist: digits/cnn; fashion-mnist: clothes/cnn).")
    assert captured.err.count("\n") == 1
    assert "fashion-mnist" in captured.out and "beats" not in captured.out


@pytest.mark.parametrize(("args", "expected"), [
    (["report", "{a}", "{b}"], "report of 2 studies: Expected -o FILE.html or -o DIR"),
    (["results", "{a}", "{b}", "--pivot", "train.batch_size"],
     "--pivot train.batch_size: Expected one study to pivot, received 2"),
    (["results", "{a}", "{a}"], "Expected each study directory once"),
    (["results", "{a}", "nowhere"], "nowhere: no such study directory or study file"),
    (["report", "{a}", "{b}", "-o", "{a}/cmp.html"],
     "-o {a}/cmp.html: Expected a place outside the compared studies"),
    (["results", "{a}", "{b}", "-o", "{b}"], "-o {b}: Expected a place outside"),
])
def test_refusals_are_one_line(pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
                               args: list[str], expected: str) -> None:
    argv = [a.format(a=pair[0], b=pair[1]) for a in args]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured
    assert captured.err.startswith("error: "), captured.err
    assert expected.format(a=pair[0], b=pair[1]) in captured.err, captured.err


def test_report_of_two_studies_to_a_file(pair: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    before = [snapshot(d) for d in pair]
    target = tmp_path / "new" / "compare.html"
    assert main(["report", *map(str, pair), "-o", str(target)]) == 0
    assert capsys.readouterr().out.split() == [str(target), str(target.with_suffix(".md"))]
    assert "mnist-study/cnn" in target.read_text()
    assert any((target.parent / "compare_files").glob("*.png"))
    assert [snapshot(d) for d in pair] == before


# ---------------------------------------------------------------------------------------------
# Real studies on the embedded sample (about a second a run)

TINY_MLP = {"layers": ["Flatten", {"Dense": {"units": 16, "activation": "relu"}},
                       {"Dense": {"units": 10, "activation": "softmax"}}]}


def _study(tmp_path: Path, name: str, data: dict[str, Any], models: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "seed": 5, "data": data,
        "train": {"optimizer": {"name": "adam"}, "batch_size": 128, "epochs": 1,
                  "repeats": 2},
        "models": models}))
    out = tmp_path / "runs" / name
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-report",
                 "--no-timing", "--threads", "1"]) == 0
    return out


def test_two_preparations_and_a_change_on_mnist_sample(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = {"dataset": "mnist-sample", "validation": {"split": 0.1}}
    scaled = _study(tmp_path, "scaled", sample, {"mlp": TINY_MLP})
    normed = _study(tmp_path, "normed", {**sample, "preprocessing": {"normalize": {}}},
                    {"mlp": TINY_MLP})
    wider = {"layers": [TINY_MLP["layers"][0], {"Dense": {"units": 32, "activation": "relu"}},
                        TINY_MLP["layers"][2]]}
    changed = _study(tmp_path, "changed", sample, {"mlp": wider})
    capsys.readouterr()
    assert main(["results", str(scaled), str(normed), str(changed), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [m["model"] for m in data["models"]] == ["scaled/mlp", "normed/mlp", "changed/mlp"]
    assert data["same_dataset"] is True and data["warning"] is None
    assert data["notes"] == [
        "The data settings on mnist-sample differ: scaled, changed: x / 255, 10% validation "
        'split; normed: keras normalize {"axis": 1, "order": 2}, 10% validation split. Test '
        "accuracies are on the same test set."]
    (ranking,) = data["rankings"].values()
    assert len(ranking) == 2 and all(r["method"] == "paired" for r in ranking)  # seeds shared
    for m in data["models"]:
        assert m["n"] == 2 and m["test_accuracy_ci_low"] < m["test_accuracy_mean"]
    out = tmp_path / "report"
    assert main(["report", str(scaled), str(changed), "-o", str(out)]) == 0
    text = (out / "compare.html").read_text()
    assert "scaled/mlp" in text and "changed/mlp" in text
    assert len(list((out / "compare_files").glob("*.png"))) == 2


def test_mnist_against_fashion_mnist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from archlab.data.loader import locate_dataset
    from archlab.errors import DataError

    try:
        found = locate_dataset("fashion-mnist", download=False).directory is not None
    except DataError:
        found = False
    if not found:
        pytest.skip("fashion-mnist is not installed (scripts/setup.sh installs Debian's)")
    digits = _study(tmp_path, "digits", {"dataset": "mnist-sample"}, {"mlp": TINY_MLP})
    clothes = _study(tmp_path, "clothes", {"dataset": "fashion-mnist"}, {"mlp": TINY_MLP})
    capsys.readouterr()
    assert main(["results", str(digits), str(clothes)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ("warning: The compared runs use different datasets (mnist-sample: "
                            "digits/mlp; fashion-mnist: clothes/mlp). Test accuracies on "
                            "different test sets are not comparable, and no significance "
                            "test is run across datasets.\n")
    assert "beats" not in captured.out and "ahead" not in captured.out
