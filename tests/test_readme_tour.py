"""The README's tour, run line by line as written (tests keep it true): each `archlab` line of
its ```bash block in a fresh folder, in order, with only what a test must change: one epoch
and one repeat per run, no projection timing, no progress bars,
no report written by a run (the tour's `archlab report` lines write theirs); full MNIST where it
is installed (else the dry run's study on mnist-sample); `digit.png` made from a real
mnist-sample test digit; `--device cuda` expected to be refused in one line without a GPU."""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from tests.conftest import MNIST_DIR

README = Path(__file__).resolve().parents[1] / "README.md"


def tour_lines() -> list[str]:
    text = README.read_text(encoding="utf-8")
    tour = text[text.index("## A tour"):]
    block = re.search(r"```bash\n(.*?)```", tour, re.S)
    assert block is not None, "the README's tour has no ```bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def set_option(argv: list[str], option: str, value: str | None) -> list[str]:
    """argv with ``option`` set to ``value`` (added when absent; a flag when value is None)."""
    if option in argv:
        i = argv.index(option)
        return argv if value is None else [*argv[:i + 1], value, *argv[i + 2:]]
    return [*argv, option] + ([] if value is None else [value])


def adapt(argv: list[str], folder: Path) -> list[str]:
    """What a test changes in a tour command (see the module doc)."""
    if argv[0] != "run":
        return argv
    argv = set_option(argv, "--epochs", "1")
    argv = set_option(argv, "--repeats", "1")
    for flag in ("--no-timing", "--quiet", "--no-report"):  # `archlab report` writes one
        argv = set_option(argv, flag, None)
    if argv[1] == "zoo:kernels-padding":  # full MNIST
        if MNIST_DIR.is_dir():
            argv = set_option(argv, "--data-dir", str(MNIST_DIR))
        else:
            import archlab

            config = copy.deepcopy(archlab.load_study("zoo:kernels-padding").to_config())
            config["data"]["dataset"] = "mnist-sample"
            sample = folder / "kernels-padding-sample.yaml"
            sample.write_text(yaml.safe_dump(config, sort_keys=False))
            argv = [argv[0], str(sample), *argv[2:]]
    return argv


def make_digit(path: Path) -> None:
    from PIL import Image

    from archlab.data import load_dataset

    x = load_dataset("mnist-sample").x_test[7]
    image = np.asarray(x).reshape(x.shape[0], x.shape[1])
    # A photo-like picture: dark ink on white paper, larger than 28x28.
    Image.fromarray(255 - image.astype(np.uint8)).resize((112, 112)).save(path)


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    import torch

    env = {**os.environ, "ARCHLAB_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    lines = tour_lines()
    assert len(lines) >= 15
    for line in lines:
        words = shlex.split(line, comments=True)
        assert words[0] == "archlab", line
        redirect = None
        if ">" in words:
            i = words.index(">")
            redirect, words = words[i + 1], words[:i]
        if "digit.png" in words:
            make_digit(tmp_path / "digit.png")
        argv = adapt(words[1:], tmp_path)
        done = subprocess.run([sys.executable, "-m", "archlab", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        if "cuda" in argv and not torch.cuda.is_available():
            assert done.returncode == 2, (line, done.stderr)
            assert done.stderr.count("\n") == 1 and "--device" in done.stderr, done.stderr
            continue
        assert done.returncode == 0, f"{line}\n{' '.join(argv)}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, done.stderr
        if redirect is not None:
            (tmp_path / redirect).write_text(done.stdout)
    # What the tour says it leaves behind.
    assert yaml.safe_load((tmp_path / "my-study.yaml").read_text())["name"] == "quickstart"
    assert (tmp_path / "archlab-runs" / "quickstart" / "results.md").is_file()
    assert (tmp_path / "rep" / "report.html").is_file()
    assert (tmp_path / "compare.html").is_file()
    assert (tmp_path / "conv3.onnx").stat().st_size > 0
    assert '"$schema"' in (tmp_path / "study.schema.json").read_text() or \
        '"properties"' in (tmp_path / "study.schema.json").read_text()
