"""`archlab results` and `archlab report` as a user meets them: on a study directory, a study
file or zoo:NAME, at 80 columns, on a read-only study, and interrupted by Ctrl-C.

The studies are crafted stores (tests/analysis/crafted.py): nothing trains here."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from archlab.cli import main
from tests.analysis.crafted import Run, write_store

LONG = "wide-conv-d25-bn-l2"  # 19 characters: longer than the old table left for names
MODELS = {"k3-d25": [0.9812, 0.9790, 0.9833], "k3-d50": [0.9861, 0.9849, 0.9870],
          LONG: [0.9702, 0.9688, 0.9715]}


def _study(directory: Path, name: str = "crafted") -> Path:
    runs = [Run(model, i, acc, seed=100 + i, seconds=[12.5, 13.1, 40.0][i],
                environment={"load_average": 0.4, "cpu_count": 2})
            for model, accs in MODELS.items() for i, acc in enumerate(accs)]
    return write_store(directory, runs, study=name, validation={"split": 0.1})


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return _study(tmp_path / "study")


def _cli(*args: str, columns: int | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "archlab", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300, check=False)


# ---------------------------------------------------------------------------------------------
# The table at 80 columns


def _table_at(study: Path, columns: int) -> str:
    """`archlab results` at ``columns``: a real process with COLUMNS at 80, else the table
    printed by a rich console of that width."""
    if columns == 80:
        done = _cli("results", str(study), columns=columns)
        assert done.returncode == 0, done.stderr
        return done.stdout
    from rich.console import Console

    from archlab.analysis.results import collect
    from archlab.report.terminal import rich_table

    console = Console(width=columns, record=True, file=io.StringIO())
    console.print(rich_table(collect(study), width=columns))
    return console.export_text()


@pytest.mark.parametrize("columns", [80, 100, 200])
def test_results_table_fits_and_shows_the_essentials_in_full(study: Path, columns: int) -> None:
    text = _table_at(study, columns)
    lines = text.splitlines()
    assert all(len(line) <= columns for line in lines), max(lines, key=len)
    assert "…" not in text
    header = next(line for line in lines if line.startswith("model"))
    # the essentials at any width: model, test accuracy with its CI, n and the verdict
    for col in ("test acc", "95% CI", "n", "verdict", "time (s)"):
        assert col in header
    # params only where they fit beside a 19-character name (--wide and results.md have them)
    assert ("params" in header) == (columns > 80)
    if columns == 80:
        assert "params, validation, train and architecture columns: --wide" in text
    verdict = {"k3-d50": "best", "k3-d25": "worse", LONG: "worse"}  # Holm over 3 pairs
    for model, accs in MODELS.items():
        row = next(line for line in lines if line.startswith(model))  # the full name
        mean = sum(accs) / 3 * 100
        assert re.search(rf"{mean:.2f} ± \d\.\d\d%", row), row
        assert re.search(r"\d\d\.\d\d to \d\d\.\d\d%", row), row  # the CI, whole
        assert " 3 " in row and f" {verdict[model]} " in row
        assert ("7,850" in row) == (columns > 80)
        assert row.rstrip().endswith("21.9")  # the mean training time, 21.87 s
    assert "Holm's correction over the 3 pairwise comparisons" in text
    assert "val acc" not in header  # the other columns are behind --wide
    assert "--wide" in text


def test_wide_table_has_every_column_and_explains_train_acc(study: Path, capsys) -> None:
    assert main(["results", str(study), "--wide"]) == 0
    text = capsys.readouterr().out
    for col in ("val acc", "val loss", "test loss", "train acc (eval)", "train loss (eval)",
                "kernels", "pooling"):
        assert col in text
    assert "train loss/acc (eval)" in text and "progress bar" in text
    assert "statistics (test accuracy, over-fitting)" in text


def test_results_files_carry_every_column(study: Path, capsys) -> None:
    assert main(["results", str(study)]) == 0
    assert f"tables: {study}/results.md" in capsys.readouterr().out
    md = (study / "results.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert header.startswith("| model | test acc | test acc 95% CI | n | verdict | params | "
                             "time (s) |")
    assert "train acc (eval)" in header and "progress bar" in md
    csv_header = (study / "results.csv").read_text().splitlines()[0].split(",")
    assert {"model", "test_accuracy_mean", "test_accuracy_ci_low", "train_accuracy_mean",
            "train_seconds_median", "kernels"} <= set(csv_header)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_machine_formats_on_stdout(study: Path, capsys, fmt: str) -> None:
    assert main(["results", str(study), "--format", fmt]) == 0
    text = capsys.readouterr().out
    if fmt == "json":
        data = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
        assert [m["model"] for m in data["models"]] == list(MODELS)
    else:
        assert text.splitlines()[0].startswith("model,n,")
        assert len(text.splitlines()) == 1 + len(MODELS)


# ---------------------------------------------------------------------------------------------
# What `results` and `report` accept


def test_results_of_a_study_file_reads_its_default_directory(tmp_path: Path, monkeypatch,
                                                             capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-study.yaml").write_text(
        "name: kernels\nmodels:\n  k3:\n    layers: [Flatten, {Dense: {units: 10, "
        "activation: softmax}}]\n")
    assert main(["results", "my-study.yaml"]) == 2
    assert "no results for study 'kernels' in its default directory archlab-runs/kernels" in \
        capsys.readouterr().err
    _study(tmp_path / "archlab-runs" / "kernels", name="kernels")
    assert main(["results", "my-study.yaml"]) == 0
    text = capsys.readouterr().out
    assert "k3-d25" in text and "tables: archlab-runs/kernels/results.md" in text
    assert (tmp_path / "archlab-runs" / "kernels" / "results.json").is_file()
    assert main(["report", "my-study.yaml"]) == 0
    assert (tmp_path / "archlab-runs" / "kernels" / "report.html").is_file()


def test_results_of_a_zoo_study(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _study(tmp_path / "archlab-runs" / "quickstart", name="quickstart")
    assert main(["results", "zoo:quickstart"]) == 0
    assert "k3-d50" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["results", "nowhere"], ["report", "nowhere"],
                                  ["results", "zoo:no-such-study"], ["report", "missing.yaml"],
                                  ["results", "."]])
def test_bad_sources_are_one_line_errors(tmp_path: Path, monkeypatch, capsys,
                                         args: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err


def test_out_naming_a_file_is_refused(study: Path, tmp_path: Path, capsys) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    for command in ("results", "report"):
        assert main([command, str(study), "-o", str(f)]) == 2
        assert capsys.readouterr().err == f"error: -o {f}: exists and is not a directory\n"


# ---------------------------------------------------------------------------------------------
# A read-only study


@contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make ``directory`` and everything under it read-only, even for root (chattr +i; skip
    where the filesystem lacks it)."""
    paths = sorted(directory.rglob("*"), reverse=True) + [directory]
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True,
                              check=False)
        undo = ["chattr", "-i", *map(str, paths)]
        if done.returncode != 0:
            subprocess.run(undo, capture_output=True, check=False)
            pytest.skip(f"chattr +i unsupported here: {done.stderr.decode().strip()}")
    else:
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        with pytest.raises(OSError):
            (directory / "probe").touch()
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(undo, check=True)
        else:
            for p, mode in modes.items():
                p.chmod(mode)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_read_only_study_results_and_report_elsewhere(study: Path, tmp_path: Path,
                                                     capsys) -> None:
    before = _snapshot(study)
    out = tmp_path / "elsewhere"
    with read_only(study):
        assert main(["results", str(study)]) == 0
        done = capsys.readouterr()
        assert "k3-d25" in done.out and "tables:" not in done.out
        assert "is not writable" in done.err and "use -o DIR" in done.err

        assert main(["results", str(study), "-o", str(out)]) == 0
        assert f"tables: {out}/results.md" in capsys.readouterr().out
        assert json.loads((out / "results.json").read_text())["study"] == "crafted"

        assert main(["report", str(study)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {study}: cannot write the report there")
        assert err.count("\n") == 1

        assert main(["report", str(study), "-o", str(out)]) == 0
        assert capsys.readouterr().out.split() == [str(out / "report.html"),
                                                   str(out / "report.md")]
        assert "k3-d25" in (out / "report.html").read_text()
        assert any((out / "report_files").glob("*.png"))
    assert _snapshot(study) == before  # not a byte written into the study


# ---------------------------------------------------------------------------------------------
# Ctrl-C while the report is written

SIGINT_MID_WRITE = """
import os, signal, sys
calls = []
real = os.replace
def replace(src, dst):
    calls.append(dst)
    if len(calls) == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, delivered mid-write
    real(src, dst)
os.replace = replace
from archlab.cli import main
sys.exit(main(["report", sys.argv[1]]))
"""


@pytest.mark.parametrize("at", ["first png", "report.html"])
def test_sigint_while_writing_the_report_leaves_no_temporary_file(study: Path,
                                                                  at: str) -> None:
    assert main(["report", str(study)]) == 0
    before = (study / "report.html").read_bytes()
    pngs = sorted(p.name for p in (study / "report_files").iterdir())
    assert len(pngs) == 3 + 3  # a curves plot per model; overlay, params and time scatter
    call = {"first png": 1, "report.html": len(pngs) + 1}[at]
    done = subprocess.run([sys.executable, "-c", SIGINT_MID_WRITE, str(study), str(call)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in done.stderr
    leftovers = [p for p in study.rglob(".*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert (study / "report.html").read_bytes() == before  # the previous report is whole
    assert sorted(p.name for p in (study / "report_files").iterdir()) == pngs
