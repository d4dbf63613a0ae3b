"""An accuracy CI past [0, 100] % (Student t at n = 2) is shown clipped, marked and explained;
results.json keeps the raw bounds."""

from __future__ import annotations

import json

from rich.console import Console

from archlab.analysis.conclusions import _acc
from archlab.analysis.results import CLIPPED_MARK, CLIPPED_NOTE, accuracy_ci
from archlab.analysis.stats import summarize
from archlab.report.tables import ci_text, json_text, to_markdown
from archlab.report.terminal import rich_table
from tests.analysis import crafted


def test_a_bound_past_100_percent_is_clipped_and_marked() -> None:
    s = summarize([0.8862, 0.9658])  # n = 2: mean 92.6 %, t(1) = 12.71 -> 67.3 to 117.9 %
    assert s.ci_high > 1.0
    text, clipped = accuracy_ci(s)
    assert clipped and text.endswith(f"to 100.00%{CLIPPED_MARK}")
    assert text.startswith(f"{s.ci_low * 100:.2f} to")
    low = summarize([0.02, 0.10])  # a CI under 0 % at the other end
    assert low.ci_low < 0 and accuracy_ci(low)[0].startswith("0.00 to")
    inside = summarize([0.97, 0.98, 0.975])
    assert accuracy_ci(inside) == (f"{inside.ci_low * 100:.2f} to {inside.ci_high * 100:.2f}%",
                                   False)


def test_tables_explain_the_mark_and_json_keeps_raw_bounds() -> None:
    results = crafted.results(crafted.model("wide", [0.8862, 0.9658]),
                              crafted.model("tight", [0.97, 0.98, 0.975]))
    wide = results.models[0].metrics["test_accuracy"]
    assert CLIPPED_MARK in ci_text(wide) and CLIPPED_MARK not in ci_text(
        results.models[1].metrics["test_accuracy"])
    markdown = to_markdown(results)
    assert f"to 100.00%{CLIPPED_MARK}" in markdown and CLIPPED_NOTE in markdown
    console = Console(width=200, record=True)
    console.print(rich_table(results))
    terminal = console.export_text()
    assert f"100.00%{CLIPPED_MARK}" in terminal and "clipped to 0-100 %" in terminal
    record = json.loads(json_text(results))["models"][0]
    assert record["test_accuracy_ci_high"] == wide.ci_high > 1.0  # raw, unclipped
    assert "clipped to 0-100 %" in _acc(results.models[0])


def test_no_note_when_nothing_is_clipped() -> None:
    results = crafted.results(crafted.model("a", [0.97, 0.98, 0.975]),
                              crafted.model("b", [0.95, 0.96, 0.955]))
    assert CLIPPED_NOTE not in to_markdown(results)
