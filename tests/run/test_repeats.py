"""Repeats across seeds: 3 models x 5 repeats on mnist-sample, checked against scipy by hand.

Repeat i of every model uses the same seed (common random numbers), so the comparisons are
paired t-tests: scipy's ttest_rel on the values matched by seed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from archlab.cli import main
from archlab.store import Store

STUDY = """
name: three-by-five
data: {dataset: mnist-sample, validation: {split: 0.1}}
train: {optimizer: {name: adam}, batch_size: 64, epochs: 1}
models:
  wide:
    layers:
      - Flatten
      - Dense: {units: 64, activation: relu}
      - Dense: {units: 10, activation: softmax}
  narrow:
    layers:
      - Flatten
      - Dense: {units: 8, activation: relu}
      - Dense: {units: 10, activation: softmax}
  linear:
    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]
"""


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("repeats")
    (tmp / "s.yaml").write_text(STUDY)
    return tmp / "out", str(tmp / "s.yaml")


def test_three_models_five_repeats_match_scipy(study_dir, capsys) -> None:
    out, path = study_dir
    assert main(["run", path, "--repeats", "5", "--out", str(out), "--quiet",
                 "--no-report"]) == 0
    printed = capsys.readouterr().out
    with Store(out) as store:
        runs = store.runs()
    acc: dict[str, list[float]] = {}
    by_seed: dict[str, dict[int, float]] = {}
    for r in runs:
        assert r.status == "finished"
        acc.setdefault(r.model, []).append(r.metrics["test_accuracy"])
        by_seed.setdefault(r.model, {})[r.seed] = r.metrics["test_accuracy"]
    assert {m: len(v) for m, v in acc.items()} == {"wide": 5, "narrow": 5, "linear": 5}
    # Common random numbers: five seeds, the same five for every model, one per repeat.
    seeds = {r.seed for r in runs}
    assert len(seeds) == 5
    assert all(set(v) == seeds for v in by_seed.values())
    assert all(r.seed == next(q.seed for q in runs if q.repeat == r.repeat) for r in runs)

    table = {row["model"]: row for row in json.loads((out / "results.json").read_text())["models"]}
    for model, values in acc.items():
        x = np.array(values)
        mean, sd = x.mean(), x.std(ddof=1)
        lo, hi = stats.t.interval(0.95, df=len(x) - 1, loc=mean, scale=sd / np.sqrt(len(x)))
        row = table[model]
        assert row["n"] == 5
        assert row["test_accuracy_mean"] == pytest.approx(mean, abs=1e-12)
        assert row["test_accuracy_std"] == pytest.approx(sd, abs=1e-12)
        assert row["test_accuracy_ci_low"] == pytest.approx(lo, abs=1e-12)
        assert row["test_accuracy_ci_high"] == pytest.approx(hi, abs=1e-12)
        # The terminal table shows mean ± std in percent, and the CI.
        line = next(ln for ln in printed.splitlines() if ln.split()[:1] == [model] and "±" in ln
                    and " to " in ln)  # the statistics table's row
        ci = re.search(r"(-?[\d.]+)%? to (-?[\d.]+)%", line)
        assert ci, line
        lo_shown, hi_shown = float(ci[1]), float(ci[2])
        assert (lo_shown, hi_shown) == pytest.approx((lo * 100, hi * 100), abs=0.006)

    best = max(acc, key=lambda m: np.mean(acc[m]))
    ranking = json.loads((out / "results.json").read_text())["ranking"]
    assert {c["other"] for c in ranking} == set(acc) - {best}
    order = sorted(seeds)
    for c in ranking:
        assert c["best"] == best and c["method"] == "paired"
        t = stats.ttest_rel([by_seed[best][s] for s in order],
                            [by_seed[c["other"]][s] for s in order])
        assert c["p_value"] == pytest.approx(t.pvalue, rel=1e-9)
        ci = t.confidence_interval(0.95)
        assert (c["ci_low"], c["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
        assert c["significant"] == (c["p_adjusted"] < 0.05)  # Holm over every pair
        assert c["verdict"].split(":")[0] in printed  # the significance table is printed
