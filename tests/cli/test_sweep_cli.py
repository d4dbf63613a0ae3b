"""Sweeps from the command line: `validate` counts the points, a bad sweep is one line (exit
2), and an 8-point grid x 3 repeats trains on mnist-sample with every point in the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archlab.cli import main

GRID = """
name: grid
seed: 1
data: {dataset: mnist-sample, validation: {split: 0.1}}
train: {optimizer: {name: adam}, batch_size: 128, epochs: 1, repeats: 3}
models:
  mlp:
    layers: [Flatten, {Dense: {units: 16, activation: relu}},
             {Dense: {units: 10, activation: softmax}}]
    sweep:
      train.batch_size: [128, 256]
      train.optimizer.learning_rate: [0.001, 0.01]
      layers.1.Dense.units: [8, 16]
  lin:
    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]
"""

POINTS = [f"mlp[batch_size={b},learning_rate={lr},units={u}]"
          for b in (128, 256) for lr in (0.001, 0.01) for u in (8, 16)]


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_validate_prints_the_expanded_count_and_every_point(
        grid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(["validate", str(grid), "--no-timing"], capsys)
    assert (rc, err) == (0, "")
    assert "ok: 9 model(s) valid (mlp: sweep of 8)" in out
    flat = "".join(out.split())  # the table may fold long names onto two lines
    for name in POINTS:
        assert name in flat, name


def test_validate_projects_the_time_of_every_point(
        grid: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(tmp_path / "cache"))
    rc, out, err = _run(["validate", str(grid), "--models", "mlp"], capsys)
    assert rc == 0, err
    assert "projected wall time on this machine" in " ".join(out.split())
    assert "ok: 8 model(s) valid (mlp: sweep of 8)" in out
    assert "error" not in err  # a busy machine may warn that the projection is unsure


def test_models_takes_a_point_name_with_its_commas(
        grid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(["validate", str(grid), "--no-timing", "--models",
                         f"{POINTS[0]}, lin"], capsys)
    assert (rc, err) == (0, "")
    assert "ok: 2 model(s) valid (mlp: sweep of 1)" in out


@pytest.mark.parametrize(("sweep", "expected"), [
    ("{layers.7.Dense.units: [8]}", "model 'mlp', sweep 'layers.7.Dense.units': no layer 7"),
    ("{layers.1.Dropout.rate: [0.5]}", "layer 1 is Dense, received 'Dropout'"),
    ("{train.batch_size: 64}", "Expected a list of values"),
    ("{train.batch_size: [64, 0]}", "model 'mlp[batch_size=0]', field 'train.batch_size'"),
])
def test_a_bad_sweep_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            sweep: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    text = GRID.split("    sweep:")[0] + f"    sweep: {sweep}\n"
    path.write_text(text)
    rc, out, err = _run(["validate", str(path), "--no-timing"], capsys)
    assert rc == 2 and out == "", (rc, out, err)
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: "), err
    assert expected in err, err


def test_a_grid_of_8_points_x_3_repeats_runs_with_cis(
        grid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    rc, out, err = _run(["run", str(grid), "--models", "mlp", "--out", str(out_dir),
                         "--no-timing", "--quiet", "--threads", "1"], capsys)
    assert rc == 0, err
    flat = "".join(out.split())
    for name in POINTS:
        assert name in flat, name  # the terminal table shows every point
    results = json.loads((out_dir / "results.json").read_text())
    rows = {m["model"]: m for m in results["models"]}
    assert sorted(rows) == sorted(POINTS)
    for name, row in rows.items():
        assert row["n"] == 3, name
        low, high = row["test_accuracy_ci_low"], row["test_accuracy_ci_high"]
        assert low < row["test_accuracy_mean"] < high, name
    markdown = (out_dir / "results.md").read_text()
    assert all(name in markdown for name in POINTS)
    # results.md pivots on each swept field too (4 points and 12 runs per value).
    pivoted = markdown[markdown.index("## By swept field (test accuracy)"):]
    for path, value in (("train.batch_size", 256), ("train.optimizer.learning_rate", 0.001),
                        ("layers.1.Dense.units", 16)):
        assert f"### {path}" in pivoted
        assert any(line.startswith(f"| {value} | 4 | 12 | ") and " to " in line
                   for line in pivoted.splitlines()), (path, pivoted)
    assert (out_dir / "report.html").is_file()
    # The store keeps each point's full values in its runs' configs.
    rc, out, err = _run(["results", str(out_dir), "--format", "json"], capsys)
    assert rc == 0 and len(json.loads(out)["models"]) == 8
    # Pivot: test accuracy per value of a swept field, runs of its 4 points pooled (n = 12).
    rc, out, err = _run(["results", str(out_dir), "--pivot", "train.batch_size", "--pivot",
                         "layers.1.Dense.units"], capsys)
    assert rc == 0, err
    pivots = out[out.index("test accuracy by train.batch_size"):]
    lines = [line.split() for line in pivots.splitlines()]
    for value in ("128", "256", "8", "16"):
        row = next(words for words in lines if words[:1] == [value])
        assert row[1:3] == ["4", "12"], row  # 4 points, 12 runs
        assert row[4] == "±" and row[-2] == "to" and row[-1].endswith("%"), row  # mean ± std, CI
    assert "test accuracy by layers.1.Dense.units" in out
    rc, out, err = _run(["results", str(out_dir), "--pivot", "train.nope"], capsys)
    assert rc == 2 and out == "" and err.count("\n") == 1, (out, err)
    assert err.startswith("error: --pivot train.nope: no model of study 'grid' has this field")
