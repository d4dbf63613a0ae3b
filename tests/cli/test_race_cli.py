"""The CLI of corrections and races: `archlab run --correction/--budget`, `archlab results
--correction`, and a raced study's table, text and JSON (crafted stores; one tiny real run)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from archlab.cli import main
from archlab.store import Store
from tests.analysis.crafted import Run, raced_store, write_store

RACE = """
name: race
seed: 3
data: {dataset: mnist-sample, validation: {split: 0.1}}
train: {optimizer: {name: adam}, batch_size: 256, epochs: 1,
        repeats: {min: 2, max: 4, until: decided}}
models:
  mlp: {layers: [Flatten, {Dense: {units: 16, activation: relu}},
                 {Dense: {units: 10, activation: softmax}}]}
  lin: {layers: [Flatten, {Dense: {units: 10, activation: softmax}}]}
"""


@pytest.fixture(autouse=True)
def _torch_threads_kept() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def race_file(tmp_path: Path) -> Path:
    path = tmp_path / "race.yaml"
    path.write_text(RACE)
    return path


@pytest.mark.parametrize(("extra", "expected"), [
    (["--budget", "3"], "--budget: Expected at least the race's first round, 4 runs (each "
                        "model's min seeds), received 3"),
    (["--budget", "soon"], "--budget: Expected a number of runs (60) or of hours (2h, 90min), "
                           "received 'soon'"),
    (["--budget", "10", "--repeats", "3"], "--budget: Expected a study whose models race "
                                           "(repeats: {min, max, until: decided}), received "
                                           "--repeats 3 (fixed seeds)"),
    (["--correction", "bonferroni"], "invalid choice: 'bonferroni'"),
])
def test_bad_race_flags_are_one_line_and_write_nothing(race_file: Path, tmp_path: Path, capsys,
                                                       extra: list[str], expected: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) if "--correction" in extra else _no_raise():
        rc = main(["run", str(race_file), "--out", str(out), "--no-timing", *extra])
        assert rc == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not out.exists()


def test_budget_needs_a_racing_study(tmp_path: Path, capsys) -> None:
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(RACE.replace("repeats: {min: 2, max: 4, until: decided}", "repeats: 2"))
    assert main(["run", str(fixed), "--out", str(tmp_path / "o"), "--budget", "10",
                 "--no-timing"]) == 2
    assert ("--budget: Expected a study whose models race (repeats: {min, max, until: "
            "decided}), received a study with fixed repeats only") in capsys.readouterr().err


class _no_raise:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


# ---------------------------------------------------------------------------------------------
# archlab results --correction

TEN = {f"model{i}": [0.95 - 0.0008 * i + d for d in (0.0, 0.0006, -0.0004, 0.0003)]
       for i in range(10)}


def _ten(directory: Path, correction: str | None = None) -> Path:
    runs = [Run(m, i, acc, seed=10 + i) for m, accs in TEN.items() for i, acc in enumerate(accs)]
    write_store(directory, runs, validation={"split": 0.1})
    if correction is not None:
        with Store(directory) as store:
            store.set_meta(correction=correction)
    return directory


def test_results_correction_flag_and_the_one_a_run_recorded(tmp_path: Path, capsys) -> None:
    study = _ten(tmp_path / "s")
    assert main(["results", str(study), "--format", "json"]) == 0
    holm = json.loads(capsys.readouterr().out)
    assert holm["correction"]["method"] == "holm" and holm["correction"]["family"] == 45
    assert len(holm["pairs"]) == 45 and len(holm["adjacent"]) == 9
    assert main(["results", str(study), "--correction", "bh"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Benjamini-Hochberg's correction over the 45 pairwise comparisons" in text
    assert "BH-adjusted p" in text
    # every model's runs differ from the next by the same 0.08 pp: uncorrected, more claims
    assert main(["results", str(study), "--correction", "none", "--format", "json"]) == 0
    none = json.loads(capsys.readouterr().out)
    assert sum(c["significant"] for c in none["pairs"]) >= sum(
        c["significant"] for c in holm["pairs"])
    # what a run recorded is the default
    recorded = _ten(tmp_path / "t", correction="none")
    assert main(["results", str(recorded)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "no multiple-comparison correction (45 pairwise comparisons" in out


def test_report_correction_flag_for_one_study_and_a_comparison(tmp_path: Path, capsys) -> None:
    """`archlab report --correction` re-corrects what the report states; without it the report
    uses the correction the run recorded (here none), and a comparison defaults to holm."""
    study = _ten(tmp_path / "s", correction="none")
    assert main(["report", str(study), "-o", str(tmp_path / "bh"), "--correction", "bh"]) == 0
    bh = " ".join((tmp_path / "bh" / "report.md").read_text().split())
    assert "Benjamini-Hochberg's correction over the 45 pairwise comparisons" in bh
    assert main(["report", str(study), "-o", str(tmp_path / "recorded")]) == 0
    recorded = " ".join((tmp_path / "recorded" / "report.md").read_text().split())
    assert "no multiple-comparison correction (45 pairwise comparisons" in recorded
    assert "Benjamini-Hochberg" not in recorded
    other = _ten(tmp_path / "t")
    for flag, text in ((["--correction", "bh"], "Benjamini-Hochberg's correction"),
                       ([], "Holm's correction")):
        html = tmp_path / f"compare{len(flag)}.html"
        assert main(["report", str(study), str(other), "-o", str(html), *flag]) == 0
        assert text in " ".join(html.with_suffix(".md").read_text().split())
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["report", str(study), "--correction", "bonferroni"])
    assert "invalid choice: 'bonferroni'" in capsys.readouterr().err


def test_a_run_records_its_correction(race_file: Path, tmp_path: Path, capsys) -> None:
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(RACE.replace("repeats: {min: 2, max: 4, until: decided}", "repeats: 2"))
    out = tmp_path / "o"
    assert main(["run", str(fixed), "--out", str(out), "--threads", "1", "--quiet",
                 "--no-timing", "--no-report", "--correction", "bh"]) == 0
    with Store(out, create=False, readonly=True) as store:
        assert store.meta()["correction"] == "bh"
    assert json.loads((out / "results.json").read_text())["correction"]["method"] == "bh"
    capsys.readouterr()
    assert main(["results", str(out)]) == 0
    assert "Benjamini-Hochberg" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# A raced study's table, text and JSON

def _raced(directory: Path) -> Path:
    """A crafted race (min 3, max 5): c is 10 points below the others in every seed and is
    dropped at the first look; a and b stay level to their 5 seeds."""
    return raced_store(directory, {"a": [0.950, 0.952, 0.949, 0.951, 0.953],
                                   "b": [0.951, 0.950, 0.950, 0.952, 0.951],
                                   "c": [0.851, 0.852, 0.850]},
                       first_seed=20, limits=(3, 5), validation={"split": 0.1})


def test_a_raced_study_at_80_columns(tmp_path: Path, capsys, monkeypatch) -> None:
    study = _raced(tmp_path / "r")
    monkeypatch.setenv("COLUMNS", "80")
    from archlab.cli import console

    monkeypatch.setattr(console.out, "_width", 80, raising=False)
    assert main(["results", str(study)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    header = next(line for line in lines if line.startswith("model"))
    for col in ("test acc", "95% CI", "n", "verdict"):
        assert col in header
    rows = {m: next(line for line in lines if re.match(rf"{m}\s+\d+\.\d\d ± ", line))
            for m in "abc"}  # the table's rows
    assert re.search(r"\s5\s+(best|n\.s\.)\s", rows["a"]) and re.search(r"\s5\s", rows["b"])
    assert re.search(r"\s3\s+worse\s", rows["c"])  # dropped: significantly worse
    joined = " ".join(text.split())
    assert "with α spent over the race's 3 looks" in joined
    assert "c dropped at look 1 with 3 seeds" in joined
    assert "It cost 13 runs, 87% of the 15" in joined
    assert main(["results", str(study), "--format", "json"]) == 0
    race = json.loads(capsys.readouterr().out)["race"]
    assert race["reason"] == "max" and race["seeds"] == {"a": 5, "b": 5, "c": 3}
    assert list(race["drops"]) == ["c"] and race["drops"]["c"]["look"] == 1
    assert race["drops"]["c"]["comparison"]["significant"] is True
    assert [look["seeds"] for look in race["looks"]][0] == {"a": 3, "b": 3, "c": 3}
