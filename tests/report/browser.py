"""Headless Chromium for the report tests: find it, run it, and a layout probe that reports
what overlaps, what is cut and what runs past the window, read back from the dumped DOM."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


needs_chromium = pytest.mark.skipif(
    chromium() is None, reason="chromium is not installed (Debian: apt-get install -y "
    "chromium); the headless-browser checks of report.html need it")


def browser(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = chromium()
    assert exe is not None
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"  # a fresh one per call
    cmd = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
           "--disable-extensions", "--disable-quic", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


#: Opens every model section, then measures: the page's overflow past the window, each image
#: against the window and its neighbours, and each list item or table cell of the Models list,
#: per-class lists and tables against its siblings (text drawn over other text).
LAYOUT_PROBE = """<script>
window.addEventListener("load", function () {
  var out = {};
  Array.prototype.forEach.call(document.querySelectorAll("details"), function (d) {
    d.open = true;
  });
  var doc = document.documentElement;
  out.viewport = doc.clientWidth;
  out.pageWidth = doc.scrollWidth;
  function box(el) {
    var r = el.getBoundingClientRect();
    return {x0: r.left, x1: r.right, y0: r.top + window.scrollY, y1: r.bottom + window.scrollY};
  }
  function meets(a, b) {
    return a.x0 < b.x1 - 1 && b.x0 < a.x1 - 1 && a.y0 < b.y1 - 1 && b.y0 < a.y1 - 1;
  }
  function inScroller(el) {
    for (var p = el.parentElement; p; p = p.parentElement) {
      if (p.classList && p.classList.contains("scroll")) { return true; }
    }
    return false;
  }
  var images = Array.prototype.slice.call(document.images);
  out.images = images.length;
  out.undecoded = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                        .map(function (i) { return i.alt; });
  out.imagesPastWindow = images.filter(function (i) { return box(i).x1 > out.viewport + 0.5; })
                               .map(function (i) { return i.alt; });
  out.shrunk = images.map(function (i) { return [i.alt, i.getBoundingClientRect().width /
                                                        i.naturalWidth]; });
  var overlaps = [];
  for (var a = 0; a < images.length; a++) {
    for (var b = a + 1; b < images.length; b++) {
      if (meets(box(images[a]), box(images[b]))) { overlaps.push([images[a].alt, images[b].alt]); }
    }
  }
  out.imageOverlaps = overlaps;
  var textOverlaps = [], cut = [];
  document.querySelectorAll("ol.models, ul.per-class, ul.conclusions, ul.notes, nav.toc, " +
                            "dl.facts, table.per-class, table.confused, table.metrics")
    .forEach(function (list) {
      var items = Array.prototype.slice.call(
        list.querySelectorAll("li, a, dt, dd, td, th"));
      for (var i = 0; i < items.length; i++) {
        var el = items[i];
        if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== "visible") {
          cut.push(el.textContent.slice(0, 60));
        }
        if (!inScroller(el) && box(el).x1 > out.viewport + 0.5) {
          cut.push("past the window: " + el.textContent.slice(0, 60));
        }
        for (var j = i + 1; j < items.length; j++) {
          var other = items[j];
          if (el.contains(other) || other.contains(el)) { continue; }
          if (meets(box(el), box(other))) {
            textOverlaps.push([el.textContent.slice(0, 40), other.textContent.slice(0, 40)]);
          }
        }
      }
    });
  out.textOverlaps = textOverlaps;
  out.cut = cut;
  var pre = document.createElement("pre");
  pre.id = "layout-result";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def layout(page: Path, tmp: Path, width: int, shot: str | None = None) -> dict[str, Any]:
    """The probe's measurements of ``page`` in a ``width``-pixel window (every section
    open); with ``shot``, also a screenshot of the opened page in test-artifacts/."""
    text = page.read_text(encoding="utf-8")
    probe = tmp / f"probe-{width}.html"
    probe.write_text(text.replace("<head>", "<head>\n" + LAYOUT_PROBE, 1), encoding="utf-8")
    run = browser(tmp, "--virtual-time-budget=20000", f"--window-size={width},2000",
                  "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="layout-result">(.*?)</pre>', run.stdout, re.S)
    assert found, f"no probe result (exit {run.returncode}): {run.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    if shot:
        opened = tmp / f"opened-{width}.html"
        opened.write_text(re.sub(r'<details class="model" id=', '<details class="model" open '
                                 'id=', text), encoding="utf-8")
        ARTIFACTS.mkdir(exist_ok=True)
        target = ARTIFACTS / f"{shot}-{width}.png"
        target.unlink(missing_ok=True)
        run = browser(tmp, f"--window-size={width},6000", f"--screenshot={target}",
                      opened.as_uri())
        assert target.is_file(), run.stderr[-2000:]
    return result


def assert_clean_layout(result: dict[str, Any]) -> None:
    """Nothing past the window (tables scroll inside their own box), no image over another,
    no text over other text or cut, every image decoded."""
    assert result["pageWidth"] <= result["viewport"], "the page scrolls sideways"
    assert result["undecoded"] == []
    assert result["imagesPastWindow"] == []
    assert result["imageOverlaps"] == []
    assert result["textOverlaps"] == []
    assert result["cut"] == []
