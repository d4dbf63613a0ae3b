"""The comparison table's columns and "best" marks, and atomic writes (crafted results)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from archlab.report.files import atomic_write, remove_stale_temporaries
from archlab.report.tables import COLUMNS, table_cells, to_markdown
from tests.analysis.crafted import model, results


def _crafted() -> tuple[list[str], list[list]]:
    # "fit" has the best train accuracy and the shortest time but the worst test accuracy
    r = results(model("good", [0.98, 0.982], gap=0.001, seconds=50.0),
                model("fit", [0.95, 0.951], gap=0.049, seconds=5.0),
                model("mid", [0.97, 0.971], gap=0.01, seconds=20.0))
    cols, rows = table_cells(r)
    return [c.header for c in cols], rows


def test_test_accuracy_comes_first_after_the_model() -> None:
    headers, _ = _crafted()
    assert headers[:4] == ["model", "test acc", "test acc 95% CI", "n"]
    assert "train acc (eval)" in headers and "train loss (eval)" in headers
    assert headers == [c.header for c in COLUMNS]


def test_only_validation_and_test_metrics_are_marked_best() -> None:
    headers, rows = _crafted()
    marked = {(headers[j], rows.index(r)) for r in rows for j, c in enumerate(r) if c.best}
    assert {h for h, _ in marked} == {"test acc", "val acc"}  # losses are absent here
    assert ("test acc", 0) in marked and ("val acc", 0) in marked
    text = to_markdown(results(model("good", [0.98, 0.982]), model("fit", [0.95, 0.951])))
    assert "**98.10 ± 0.14%**" in text and "train acc (eval)" in text
    assert text.count("**") == 2 * 2  # test acc and val acc of "good", nothing else


def test_one_model_has_no_best() -> None:
    _, rows = table_cells(results(model("only", [0.9])))
    assert not any(c.best for c in rows[0])


def test_atomic_write_cleans_up_on_interrupt(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")

    def interrupted(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    atomic_write(target, b"new")
    assert target.read_text() == "new"


def test_stale_temporaries_of_dead_writers_only(tmp_path: Path) -> None:
    dead = tmp_path / ".a.png.999999999.tmp"
    alive = tmp_path / f".b.png.{os.getppid()}.tmp"  # a running process's file stays
    other = tmp_path / ".notes.tmp"
    for p in (dead, alive, other):
        p.write_text("x")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert alive.exists() and other.exists() and not dead.exists()
