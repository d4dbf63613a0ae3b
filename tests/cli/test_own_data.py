"""Every kind of user source trains through `archlab run`; bad data is one line, exit 2, and
never costs a stored run; a changed folder trains anew instead of mixing results."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.imagefiles import write_csv, write_folder, write_idx, write_npz
from tests.run.here import main_here

TIMEOUT = 240
STUDY = """name: own
data: {{dataset: {dataset}, validation: {{split: 0.25}}}}
train: {{optimizer: {{name: adam}}, batch_size: 16, epochs: 1}}
models:
  mlp:
    layers: [Flatten, {{Dense: {{units: 8, activation: relu}}}},
             {{Dense: {{units: 3, activation: softmax}}}}]
  cnn:
    layers:
      - Conv2D: {{filters: 4, kernel_size: 3, activation: relu}}
      - MaxPooling2D: {{pool_size: 2}}
      - Flatten
      - Dense: {{units: 3, activation: softmax}}
"""


@pytest.fixture(autouse=True)
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(tmp_path / "cache"))


def _cli(capfd: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess:
    capfd.readouterr()
    code = main_here(list(args), TIMEOUT)
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(["archlab", *args], code, out, err)


def _runs(out: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(f"file:{out / 'store.sqlite'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT run_id, status, config FROM runs ORDER BY run_id").fetchall()
    return [(r, s, json.loads(c)["dataset"]["fingerprint"]) for r, s, c in rows]


def _study(tmp_path: Path, dataset: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(dataset=dataset))
    return path


SOURCES = {
    "grey folder": (lambda d: write_folder(d / "digits", 12, 3),
                    "{folder: digits, color_mode: grayscale}", (28, 28, 1)),
    "rgb folder, mixed sizes": (lambda d: write_folder(d / "rgb", 12, 3, rgb=True,
                                                       sizes=(28, 34, 40)),
                                "{folder: rgb, image_size: [32, 32]}", (32, 32, 3)),
    "csv": (lambda d: write_csv(d / "list", 12, 3, split_column=True),
            "{csv: list/labels.csv, color_mode: grayscale}", (28, 28, 1)),
    "npz": (lambda d: write_npz(d / "digits.npz", 12, 3, rgb=True), "{npz: digits.npz}",
            (28, 28, 3)),
    "idx": (lambda d: write_idx(d / "kmnist-like", 12, 3), "{idx: kmnist-like}", (28, 28, 1)),
}


@pytest.mark.parametrize("kind", list(SOURCES))
@pytest.mark.usefixtures("one_torch_thread")
def test_each_source_trains_through_archlab_run(kind: str, tmp_path: Path, capfd) -> None:
    make, dataset, shape = SOURCES[kind]
    make(tmp_path)
    out = tmp_path / "out"
    done = _cli(capfd, "run", str(_study(tmp_path, dataset)), "--out", str(out),
                "--no-timing", "--quiet", "--no-report")
    assert done.returncode == 0, done.stderr
    h, w, c = shape
    assert f"{h}x{w} {'grey' if c == 1 else 'RGB'}, 3 classes" in done.stdout
    runs = _runs(out)
    assert [s for _, s, _ in runs] == ["finished", "finished"]
    assert len({f for _, _, f in runs}) == 1  # both runs saw the same data
    results = json.loads((out / "results.json").read_text())
    assert all(m["data"].split("@")[1] == runs[0][2][:8] for m in results["models"])


@pytest.mark.usefixtures("one_torch_thread")
def test_bad_data_is_one_line_exit_2_and_keeps_the_stored_runs(tmp_path: Path, capfd) -> None:
    root = write_folder(tmp_path / "digits", 12, 3)
    study = _study(tmp_path, "{folder: digits, color_mode: grayscale}")
    out = tmp_path / "out"
    args = ("run", str(study), "--out", str(out), "--no-timing", "--quiet", "--no-report")
    assert _cli(capfd, *args).returncode == 0
    before = _runs(out)
    victim = sorted((root / "digit1").iterdir())[4]
    damage = {
        "a text file named .png": lambda: victim.write_text("hello"),
        "a truncated PNG": lambda: victim.write_bytes(victim.read_bytes()[:60]),
        "an empty class folder": lambda: (root / "digit9").mkdir(),
    }
    for what, harm in damage.items():
        saved = victim.read_bytes()
        harm()
        done = _cli(capfd, *args)
        assert done.returncode == 2, (what, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in \
            done.stderr, (what, done.stderr)
        assert str(root) in lines[0]
        assert _runs(out) == before  # nothing stored is lost
        victim.write_bytes(saved)
        if (root / "digit9").exists():
            (root / "digit9").rmdir()


@pytest.mark.usefixtures("one_torch_thread")
def test_a_changed_folder_trains_anew_and_results_say_which_data(tmp_path: Path,
                                                                  capfd) -> None:
    root = write_folder(tmp_path / "digits", 12, 3)
    study = _study(tmp_path, "{folder: digits, color_mode: grayscale}")
    out = tmp_path / "out"
    args = ("run", str(study), "--out", str(out), "--no-timing", "--quiet", "--no-report",
            "--models", "mlp")
    assert _cli(capfd, *args).returncode == 0
    first = _runs(out)[0][2]
    again = _cli(capfd, *args)
    assert "1 run(s) already in the store were kept" in again.stdout
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(sorted((root / "digit2").iterdir())[0])
    assert _cli(capfd, *args).returncode == 0
    runs = _runs(out)
    assert len(runs) == 2 and len({f for _, _, f in runs}) == 2  # two data versions, two runs
    second = next(f for _, _, f in runs if f != first)
    wide = _cli(capfd, "results", str(out), "--wide")  # the study's current runs: new data
    assert f"folder:digits@{second[:8]}" in wide.stdout
    assert f"folder:digits@{first[:8]}" not in wide.stdout


def test_validate_prints_class_counts_and_flags_imbalance(tmp_path: Path, capfd) -> None:
    root = write_folder(tmp_path / "digits", 12, 3)
    for extra in sorted((root / "digit1").iterdir())[:8]:
        extra.unlink()
    done = _cli(capfd, "validate", str(_study(tmp_path, "{folder: digits}")), "--no-timing")
    assert done.returncode == 0, done.stderr
    assert "training images per class: digit0 10, digit1 3, digit2 10" in done.stdout
    assert "warning: the classes are imbalanced: 'digit0' has 10 training images, 'digit1' 3 " \
           "(3.3x)" in done.stderr


def _bomb_png(path: Path) -> None:
    """A PNG whose header says 30000x30000 (nothing decodable behind it)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(
        ">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0" * 9))
        + chunk(b"IEND", b""))


def _bad_source(kind: str, tmp: Path) -> tuple[str, str]:
    """A broken source of ``kind`` under ``tmp``: (the study's dataset, a file it names)."""
    import os
    import pickle

    if kind in ("bomb", "single class", "symlink loop", "CMYK"):
        root = write_folder(tmp / "d", 6, 2 if kind == "single class" else 3)
        victim = sorted((root / "digit1").iterdir())[0]
        if kind == "bomb":
            _bomb_png(victim)
        elif kind == "CMYK":
            victim.unlink()
            victim = victim.with_suffix(".jpg")
            Image.new("CMYK", (28, 28)).save(victim)
        elif kind == "single class":
            shutil_rmtree(root / "digit1")
            victim = root
        else:
            os.symlink(root / "digit1", root / "digit1" / "again")
            victim = root / "digit1" / "again"
        return "{folder: d, color_mode: grayscale}", str(victim)
    if kind == "npz pickle":
        (tmp / "d.npz").write_bytes(pickle.dumps({"x_train": np.zeros(3)}))
        return "{npz: d.npz}", str(tmp / "d.npz")
    if kind == "npz labels":
        write_npz(tmp / "d.npz", 6, 3)  # 3 class names: label 7 is out of range
        with np.load(tmp / "d.npz") as npz:
            arrays = dict(npz)
        arrays["y_test"][0] = 7
        np.savez(tmp / "d.npz", **arrays)
        return "{npz: d.npz}", str(tmp / "d.npz")
    csv_path = write_csv(tmp / "c", 6, 3)
    with csv_path.open("a") as fh:
        fh.write("../../outside.png,digit0\n" if kind == "csv outside" else
                 "images/missing.png,digit0\n")
    (tmp / "outside.png").write_bytes((tmp / "c" / "images" / "0000.png").read_bytes())
    return "{csv: c/labels.csv, color_mode: grayscale}", str(csv_path)


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


@pytest.mark.parametrize("kind", ["bomb", "CMYK", "single class", "symlink loop", "npz pickle",
                                  "npz labels", "csv outside", "csv missing"])
def test_each_bad_source_is_one_line_naming_the_file_and_exit_2(kind: str, tmp_path: Path,
                                                                 capfd) -> None:
    dataset, named = _bad_source(kind, tmp_path)
    out = tmp_path / "out"
    done = _cli(capfd, "run", str(_study(tmp_path, dataset)), "--out", str(out), "--no-timing",
                "--quiet", "--no-report")
    assert done.returncode == 2, (kind, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (kind, done.stderr)
    assert named in lines[0] or str(Path(named).parent) in lines[0], (kind, lines[0])
    assert "Traceback" not in done.stderr and not out.exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_on_bad_image_skip_trains_and_names_the_first_skipped(tmp_path: Path, capfd) -> None:
    root = write_folder(tmp_path / "digits", 12, 3)
    bad = sorted((root / "digit0").iterdir())[:4]
    for path in bad:
        path.write_text("not an image")
    study = _study(tmp_path, "{folder: digits, color_mode: grayscale, on_bad_image: skip}")
    done = _cli(capfd, "run", str(study), "--out", str(tmp_path / "out"), "--no-timing",
                "--quiet", "--no-report", "--models", "mlp")
    assert done.returncode == 0, done.stderr
    warning = next(line for line in done.stderr.splitlines() if "skipped" in line)
    assert warning.startswith("warning: skipped 4 unreadable images (on_bad_image: skip): "
                              f"{bad[0]}: not a readable image")
    assert warning.endswith("; and 1 more")
