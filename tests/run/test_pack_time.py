"""A packed run's time is its share of the pack's, like a separate run's own time: the results'
"time (s)" column compares like with like, and its note says so."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import archlab
from archlab.report.tables import to_markdown
from archlab.report.terminal import rich_table
from archlab.store import Store


def test_packed_runs_record_their_share_of_the_pack(tiny: archlab.Study, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import archlab.run.pack as pack
    import archlab.run.study as study_module

    fits: list[float] = []
    real_fit = pack.fit_packed

    def timed_fit(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return real_fit(*args, **kwargs)
        finally:
            fits.append(time.perf_counter() - began)

    monkeypatch.setattr(pack, "fit_packed", timed_fit)
    monkeypatch.setattr(study_module, "should_pack", lambda *a, **k: True)  # pack the MLP
    study = tiny.select(["mlp"])
    archlab.run_study(study, tmp_path, repeats=3, threads=1, device="cpu")
    assert len(fits) == 1  # the three repeats trained as one pack
    with Store(tmp_path) as store:
        runs = store.runs()
        histories = {r.run_id: store.history(r.run_id) for r in runs}
    assert [r.environment.get("packed") for r in runs] == [3, 3, 3]
    seconds = [r.train_seconds for r in runs]
    # Each run holds a third of the pack's training time (the pack's fit also evaluates the
    # test split once, untimed), not the whole of it.
    assert sum(seconds) <= fits[0]
    assert max(seconds) < 0.5 * fits[0]
    assert max(seconds) - min(seconds) < 1e-9  # shared out equally
    for r in runs:  # and each epoch's row holds its share too
        assert sum(row["seconds"] for row in histories[r.run_id]) == pytest.approx(
            r.train_seconds)
    results = archlab.collect_results(tmp_path)
    (model,) = results.models
    assert model.train_seconds is not None
    assert model.train_seconds.mean == pytest.approx(sum(seconds) / 3)


def test_the_time_column_says_it_is_per_run() -> None:
    from rich.console import Console

    from tests.analysis import crafted

    results = crafted.results(crafted.model("a", [0.9, 0.91]), crafted.model("b", [0.8, 0.82]))
    console = Console(width=200, record=True)
    console.print(rich_table(results))
    text = " ".join(console.export_text().split())
    assert "time: mean training seconds per run" in text and "packed run" in text
    assert "mean training seconds per run" in to_markdown(results)
