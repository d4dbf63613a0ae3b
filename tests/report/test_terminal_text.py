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
from archlab.report.tables import ranking_lines, rich_table, verdict_lines
from tests.analysis.crafted import Run, model, results, write_store


def _printed(renderable: object, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_footers_are_whole_lines_under_a_narrow_table() -> None:
    """A narrow table (short names) used to wrap its caption at the table's own width:
    "95% CI: Student" / "t". Piped (200 columns) every footer is one line."""
    r = results(model("k5", [0.86, 0.87]), model("k3", [0.89, 0.90]))
    text = _printed(rich_table(r), 200)
    lines = text.splitlines()
    table_width = max(len(line.rstrip()) for line in lines[:5])
    footer = next(line for line in lines if line.startswith("test acc: mean")).rstrip()
    assert footer.endswith("95% CI: Student t")
    assert table_width < len(footer)  # a caption would have wrapped here
    assert any(line.startswith("time: mean training seconds") for line in lines)
    # at 80 columns a footer wraps between words, at 80, not at the table's width
    narrow = _printed(rich_table(r), 80).splitlines()
    assert all(len(line) <= 80 for line in narrow)
    assert any("95% CI: Student t" in line for line in narrow)


def test_untestable_comparisons_fold_into_one_line() -> None:
    one_each = results(model("a", [0.9]), model("b", [0.88]), model("c", [0.87]),
                       model("d", [0.86]), model("e", [0.8]))
    (line,) = ranking_lines(one_each)  # four "No claim" lines and a footnote, before
    assert line.startswith("With one run per model no ranking claim can be made about a vs "
                           "b, c, d and e: every model ran only once (n = 1)")
    assert "observed differences 2.00, 3.00, 4.00 and 10.00 pp, in that order" in line
    assert line.endswith("Use `repeats: 5` (or --repeats 5) for confidence intervals.")
    mixed = results(model("a", [0.9, 0.91, 0.92]), model("b", [0.88, 0.89, 0.9]),
                    model("c", [0.8]), model("d", [0.7]))
    lines = ranking_lines(mixed)
    assert len(lines) == 2
    assert lines[0].startswith("a ") and "b" in lines[0]  # the tested verdict, unchanged
    assert lines[1] == ("No claim can be made about a vs c and d: each of them ran only once "
                        "(n = 1), so there is no confidence interval and no p-value (observed "
                        "differences 11.00 and 21.00 pp, in that order).")
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
