"""report.html / report.md end to end, on a real (tiny) study, plus a headless-Chromium check.

A three-model study of its own (so the zoo can change) is trained once per module (1 epoch on
the embedded mnist-sample); two fake models are then added to its store, one whose run failed
and one that diverged, so the report's "no finished run" sections are exercised too.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from archlab import build_model, load_study, parse_study
from archlab.analysis.results import TEST_AS_VALIDATION_NOTE, collect
from archlab.cli import main as cli
from archlab.describe import compact_architecture
from archlab.errors import StoreError
from archlab.report import REPORT_FILES, write_report
from archlab.store import RunStatus, Store
from tests.report.browser import ARTIFACTS, assert_clean_layout, browser, layout, needs_chromium

MODELS = ["conv2", "conv3", "mlp32", "broken", "exploded"]
STUDY = """\
name: report-study
description: Three small models for the report tests (conv2 is notebook 000's Model-I).
data: {dataset: mnist-sample, validation: {split: 0.1}}
train: {optimizer: {name: adam}, batch_size: 32, epochs: 1}
models:
  conv2:
    description: "Notebook 000 Model-I: conv 1-7 (2x2 same), Dense 16 + BN"
    layers:
      - Conv2D: {filters: 1, kernel_size: 2, padding: same, activation: relu}
      - MaxPooling2D: {pool_size: 2}
      - Dropout: {rate: 0.25}
      - Conv2D: {filters: 7, kernel_size: 2, padding: same, activation: relu}
      - MaxPooling2D: {pool_size: 2}
      - Dropout: {rate: 0.4}
      - Flatten
      - Dense: {units: 16, activation: relu}
      - BatchNormalization
      - Dropout: {rate: 0.5}
      - Dense: {units: 10, activation: softmax}
  conv3:
    layers:
      - Conv2D: {filters: 4, kernel_size: 3, activation: relu}
      - MaxPooling2D: {pool_size: 2}
      - Conv2D: {filters: 8, kernel_size: 3, activation: relu}
      - MaxPooling2D: {pool_size: 2}
      - BatchNormalization
      - Flatten
      - Dense: {units: 10, activation: softmax}
  mlp32:
    layers:
      - Flatten
      - Dense: {units: 32, activation: relu}
      - Dense: {units: 32, activation: relu}
      - Dense: {units: 10, activation: softmax}
"""


class _Page(HTMLParser):
    """Collects <img>s, the comparison table's body rows, scripts and links."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.rows: list[dict[str, str]] = []
        self.scripts: list[dict[str, str]] = []
        self.links: list[dict[str, str]] = []
        self.details: list[dict[str, str]] = []
        self._in_results = False
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(a)
        elif tag == "table":
            self._in_results = a.get("id") == "results"
        elif tag == "tbody" and self._in_results:
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append(a)
        elif tag == "script":
            self.scripts.append(a)
        elif tag in ("link", "a"):
            self.links.append(a)
        elif tag == "details":
            self.details.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_results = self._in_body = False


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _add_fake_runs(directory: Path) -> None:
    """A model whose only run failed and one whose only run diverged at epoch 1."""
    with Store(directory) as store:
        base = next(r for r in store.runs() if r.model == "conv2")
        env = base.environment
        for name in ("broken", "exploded"):
            cfg = {**base.config_json, "model": name}
            store.start_run(f"{name}-run-000000", name, 0, 7, cfg, env)
        store.fail_run("broken-run-000000", "RuntimeError: out of memory <in a kernel>")
        store.finish_run(
            "exploded-run-000000", status="diverged", metrics={},
            counts={"total_params": base.total_params or 0, "trainable_params": 0,
                    "non_trainable_params": 0, "macs_per_sample": 0},
            best_epoch=0, diverged_epoch=1, train_seconds=1.0, wall_seconds=1.0,
            samples_per_second=0.0,
            history=[{"epoch": 1, "loss": math.nan, "accuracy": 0.1, "val_loss": math.nan,
                      "val_accuracy": math.nan, "seconds": 1.0}])
        # Make them part of the study's current plan, as `archlab run` would have.
        store.set_meta(plan=store.meta()["plan"] + ["broken-run-000000",
                                                    "exploded-run-000000"])


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("report-study")
    source = out.parent / "report-study.yaml"
    source.write_text(STUDY)
    assert cli(["run", str(source), "--out", str(out), "--quiet", "--no-report"]) == 0
    _add_fake_runs(out)
    paths = write_report(out)
    return {"dir": out, "paths": paths, "html": paths[0].read_text(encoding="utf-8"),
            "md": paths[1].read_text(encoding="utf-8")}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # decodes every pixel: a truncated or corrupt PNG raises here
        return im.size


def test_writes_html_and_markdown(study: dict[str, Any]) -> None:
    d = study["dir"]
    assert study["paths"] == [d / "report.html", d / "report.md"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in study["paths"])


def test_every_image_is_an_embedded_decodable_png(study: dict[str, Any]) -> None:
    page = _parse(study["html"])
    # 3 trained models x (curves, weights, confusion, mistakes), 1 diverged model's curves,
    # 3 overview plots and the sample test images
    assert len(page.images) == 3 * 4 + 1 + 3 + 1
    for img in page.images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix), img["src"][:40]
        w, h = _png_size(base64.b64decode(img["src"][len(prefix):], validate=True))
        assert (w, h) == (int(img["width"]), int(img["height"]))
        assert 100 <= w <= 1400 and 100 <= h <= 1000
        assert img["alt"]


def test_page_is_self_contained(study: dict[str, Any]) -> None:
    page = _parse(study["html"])
    assert page.scripts and all("src" not in s for s in page.scripts)  # inline JS only
    for link in page.links:
        href = link.get("href", "")
        assert href.startswith("#"), href  # no CDN, no stylesheet, no external link
    assert "http://" not in study["html"] and "https://" not in study["html"]


def _ranked(study: dict[str, Any]) -> list[str]:
    """The models by mean test accuracy (equal means in study order), then those without."""
    results = collect(study["dir"])
    acc = {m.model: m.metrics["test_accuracy"].mean for m in results.models
           if "test_accuracy" in m.metrics}
    return sorted(acc, key=lambda name: (-acc[name], MODELS.index(name))) + [
        m for m in MODELS if m not in acc]


def test_table_has_a_row_per_model(study: dict[str, Any]) -> None:
    page = _parse(study["html"])
    assert [r["data-model"] for r in page.rows] == _ranked(study)
    assert _ranked(study)[-2:] == ["broken", "exploded"]
    assert len(page.details) == len(MODELS)  # a collapsed section per model
    assert all("open" not in d for d in page.details)
    for col in ("train loss (eval)", "train acc (eval)", "val acc", "test acc", "time (s)",
                "params"):
        assert f">{col}</th>" in study["html"]


def test_only_validation_and_test_metrics_are_best(study: dict[str, Any]) -> None:
    """Test accuracy comes right after the model name; "best" marks only validation and test
    metrics (never train loss/accuracy, time or params), in the HTML and the Markdown."""
    table = re.search(r'<table id="results">(.*?)</table>', study["html"], re.S).group(1)
    headers = [html.unescape(h) for h in re.findall(r"<th [^>]*>([^<]*)</th>", table)]
    assert headers[:3] == ["rank", "model", "test acc"]
    best_columns = set()
    for row in re.findall(r"<tr[^>]*data-model[^>]*>(.*?)</tr>", table, re.S):
        cells = re.findall(r"<td ([^>]*)>", row)
        assert len(cells) == len(headers)
        best_columns |= {headers[j] for j, attrs in enumerate(cells)
                         if re.search(r"class=\"[^\"]*\bbest\b", attrs)}
    assert best_columns == {"test acc", "val acc", "val loss", "test loss"}
    md_header = next(line for line in study["md"].splitlines() if line.startswith("| rank"))
    md_cols = [c.strip() for c in md_header.strip("|").split("|")]
    assert md_cols[:3] == ["rank", "model", "test acc"]
    for line in study["md"].splitlines():
        if re.match(r"\| \d \| (conv|mlp32)", line):
            cells = [c.strip() for c in line.strip("|").split("|")]
            bold = {md_cols[j] for j, c in enumerate(cells) if c.startswith("**")}
            assert bold <= {"test acc", "val acc", "val loss", "test loss"}


def test_markdown_references_pngs_that_exist(study: dict[str, Any]) -> None:
    d = study["dir"]
    refs = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", study["md"])
    assert len(refs) == len(_parse(study["html"]).images)
    assert len(set(refs)) == len(refs)
    for ref in refs:
        assert ref.startswith(f"{REPORT_FILES}/") and ref.endswith(".png")
        _png_size((d / ref).read_bytes())
    assert sorted(p.name for p in (d / REPORT_FILES).iterdir()) == sorted(
        Path(r).name for r in refs)  # nothing stale beside them
    for m in MODELS:
        assert f"### Model {m}" in study["md"]
        assert f"(#model-{m})" in study["md"]


def test_header(study: dict[str, Any]) -> None:
    text = study["html"]
    results = collect(study["dir"])
    env = results.models[0].runs[0].environment
    assert "<h1>report-study" in text
    assert "mnist-sample (4,500 train / 500 validation / 1,000 test images, 10 classes)" in text
    assert "stratified 10% of the training set" in text
    assert f"archlab {env['archlab']} · torch {env['torch']} · python {env['python']}" in text
    assert f"{env['cpu_count']} CPUs, {env['threads']} torch threads" in text
    assert "total time" in text
    # the study holds out a split: no test-as-validation note
    assert 'class="note"' not in text and TEST_AS_VALIDATION_NOTE not in html.unescape(text)


def test_conclusions_are_in_both_pages(study: dict[str, Any]) -> None:
    for text in (study["html"], study["md"]):
        assert "has the highest mean test accuracy" in text or "tie for the highest" in text
        assert "No significance claim can be made" in text  # n = 1
        assert "exploded diverged" in text and "at epoch 1" in text
        assert "broken has no finished run (1 failed)" in text


def test_model_sections(study: dict[str, Any]) -> None:
    text = study["html"]
    built = build_model(parse_study(yaml.safe_load(STUDY)), "conv2", device="meta")
    assert compact_architecture(built) in html.unescape(text)
    assert "conv2d_1 (Conv2D)" in text and "Total params: 5,778" in text
    assert "Per-class test accuracy" in text
    # the failed and the diverged model say why they have no plots, and show the error
    assert text.count("No finished run, so no saved weights") == 2
    assert "out of memory &lt;in a kernel&gt;" in text  # autoescaped
    assert "the curves are those of the diverged run(s)" in text


def test_predictions_agree_with_the_store(study: dict[str, Any]) -> None:
    """The confusion matrix each finished run stored was computed from its final weights on
    the test set: its accuracy must be the test accuracy the run recorded."""
    from archlab.analysis.predictions import PREDICTIONS_FILE, load_predictions

    checked = 0
    for run in Store(study["dir"]).runs():
        if run.status is not RunStatus.FINISHED:
            continue
        pred = load_predictions(study["dir"] / "runs" / run.run_id / PREDICTIONS_FILE)
        cm = pred.confusion
        assert cm.sum() == 1000
        assert np.trace(cm) / cm.sum() == pytest.approx(run.metrics["test_accuracy"], abs=1e-9)
        assert len(pred.mistake_true) == min(12, cm.sum() - np.trace(cm))
        assert (pred.mistake_true != pred.mistake_pred).all()
        assert (np.diff(pred.mistake_confidence) <= 0).all()  # most confident first
        checked += 1
    assert checked


def test_compact_architecture() -> None:
    study = parse_study(yaml.safe_load(STUDY))
    line = compact_architecture(build_model(study, "conv2", device="meta"))
    assert line.startswith("28×28×1 →conv2 1 same→ 28×28×1 →pool2, drop0.25→ 14×14×1 "
                           "→conv2 7 same→ 14×14×7")
    assert line.endswith("→pool2, drop0.4→ 7×7×7 →flatten→ 343 →dense 16, bn, drop0.5→ 16 "
                         "→dense 10→ 10")
    m10 = compact_architecture(build_model(load_study("zoo:kernels-padding"), "m10",
                                           device="meta"))
    assert "concat[conv1 32 same | conv3 32 same |" in m10


def test_note_when_validating_on_test_and_missing_weights(tmp_path: Path) -> None:
    """A store alone (no weights, no study.yaml): a report still comes out, with the note."""
    cfg = {"model": "m", "layers": ["Flatten", {"Dense": {"units": 10,
                                                           "activation": "softmax"}}],
           "train": {"epochs": 1, "batch_size": 32, "optimizer": {"name": "adam"}},
           "data": {"dataset": "mnist", "validation": "test", "preprocessing": "scale"},
           "seed": 1, "split_seed": 0}
    with Store(tmp_path) as store:
        store.start_run("r1", "m", 0, 1, cfg, {"archlab": "0.1.0", "torch": "x"})
        store.finish_run("r1", status="finished", metrics={
            "train_loss": 0.3, "train_accuracy": 0.92, "val_loss": 0.3, "val_accuracy": 0.91,
            "test_loss": 0.3, "test_accuracy": 0.91},
            counts={"total_params": 7850, "trainable_params": 7850, "non_trainable_params": 0,
                    "macs_per_sample": 7840}, best_epoch=1, diverged_epoch=None,
            train_seconds=2.0, wall_seconds=2.5, samples_per_second=1.0,
            history=[{"epoch": 1, "loss": 0.4, "accuracy": 0.9, "val_loss": 0.3,
                      "val_accuracy": 0.91, "seconds": 2.0}])
    warnings: list[str] = []
    html_path, md_path = write_report(tmp_path, on_warning=warnings.append)
    text = html_path.read_text()
    assert 'class="note"' in text and TEST_AS_VALIDATION_NOTE in html.unescape(text)
    assert f"> ⚠ {TEST_AS_VALIDATION_NOTE}" in md_path.read_text()
    assert "weights.safetensors not found" in text
    assert "predictions.safetensors not found" in text
    assert len(warnings) == 2 and all(w.startswith("m: ") for w in warnings)
    assert "Only one model has results: m" in text
    assert len(_parse(text).images) == 4  # its curves + validation overlay + 2 scatters


def _copy_with(study: dict[str, Any], tmp_path: Path, model: str, name: str,
               data: bytes) -> tuple[Path, str]:
    copy = tmp_path / "study"
    shutil.copytree(study["dir"], copy)
    run = next(r for r in Store(copy).runs() if r.model == model)
    (copy / "runs" / run.run_id / name).write_bytes(data)
    return copy, run.run_id


def _section(text: str, model: str) -> str:
    index = MODELS.index(model)
    return text.split(f'id="model-{index}"', 1)[1].split("</details>", 1)[0]


def test_weights_that_do_not_fit_are_reported_not_fatal(study: dict[str, Any],
                                                        tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save

    copy, run_id = _copy_with(study, tmp_path, "mlp32", "weights.safetensors",
                              save({"1.core.weight": torch.zeros(3, 3)}))
    warnings: list[str] = []
    html_path, md_path = write_report(copy, on_warning=warnings.append)
    text, md = html_path.read_text(), md_path.read_text()
    section = html.unescape(_section(text, "mlp32"))
    assert f"The weights of run {run_id} are not used" in section
    assert "No weight distributions." in section
    assert len(warnings) == 1 and warnings[0].startswith("mlp32: The weights")
    # only the violin is gone: the curves and the stored predictions are still drawn
    assert len(_parse(text).images) == len(_parse(study["html"]).images) - 1
    assert "mlp32_weights.png" not in md and "mlp32_confusion.png" in md


def test_pickled_weights_are_refused_not_loaded(study: dict[str, Any], tmp_path: Path) -> None:
    """A pickle renamed weights.safetensors is never unpickled: one line in the report, a
    warning, and the report without that model's violins."""
    import pickle

    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (exec, ("raise SystemExit('unpickled!')",))

    copy, run_id = _copy_with(study, tmp_path, "conv2", "weights.safetensors",
                              pickle.dumps({"w": Boom()}))
    warnings: list[str] = []
    html_path, md_path = write_report(copy, on_warning=warnings.append)
    text, md = html_path.read_text(), md_path.read_text()
    section = html.unescape(_section(text, "conv2"))
    line = next(n for n in re.findall(r"<li>(.*?)</li>", section) if "weights" in n)
    assert line.startswith(f"The weights of run {run_id} are not used: ")
    assert "\n" not in line and line.endswith("No weight distributions.")
    assert warnings == [f"conv2: {line}"]
    assert "conv2_weights.png" not in md and "conv2_confusion.png" in md
    assert len(_parse(text).images) == len(_parse(study["html"]).images) - 1


def test_bad_predictions_file_is_refused(study: dict[str, Any], tmp_path: Path) -> None:
    copy, run_id = _copy_with(study, tmp_path, "conv3", "predictions.safetensors",
                              b"\x00" * 7 + b"not a safetensors file")
    warnings: list[str] = []
    text = write_report(copy, on_warning=warnings.append)[0].read_text()
    section = html.unescape(_section(text, "conv3"))
    assert f"The predictions of run {run_id} are not used" in section
    assert "No confusion matrix or misclassified images." in section
    assert "Per-class test accuracy" not in section
    assert len(warnings) == 1 and warnings[0].startswith("conv3: The predictions")
    # the confusion matrix and the mistakes of conv3 are gone, nothing else
    assert len(_parse(text).images) == len(_parse(study["html"]).images) - 2


def test_report_never_loads_data_or_runs_a_model(study: dict[str, Any], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything comes from the store and the run files: with data loading, any forward pass
    and the network all made to fail, the same report comes out."""
    import socket

    import torch

    import archlab
    import archlab.data
    import archlab.data.loader

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the report must not do this")

    monkeypatch.setattr(torch.nn.Module, "__call__", forbidden)
    for module in (archlab, archlab.data, archlab.data.loader):
        monkeypatch.setattr(module, "load_dataset", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setenv("ARCHLAB_DATA_DIR", str(tmp_path / "no-data-here"))
    copy = tmp_path / "study"
    shutil.copytree(study["dir"], copy)
    text = write_report(copy)[0].read_text()
    assert len(_parse(text).images) == len(_parse(study["html"]).images)
    assert "Per-class test accuracy" in text


def test_report_of_a_v1_store_uses_structural_checks(study: dict[str, Any],
                                                     tmp_path: Path) -> None:
    """A study written by archlab 0.1 (store schema v1: no file checksums), reported without
    upgrading it: its weights and predictions are still read (structural checks only)."""
    import sqlite3

    copy = tmp_path / "study"
    shutil.copytree(study["dir"], copy)
    with sqlite3.connect(copy / "store.sqlite") as db:
        db.execute("DROP TABLE files")
        for column in ("peak_rss_bytes", "warnings"):
            db.execute(f"ALTER TABLE runs DROP COLUMN {column}")
        db.execute("PRAGMA user_version = 1")
    with Store(copy, create=False, readonly=True) as store:
        assert store.version == 1
    warnings: list[str] = []
    text = write_report(copy, on_warning=warnings.append)[0].read_text()
    assert warnings == []
    assert len(_parse(text).images) == len(_parse(study["html"]).images)
    with sqlite3.connect(copy / "store.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1  # not upgraded


def _temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("at", [1, 4, -2])  # the first PNG, a later PNG, report.html
def test_interrupted_write_leaves_no_temporary_file(study: dict[str, Any], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     at: int) -> None:
    """Ctrl-C in the middle of writing (a KeyboardInterrupt from inside the rename that
    publishes a file): no .tmp survives and the previous report is still whole."""
    import os

    copy = tmp_path / "study"
    shutil.copytree(study["dir"], copy)
    before = (copy / "report.html").read_bytes()
    total = len(_parse(study["html"]).images) + 2  # every PNG, report.html, report.md
    stop_at = at if at > 0 else total + at + 1
    calls = []
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        calls.append(dst)
        if len(calls) == stop_at:
            assert Path(src).exists() and Path(src).name.endswith(".tmp")
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        write_report(copy)
    monkeypatch.undo()
    assert len(calls) == stop_at
    assert _temporaries(copy) == []
    assert (copy / "report.html").read_bytes() == before
    assert not any(Path(c).name.endswith(".tmp") and Path(c).exists() for c in calls)
    # a stale temporary of a writer killed outright (SIGKILL) is swept by the next write
    dead = copy / REPORT_FILES / ".conv2_curves.png.999999999.tmp"
    dead.write_bytes(b"half a png")
    write_report(copy)
    assert _temporaries(copy) == []


def test_cli_report_and_missing_store(study: dict[str, Any], tmp_path: Path) -> None:
    assert cli(["report", str(study["dir"])]) == 0
    with pytest.raises(StoreError):
        write_report(tmp_path)
    assert cli(["report", str(tmp_path)]) == 2


# ---------------------------------------------------------------------------------------------
# Headless Chromium: the page as a browser sees it

PROBE = """<script>
window.__probe = {errors: []};
window.addEventListener("error", function (e) {
  var what = e.message || (e.target && e.target.tagName ? "failed to load " + e.target.tagName
                                                        : "error");
  window.__probe.errors.push(what);
}, true);
(function () {
  var original = console.error;
  console.error = function () {
    window.__probe.errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
}());
window.addEventListener("load", function () {
  var p = window.__probe;
  var images = Array.prototype.slice.call(document.images);
  p.images = images.length;
  p.undecoded = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                      .map(function (i) { return i.alt; });
  p.rows = Array.prototype.map.call(document.querySelectorAll("#results tbody tr"),
                                    function (r) { return r.getAttribute("data-model"); });
  var heads = Array.prototype.slice.call(document.querySelectorAll("#results thead th"));
  var col = heads.map(function (h) { return h.textContent; }).indexOf("test acc");
  p.testAccColumn = col;
  p.testAccRight = heads[col].getBoundingClientRect().right;
  p.viewport = document.documentElement.clientWidth;
  function order() {
    return Array.prototype.map.call(document.querySelectorAll("#results tbody tr"),
      function (r) { return r.cells[col].getAttribute("data-sort"); });
  }
  heads[col].click();
  p.ascending = order();
  heads[col].click();
  p.descending = order();
  document.getElementById("expand-all").click();
  p.opened = document.querySelectorAll("details.model[open]").length;
  document.getElementById("collapse-all").click();
  p.collapsed = document.querySelectorAll("details.model[open]").length;
  window.location.hash = "#model-1";  // a navigation link opens its collapsed section
  window.dispatchEvent(new HashChangeEvent("hashchange"));
  p.linked = Array.prototype.map.call(document.querySelectorAll("details.model[open]"),
                                      function (d) { return d.id; });
  var out = document.createElement("pre");
  out.id = "probe-result";
  out.textContent = JSON.stringify(p);
  document.body.appendChild(out);
});
</script>"""


@needs_chromium
def test_report_in_headless_chromium(study: dict[str, Any], tmp_path: Path) -> None:
    text = study["html"]
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    run = browser(tmp_path, "--virtual-time-budget=15000", "--window-size=1280,2000",
                   "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', run.stdout, re.S)
    assert found, f"no probe result (exit {run.returncode}): {run.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    assert result["errors"] == []
    uncaught = [line for line in run.stderr.splitlines()
                if "Uncaught" in line or ("CONSOLE" in line and ":ERROR:" in line)]
    assert uncaught == []
    assert result["images"] == len(_parse(text).images)
    assert result["undecoded"] == []
    assert result["rows"] == _ranked(study)
    asc = [float(v) for v in result["ascending"] if v]
    desc = [float(v) for v in result["descending"] if v]
    assert asc == sorted(asc) and desc == sorted(desc, reverse=True) and len(asc) == 3
    assert result["ascending"][-2:] == ["", ""]  # models without a value sort last
    assert result["opened"] == len(MODELS) and result["collapsed"] == 0
    assert result["linked"] == ["model-1"]
    # at 1280 px test accuracy is the column after the rank and model name, in view without
    # scrolling
    assert result["testAccColumn"] == 2
    assert 0 < result["testAccRight"] <= result["viewport"] <= 1280

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    page = study["dir"] / "report.html"
    run = browser(tmp_path, "--window-size=1280,2600", f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), run.stderr[-2000:]
    w, h = _png_size(shot.read_bytes())
    assert (w, h) == (1280, 2600)
    with Image.open(shot) as im:  # not a blank page
        assert len(im.convert("L").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50
    # and the whole page with the first model's section open
    opened = tmp_path / "opened.html"
    opened.write_text(text.replace('<details class="model" id="model-0">',
                                   '<details class="model" id="model-0" open>', 1))
    shot = ARTIFACTS / "report-model.png"
    shot.unlink(missing_ok=True)
    run = browser(tmp_path, "--window-size=1280,4400", f"--screenshot={shot}",
                   opened.as_uri())
    assert shot.is_file(), run.stderr[-2000:]


@needs_chromium
@pytest.mark.parametrize("width", [1280, 800])
def test_report_layout_in_headless_chromium(study: dict[str, Any], tmp_path: Path,
                                            width: int) -> None:
    """The trained study's report, every section open, at 1280 and 800 pixels: nothing past
    the window, no image over another, no text over text or cut; galleries at full size."""
    result = layout(study["dir"] / "report.html", tmp_path, width, shot="report-study")
    assert result["images"] == len(_parse(study["html"]).images)
    assert_clean_layout(result)
    galleries = [scale for alt, scale in result["shrunk"] if "images" in alt]
    assert len(galleries) == 3 + 1 and min(galleries) > 0.99
