"""What `archlab results` prints besides the table cells: the footers as whole lines (piped,
nothing wraps mid-phrase), one "No claim" line for all untestable comparisons, and a search's
verdicts that say which metric they are on. Crafted results: nothing trains."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from archlab.analysis.results import collect
from archlab.report.search import gather_search, search_lines
from archlab.report.tables import Cell, Column, ranking_lines, verdict_lines
from archlab.report.terminal import rich_cells_table, rich_table
from tests.analysis.crafted import Run, model, results, write_store


def _printed(renderable: object, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_footers_are_whole_lines_under_a_narrow_table() -> None:
    """A table narrower than its footer used to wrap the footer at the table's own width,
    piped too: "95% CI: Student" / "t". Now every footer line is printed whole (piped: 200
    columns), and wraps between words only at the console's width."""
    footer = "test acc: mean ± std over the n finished runs; 95% CI: Student t"
    cols = [Column("model"), Column("n", True)]
    rows = [[Cell("k5", "k5"), Cell("2", "2.0", numeric=True)]]
    lines = _printed(rich_cells_table("t", cols, rows, [footer, "time: mean seconds"]),
                     200).splitlines()
    assert max(len(line.rstrip()) for line in lines[:3]) < len(footer)  # a narrow table
    assert footer in [line.rstrip() for line in lines]
    assert "time: mean seconds" in [line.rstrip() for line in lines]
    narrow = _printed(rich_cells_table("t", cols, rows, [footer]), 40).splitlines()
    assert all(len(line) <= 40 for line in narrow)
    assert "95% CI: Student t" in narrow[-1]  # the break is between words, at 40
    # the study table's footers, piped
    r = results(model("k5", [0.86, 0.87]), model("k3", [0.89, 0.90]))
    text = [line.rstrip() for line in _printed(rich_table(r), 200).splitlines()]
    assert footer in text
    assert any(line.startswith("time: mean training seconds") for line in text)
    assert all(len(line) <= 80 for line in _printed(rich_table(r), 80).splitlines())


def _claims(lines: list[str]) -> list[str]:
    return [line for line in lines if "claim can be made" in line]


def test_untestable_comparisons_fold_into_one_line() -> None:
    one_each = results(model("a", [0.9]), model("b", [0.88]), model("c", [0.87]),
                       model("d", [0.86]), model("e", [0.8]))
    (line,) = _claims(ranking_lines(one_each))  # four "No claim" lines and a footnote, before
    assert line.startswith("With one run per model no ranking claim can be made about a vs "
                           "b, c, d and e: every model ran only once (n = 1)")
    assert "observed differences 2.00, 3.00, 4.00 and 10.00 pp, in that order" in line
    assert line.endswith("Use `repeats: 5` (or --repeats 5) for confidence intervals.")
    assert _claims(verdict_lines(one_each.ranking)) == [line]
    mixed = results(model("a", [0.9, 0.91, 0.92]), model("b", [0.88, 0.89, 0.9]),
                    model("c", [0.8]), model("d", [0.7]))
    lines = verdict_lines(mixed.ranking)
    assert len(lines) == 2
    assert lines[0] == mixed.ranking[0].verdict  # the tested verdict, unchanged
    assert lines[1] == ("No claim can be made about a vs c and d: each of them ran only once "
                        "(n = 1), so there is no confidence interval and no p-value (observed "
                        "differences 11.00 and 21.00 pp, in that order).")
    assert _claims(ranking_lines(mixed)) == [lines[1]]
    assert verdict_lines([]) == []


def _search_study(directory: Path) -> Path:
    """A finished search: 5 complete trials, two confirmed over 3 seeds."""
    runs = [Run(f"mlp.trial00{i}", 0, 0.8 + 0.01 * i, seed=1) for i in range(5)]
    runs += [Run(name, r, acc + 0.002 * r, seed=1 + r) for name, acc in
             (("mlp.trial004", 0.84), ("mlp.trial003", 0.83)) for r in range(1, 3)]
    write_store(directory, runs)
    trials = [{"number": i, "model": f"mlp.trial00{i}", "state": "COMPLETE",
               "value": 0.8 + 0.01 * i, "params": {"layers.1.Dense.units": 8 * (i + 1)},
               "intermediate": {"1": 0.8 + 0.01 * i}, "pruned_epoch": None} for i in range(5)]
    (directory / "search.json").write_text(json.dumps({
        "study": "crafted", "base": "mlp", "direction": "maximize", "trials": trials,
        "search": {"base": "mlp", "trials": 5, "objective": "val_accuracy",
                   "confirm": {"top": 2, "repeats": 3}},
        "importances": {"layers.1.Dense.units": 1.0},
        "confirmed": ["mlp.trial004", "mlp.trial003"], "complete": True}))
    return directory


def test_search_verdicts_name_their_metric(tmp_path: Path) -> None:
    d = _search_study(tmp_path / "s")
    s = gather_search(d, collect(d))
    assert s is not None and s.winner == "mlp.trial004"
    lines = search_lines(s)
    versus = [line for line in lines if "mlp.trial003" in line and "mlp.trial004" in line]
    assert versus and all(line.startswith("On val_accuracy over the 3 confirmation seeds: ")
                          for line in versus)
