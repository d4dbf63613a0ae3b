"""report.html's order and layout on crafted stores (nothing trains): models ranked, a search
in its own section, a 100-class study listed instead of drawn, the sample gallery from the run
files, in colour; and headless Chromium at 1280 and 800 pixels finding nothing over anything,
cut or past the window in a 10-class report with long names, a 100-class one and a sweep."""

from __future__ import annotations

import html
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archlab.report import REPORT_FILES, write_report
from archlab.store import Store
from tests.analysis.crafted import Run, write_store
from tests.report.browser import assert_clean_layout, layout, needs_chromium
from tests.report.crafted_predictions import crafted, write_predictions
from tests.report.test_terminal_text import _search_study


def _classes_study(directory: Path, k: int, models: dict[str, list[float]], *,
                   channels: int = 3, samples: bool = True, failed: str | None = None) -> Path:
    """A study whose finished runs stored predictions on a crafted k-class test set."""
    runs = [Run(m, i, acc, seed=10 + i) for m, accs in models.items()
            for i, acc in enumerate(accs)]
    if failed:
        runs.append(Run(failed, 0, None))
    write_store(directory, runs)
    with Store(directory) as store:
        store.set_meta(data_sizes={"train": 500 * k, "val": 50 * k, "test": 10 * k,
                                   "classes": k})
    for j, (m, accs) in enumerate(models.items()):
        for i, acc in enumerate(accs):
            pred = crafted(k, accuracy=acc, channels=channels, seed=10 * j + i)
            if not samples:  # as runs wrote them before samples were stored
                from dataclasses import replace

                pred = replace(pred, sample_images=np.zeros((0, 0, 0), np.float32),
                               sample_labels=np.zeros(0, np.int64))
            write_predictions(directory, f"{m}-{i}", pred)
    return directory


def _rgb(path: Path) -> np.ndarray:
    with Image.open(io.BytesIO(path.read_bytes())) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def test_models_and_table_are_in_rank_order(tmp_path: Path) -> None:
    """Study order k5, k3bn, mlp, tie, broken; ranked by mean test accuracy: k3bn, then k5 and
    tie (equal means share rank 2), mlp 4th, broken (no finished run) last, without a rank."""
    d = _classes_study(tmp_path / "s", 10, {"k5": [0.868, 0.87], "k3bn": [0.89, 0.8903],
                                              "mlp": [0.85, 0.851], "tie": [0.87, 0.868]},
                       failed="broken")
    html_path, md_path = write_report(d, on_warning=lambda w: None)
    text, md = html_path.read_text(), md_path.read_text()
    order = re.findall(r'<tr[^>]*data-model="([^"]+)"', text)
    assert order == ["k3bn", "k5", "tie", "mlp", "broken"]
    ranks = re.findall(r'<tr[^>]*data-model="[^"]+">\s*<td data-sort="[^"]*" class="num">'
                       r'([^<]*)</td>', text)
    assert ranks == ["1", "2", "2", "4", "–"]
    listed = re.findall(r'<li><span class="rank">([^<]*)</span><a href="#model-\d">([^<]+)</a>',
                        text)
    assert listed == [("1.", "k3bn"), ("2.", "k5"), ("2.", "tie"), ("4.", "mlp"),
                      ("–", "broken")]
    headers = re.findall(r"<th scope=\"col\"[^>]*>([^<]*)</th>", text)
    assert headers[:3] == ["rank", "model", "test acc"]
    assert "- 1. [k3bn](#model-k3bn)" in md and "- – [broken](#model-broken)" in md
    md_header = next(line for line in md.splitlines() if line.startswith("| rank"))
    assert md_header.startswith("| rank | model | test acc |")
    # each section keeps its anchor (study order) and shows its rank
    section = text.split('id="model-1"', 1)[1].split("</details>", 1)[0]
    assert '<span class="name">k3bn</span>' in section and ">1.</span>" in section


def test_search_has_its_own_section(tmp_path: Path) -> None:
    d = _search_study(tmp_path / "search")
    html_path, md_path = write_report(d, on_warning=lambda w: None)
    text, md = html.unescape(html_path.read_text()), md_path.read_text()
    assert 'href="#search"' in text
    search = re.search(r'<section id="search">(.*?)</section>', text, re.S)
    assert search is not None
    body = search.group(1)
    assert "Confirmed winner: mlp.trial004" in body
    assert "On val_accuracy over the 3 confirmation seeds: mlp.trial004" in body
    assert "rated from only 5 complete trials: treat them as a rough hint" in body
    assert body.count("<img ") == 3  # history, importances, confirmed ranking
    for section in re.findall(r'<details class="model".*?</details>', text, re.S):
        assert "search_history" not in section and "Confirmed winner" not in section
    assert "## Search" in md and f"]({REPORT_FILES}/search_importances.png)" in md
    assert "rated from only 5 complete trials" in md


def test_hundred_classes_are_listed_not_drawn(tmp_path: Path) -> None:
    k = 100
    d = _classes_study(tmp_path / "c100", k, {"resnet": [0.6, 0.62], "mlp": [0.3, 0.31]})
    html_path, md_path = write_report(d, on_warning=lambda w: None)
    text = html.unescape(html_path.read_text())
    files = sorted(p.name for p in (d / REPORT_FILES).iterdir())
    assert not any(name.endswith("_confusion.png") for name in files)
    assert "resnet_mistakes.png" in files and "samples.png" in files
    section = text.split('id="model-0"', 1)[1].split("</details>", 1)[0]
    assert "With 100 classes the confusion matrix is not drawn" in section
    assert "<h3>Most-confused pairs</h3>" in section
    pairs = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td class=\"num\">(\d+)</td>",
                       section)
    counts = [int(n) for _, _, n in pairs]
    assert len(pairs) == 10 and counts == sorted(counts, reverse=True)
    assert "(100 classes, lowest first" in section
    accs = [float(a) for a in re.findall(r'<li>[^<]*<span class="num">([\d.]+)% \(\d+\)</span>',
                                         section)]
    assert len(accs) == k and accs == sorted(accs)
    assert "samples" in text and "20 of the 100 classes" in text


def test_sample_gallery_comes_from_the_run_files_in_colour(tmp_path: Path) -> None:
    d = _classes_study(tmp_path / "colour", 10, {"a": [0.8], "b": [0.7]})
    text = write_report(d, on_warning=lambda w: None)[0].read_text()
    assert '<section id="samples">' in text and 'href="#samples"' in text
    pixels = _rgb(d / REPORT_FILES / "samples.png")
    assert (np.abs(pixels[..., 0] - pixels[..., 2]) > 40).mean() > 0.05  # in colour
    grey = _classes_study(tmp_path / "grey", 10, {"a": [0.8]}, channels=1)
    write_report(grey, on_warning=lambda w: None)
    pixels = _rgb(grey / REPORT_FILES / "samples.png")
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    old = _classes_study(tmp_path / "old", 10, {"a": [0.8]}, samples=False)
    text = write_report(old, on_warning=lambda w: None)[0].read_text()
    assert 'id="samples"' not in text
    assert not (old / REPORT_FILES / "samples.png").exists()


SWEEP_YAML = """\
name: crafted
data: {dataset: mnist, validation: test}
models:
  convolutional_network_with_long_name:
    layers: [Flatten, {Dense: {units: 32, activation: relu}},
             {Dense: {units: 10, activation: softmax}}]
    sweep:
      train.batch_size: [32, 128]
      layers.1.Dense.units: [8, 16, 32]
"""


def _sweep_study(directory: Path) -> Path:
    runs = [Run(f"convolutional_network_with_long_name[batch_size={b},units={u}]", r,
                0.8 + 0.01 * i + 0.004 * r, seed=10 + r)
            for i, (b, u) in enumerate((b, u) for b in (32, 128) for u in (8, 16, 32))
            for r in range(3)]
    write_store(directory, runs)
    (directory / "study.yaml").write_text(SWEEP_YAML)
    return directory


@needs_chromium
@pytest.mark.parametrize("width", [1280, 800])
@pytest.mark.parametrize("kind", ["classes10", "classes100", "sweep"])
def test_nothing_overlaps_or_is_cut_in_chromium(tmp_path: Path, kind: str, width: int) -> None:
    if kind == "sweep":
        d = _sweep_study(tmp_path / kind)
    else:
        k = 11 if kind == "classes10" else 100  # 11: ten names of up to 30 characters + one
        d = _classes_study(tmp_path / kind, k, {"k5": [0.7, 0.72], "k3bn": [0.8, 0.81],
                                                  "mlp_with_a_much_longer_name": [0.6, 0.61]},
                           failed="broken")
    page = write_report(d, on_warning=lambda w: None)[0]
    result = layout(page, tmp_path, width, shot=f"report-{kind}")
    assert result["images"] > 5
    assert_clean_layout(result)
    if kind != "sweep":  # galleries are never shrunk to fit, not even at 800 pixels
        galleries = [scale for alt, scale in result["shrunk"] if "images" in alt]
        assert len(galleries) == 3 + 1 and min(galleries) > 0.99
