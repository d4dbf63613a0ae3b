"""The zoo index shipped beside the studies (zoo/index.json) is what the builder computes, and a
study whose file changed is computed afresh."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from archlab.cli import zoo

REGENERATE = ("regenerate it: python -c 'from archlab.cli.zoo import write_zoo_index; "
              "write_zoo_index()'")


def test_the_shipped_index_matches_the_builder() -> None:
    shipped = json.loads(resources.files("archlab").joinpath("zoo", zoo.INDEX_FILE)
                         .read_text(encoding="utf-8"))
    assert shipped == zoo.zoo_index(), REGENERATE


def test_a_changed_study_is_computed_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    real_digest = zoo._digest
    monkeypatch.setattr(zoo, "_digest", lambda path: "edited" if path.name == "quickstart.yaml"
                        else real_digest(path))
    built: list[str] = []
    real_entries = zoo.study_entries

    def entries(name: str) -> list[dict]:
        built.append(name)
        return real_entries(name)

    monkeypatch.setattr(zoo, "study_entries", entries)
    rows = zoo.zoo_entries()
    assert built == ["quickstart"]  # every other study from the index
    assert {r["model"] for r in rows if r["study"] == "quickstart"} == {"mlp32", "conv2",
                                                                        "conv3"}


def test_sweep_points_are_told_apart(capsys: pytest.CaptureFixture[str]) -> None:
    from archlab.cli import main

    assert main(["zoo", "list"]) == 0
    table = capsys.readouterr().out
    grid = [line for line in table.splitlines() if "grid[" in line]
    assert len(grid) == 8
    assert len({line.split("│")[2].strip() for line in grid}) == 8  # 8 different names
    assert "grid[batch_size=32,learning_rate=0.09,units=128]" in table
    rows = [r for r in zoo.zoo_entries() if r["model"].startswith("grid[")]
    assert len({tuple(sorted(r["point"].items())) for r in rows}) == 8
