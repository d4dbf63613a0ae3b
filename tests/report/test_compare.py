"""Comparing studies: every model of several stores in one table (names that collide are
qualified by the study), the dataset on every row, significance tests only within a dataset,
and a report that reads only the stores. Crafted stores: nothing trains here."""

from __future__ import annotations

import functools
import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from archlab.analysis.compare import collect_comparison
from archlab.errors import ArchlabError, StoreError
from archlab.report.compare import (
    compare_cells,
    compare_json,
    compare_markdown,
    report_paths,
    write_comparison,
)
from tests.analysis.crafted import accuracy_store, snapshot

#: repeat i has seed 11 + i
_store = functools.partial(accuracy_store, first_seed=11)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two studies on mnist sharing the model name 'cnn'."""
    a = _store(tmp_path / "a", {"cnn": [0.97, 0.972, 0.971], "mlp": [0.93, 0.931, 0.929]},
               study="mnist-study", validation={"split": 0.1})
    b = _store(tmp_path / "b", {"cnn": [0.981, 0.983, 0.982], "wide": [0.95, 0.951, 0.952]},
               study="bigger", validation={"split": 0.1})
    return a, b


def test_colliding_names_are_qualified_by_their_study(pair: tuple[Path, Path]) -> None:
    c = collect_comparison(pair)
    assert c.study_labels == ["mnist-study", "bigger"]
    assert [(m.study, m.label, m.model) for m in c.models] == [
        ("mnist-study", "mnist-study/cnn", "cnn"), ("mnist-study", "mlp", "mlp"),
        ("bigger", "bigger/cnn", "cnn"), ("bigger", "wide", "wide")]
    assert c.same_dataset and c.datasets == ["mnist"] and c.warning is None
    assert c.notes == []
    # one ranking over all four models, on their comparison names
    (ranking,) = c.rankings.values()
    assert ranking[0].best == "bigger/cnn"
    assert {x.other for x in ranking} == {"mnist-study/cnn", "mlp", "wide"}
    versus = next(x for x in ranking if x.other == "mnist-study/cnn")
    assert versus.method == "paired" and versus.significant  # same seeds: paired
    assert "bigger/cnn beats mnist-study/cnn by 1.10 pp" in versus.verdict


def test_table_cells_and_best_marks(pair: tuple[Path, Path]) -> None:
    c = collect_comparison(pair)
    cols, rows = compare_cells(c)
    headers = [col.header for col in cols]
    assert headers[:6] == ["study", "model", "dataset", "test acc", "test acc 95% CI", "n"]
    first = {h: cell.text for h, cell in zip(headers, rows[2], strict=True)}
    assert first["study"] == "bigger" and first["model"] == "bigger/cnn"
    assert first["dataset"] == "mnist" and first["n"] == "3"
    assert first["test acc"] == "98.20 ± 0.10%"
    best = [(r[1].text, headers[j]) for r in rows for j, cell in enumerate(r) if cell.best]
    assert ("bigger/cnn", "test acc") in best
    assert {h for _, h in best} <= {"test acc", "val acc", "val loss", "test loss"}


def test_a_study_before_and_after_a_change(tmp_path: Path) -> None:
    """The same study run twice (into two directories) around a change: its name is shared,
    so the directories tell the two apart."""
    before = _store(tmp_path / "before", {"k3": [0.96, 0.962, 0.961]}, study="kernels")
    after = _store(tmp_path / "after", {"k3": [0.97, 0.969, 0.971]}, study="kernels")
    c = collect_comparison([before, after])
    assert c.study_labels == ["before", "after"]
    assert [m.label for m in c.models] == ["before/k3", "after/k3"]
    (ranking,) = c.rankings["mnist"]
    assert (ranking.best, ranking.other, ranking.method) == ("after/k3", "before/k3", "paired")
    assert ranking.diff == pytest.approx(0.009)
    # validation on the test set (the crafted default) is said once for both studies
    assert c.notes == ["before, after validate on the test set: its test metrics are "
                       "optimistic."]


def test_different_datasets_are_labelled_and_never_tested_against_each_other(
        tmp_path: Path) -> None:
    digits = _store(tmp_path / "digits", {"cnn": [0.98, 0.981], "mlp": [0.95, 0.951]},
                    study="mnist-study")
    fashion = _store(tmp_path / "fashion", {"cnn": [0.88, 0.885]}, study="fashion-study",
                     dataset="fashion-mnist")
    c = collect_comparison([digits, fashion])
    assert not c.same_dataset and c.datasets == ["mnist", "fashion-mnist"]
    assert c.warning == (
        "The compared runs use different datasets (mnist: mnist-study/cnn, mlp; "
        "fashion-mnist: fashion-study/cnn). Test accuracies on different test sets are not "
        "comparable, and no significance test is run across datasets.")
    # tests only within mnist; fashion-mnist has one model: no test at all
    assert list(c.rankings) == ["mnist"]
    assert {(x.best, x.other) for x in c.rankings["mnist"]} == {("mnist-study/cnn", "mlp")}
    _, rows = compare_cells(c)
    assert not any(cell.best for r in rows for cell in r)  # no best across test sets
    assert [r[2].text for r in rows] == ["mnist", "mnist", "fashion-mnist"]
    md = compare_markdown(c)
    assert f"> ⚠ {c.warning}" in md and "### on mnist" in md
    data = json.loads(compare_json(c))
    assert data["same_dataset"] is False and data["warning"] == c.warning
    assert list(data["rankings"]) == ["mnist"]
    assert [m["dataset"] for m in data["models"]] == ["mnist", "mnist", "fashion-mnist"]


def test_other_data_settings_on_one_dataset_are_noted(tmp_path: Path) -> None:
    scaled = _store(tmp_path / "scaled", {"mlp": [0.9, 0.91]}, study="scaled",
                    dataset="mnist-sample", validation={"split": 0.1})
    normed = _store(tmp_path / "normed", {"mlp": [0.92, 0.925]}, study="normed",
                    dataset="mnist-sample", validation={"split": 0.1},
                    preprocessing={"normalize": {"axis": 1, "order": 2}})
    c = collect_comparison([scaled, normed])
    assert c.same_dataset and c.warning is None
    assert c.notes == [
        "The data settings on mnist-sample differ: scaled: x / 255, 10% validation split; "
        'normed: keras normalize {"axis": 1, "order": 2}, 10% validation split. Test '
        "accuracies are on the same test set."]
    assert "normed/mlp" in {x.best for x in c.rankings["mnist-sample"]}


def test_refused_inputs(pair: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ArchlabError, match="Expected two or more study directories"):
        collect_comparison([pair[0]])
    with pytest.raises(ArchlabError, match="Expected each study directory once"):
        collect_comparison([pair[0], pair[0].parent / "a" / "." ])
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError):
        collect_comparison([pair[0], tmp_path / "empty"])


@pytest.mark.parametrize("out", ["compare.html", "dir"])
def test_report_reads_only_the_stores(pair: tuple[Path, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, out: str) -> None:
    """The comparison report: HTML with its images embedded, Markdown with PNGs beside it;
    with data loading and every forward pass made to fail, and nothing written into the
    compared studies."""
    import socket

    import torch

    import archlab
    import archlab.data.loader

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the comparison report must not do this")

    monkeypatch.setattr(torch.nn.Module, "__call__", forbidden)
    for module in (archlab, archlab.data.loader):
        monkeypatch.setattr(module, "load_dataset", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    before = [snapshot(d) for d in pair]
    target = tmp_path / "out" / out
    if out == "dir":
        target.mkdir(parents=True)
    else:
        target.parent.mkdir()
    html_path, md_path = write_comparison(pair, target)
    assert (html_path, md_path) == report_paths(target)[:2]
    folder = report_paths(target)[2]
    assert folder == "compare_files"  # compare.html: <stem>_files; a directory: compare_files
    text, md = html_path.read_text(), md_path.read_text()
    assert "<h1>comparison: mnist-study, bigger</h1>" in text
    rows = re.findall(r'<tr data-model="([^"]+)">', text)
    assert rows == ["mnist-study/cnn", "mlp", "bigger/cnn", "wide"]
    assert "bigger/cnn beats mnist-study/cnn" in html.unescape(text)
    assert 'id="dataset-warning"' not in text
    images = re.findall(r'<img src="data:image/png;base64,', text)
    refs = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", md)
    assert len(images) == len(refs) == 2  # validation curves of every model, acc vs params
    for ref in refs:
        assert ref.startswith(f"{folder}/")
        assert (html_path.parent / ref).read_bytes().startswith(b"\x89PNG")
    assert [snapshot(d) for d in pair] == before


def test_report_of_different_datasets_warns_prominently(tmp_path: Path) -> None:
    a = _store(tmp_path / "a", {"cnn": [0.98, 0.981]}, study="digits")
    b = _store(tmp_path / "b", {"cnn": [0.88, 0.885]}, study="fashion",
               dataset="fashion-mnist")
    warnings: list[str] = []
    html_path, md_path = write_comparison([a, b], tmp_path / "c.html",
                                          on_warning=warnings.append)
    text = html.unescape(html_path.read_text())
    (warning,) = warnings
    assert f'<p class="warning" role="alert" id="dataset-warning">⚠ {warning}</p>' in text
    assert f"> ⚠ **{warning}**" in md_path.read_text()
    assert md_path == tmp_path / "c.md" and (tmp_path / "c_files").is_dir()
    assert "Ranking" not in text  # one model per dataset: nothing to test


def test_a_copy_can_be_compared_with_its_original(pair: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(pair[0], copy)
    c = collect_comparison([pair[0], copy])
    assert c.study_labels == ["a", "copy"]  # one study name: the directories tell them apart
    assert [m.label for m in c.models][:2] == ["a/cnn", "a/mlp"]


PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var warning = document.getElementById("dataset-warning");
  var box = warning.getBoundingClientRect();
  var out = document.createElement("pre");
  out.id = "probe-result";
  out.textContent = JSON.stringify({
    images: images.length,
    undecoded: images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .length,
    warningTop: box.top, warningHeight: box.height,
    rows: document.querySelectorAll("#results tbody tr").length});
  document.body.appendChild(out);
});
</script>"""


def test_comparison_page_in_headless_chromium(tmp_path: Path) -> None:
    """The page as a browser shows it: every image decodes, and the dataset warning is on
    screen above the table without scrolling."""
    from tests.report.browser import browser, chromium

    if chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    a = _store(tmp_path / "a", {"cnn": [0.98, 0.981], "mlp": [0.95, 0.951]}, study="digits")
    b = _store(tmp_path / "b", {"cnn": [0.88, 0.885]}, study="clothes",
               dataset="fashion-mnist")
    html_path, _ = write_comparison([a, b], tmp_path / "out")
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text().replace("</body>", PROBE + "\n</body>", 1))
    run = browser(tmp_path, "--virtual-time-budget=10000", "--window-size=1280,900",
                   "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', run.stdout, re.S)
    assert found, f"no probe result (exit {run.returncode}): {run.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    assert result["images"] == 2 and result["undecoded"] == 0
    assert result["rows"] == 3
    assert 0 < result["warningTop"] < 200 and result["warningHeight"] > 20
