"""Every error of a study at once, one line each (up to 20, then a count), so a user fixes a
study in one pass: the spec's errors when it is read, and every model's shape or output
problem when `archlab validate` builds the models."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import archlab
from archlab.errors import SpecError
from archlab.spec.messages import MAX_ERRORS

BAD = """\
name: bad
data: {dataset: mnist-sample}
train: {epochs: 0, batch_size: -3, optimizer: {name: adamm}}
models:
  a:
    layers:
      - Conv2D: {filters: 0, kernel_size: 3, activaton: relu}
      - Flatten
      - Dense: {units: 10, activation: softmax}
  b:
    layers: [Flatten, {Dense: {unit: 10}}, {Dense: {units: 10, activation: softmx}}]
"""

EXPECTED = [
    "field 'train.optimizer': Unknown optimizer 'adamm' (did you mean 'adam'?)",
    "field 'train.batch_size': Expected a positive integer, received -3",
    "field 'train.epochs': Expected a positive integer, received 0",
    "model 'a', layer 1 (Conv2D): Unknown argument 'activaton' (did you mean 'activation'?)",
    "model 'a', layer 1 (Conv2D), field 'filters': Expected a positive integer, received 0",
    "model 'b', layer 2 (Dense): Unknown argument 'unit' (did you mean 'units'?)",
    "model 'b', layer 3 (Dense), field 'activation': Expected an activation, received 'softmx'",
]


def validate(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archlab", "validate", str(path), *args],
                          capture_output=True, text=True, timeout=120)


def test_every_spec_error_is_a_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    with pytest.raises(SpecError) as caught:
        archlab.load_study(str(path))
    lines = caught.value.lines
    assert len(lines) == len(EXPECTED)
    for line, expected in zip(lines, EXPECTED, strict=True):
        assert line.startswith(f"{path}: {expected}")
    assert str(caught.value) == f"{lines[0]} (and 6 more errors)"  # the one-line form stays
    done = validate(path, "--no-timing")
    assert done.returncode == 2 and done.stdout == ""
    err = done.stderr.splitlines()
    assert err == [f"error: {line}" for line in lines]
    assert "Traceback" not in done.stderr


def test_more_than_twenty_errors_are_counted(tmp_path: Path) -> None:
    models = {f"m{i}": {"layers": ["Flatten", {"Dense": {"units": -i - 1}}]} for i in range(25)}
    with pytest.raises(SpecError) as caught:
        archlab.parse_study({"name": "many", "data": {"dataset": "mnist-sample"},
                             "models": models}, "many.yaml")
    lines = caught.value.lines
    assert len(lines) == MAX_ERRORS + 1
    assert all("field 'units': Expected a positive integer" in line for line in lines[:-1])
    assert lines[-1] == "many.yaml: ... and 5 more errors"


SHAPES: dict[str, Any] = {
    "name": "shapes",
    "data": {"dataset": "mnist-sample"},
    "models": {
        "ok": {"layers": ["Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]},
        "big_kernel": {"layers": [{"Conv2D": {"filters": 2, "kernel_size": 40}}, "Flatten",
                                  {"Dense": {"units": 10, "activation": "softmax"}}]},
        "wrong_classes": {"layers": ["Flatten", {"Dense": {"units": 7,
                                                           "activation": "softmax"}}]},
        "no_softmax": {"layers": ["Flatten", {"Dense": {"units": 10}}]},
    },
}


def test_validate_lists_every_models_build_problem(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "shapes.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(SHAPES), sort_keys=False))
    done = validate(path, "--no-timing")
    assert done.returncode == 2, done.stderr
    err = done.stderr.splitlines()
    assert len(err) == 3 and all(line.startswith(f"error: {path}: model '") for line in err)
    assert ["big_kernel" in err[0], "wrong_classes" in err[1], "no_softmax" in err[2]] == [
        True, True, True]
    assert "Traceback" not in done.stderr
