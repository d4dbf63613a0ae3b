"""Hostile or careless study files: YAML bombs and deep nesting, names that are not path
components, numbers torch cannot hold. Each is refused by `archlab validate` with one line and
exit code 2, quickly, before anything is built or trained."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from archlab import SpecError, load_study, parse_study
from archlab.cli import main
from archlab.fields import MAX_NAME_LENGTH, MAX_SIZE
from archlab.layers import LAYER_TYPES
from archlab.optimizers import OPTIMIZERS
from archlab.spec import DataSpec, EarlyStopping, NormalizeArgs, Split, Study, TrainSpec
from archlab.spec.io import MAX_DEPTH, MAX_VALUES

MODEL = "models:\n  m:\n    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]\n"


@pytest.fixture(autouse=True, scope="module")
def _commands_imported() -> None:
    # The CLI imports a command's modules (torch among them) on first use: that one-off cost
    # is start-up, not the refusal these tests time.
    main(["validate", "--no-timing", "zoo:quickstart"])


def validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    """`archlab validate --no-timing PATH`: exit code, stderr, seconds."""
    t0 = time.perf_counter()
    rc = main(["validate", "--no-timing", str(path)])
    seconds = time.perf_counter() - t0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return rc, captured.err, seconds


def assert_refused(rc: int, err: str, *parts: str) -> None:
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, f"not one line: {err!r}"
    for part in parts:
        assert part in err, f"{part!r} not in {err!r}"


def billion_laughs(levels: int = 9) -> str:
    """The classic: each anchor a list of ten aliases of the previous one (10^9 strings)."""
    lines = ["name: bomb", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", '
             '"lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n" + MODEL


# ---------------------------------------------------------------------------------------------
# YAML


def test_billion_laughs_is_refused_in_under_a_second(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bomb.yaml"
    f.write_text(billion_laughs())
    rc, err, seconds = validate(f, capsys)
    assert_refused(rc, err, str(f), "invalid YAML at line", f"more than {MAX_VALUES:,} values",
                   "aliases")
    assert seconds < 1.0, seconds


def test_billion_laughs_inside_a_model_and_through_merge_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # "Anywhere in a study": in a model's description, and through `<<:` merge keys, which
    # PyYAML's constructor copies (the expansion would happen while loading, not after).
    nested = tmp_path / "nested.yaml"
    body = billion_laughs(8).replace("name: bomb\n", "").replace(MODEL, "")
    nested.write_text("name: n\nmodels:\n  m:\n    description:\n" + "".join(
        f"      {line}\n" for line in body.splitlines())
        + "    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]\n")
    merge = tmp_path / "merge.yaml"
    keys = ", ".join(f"k{i}: {i}" for i in range(10))
    lines = ["name: merge", f"a0: &a0 {{{keys}}}"]
    lines += [f"a{i}: &a{i} {{<<: [" + ", ".join([f"*a{i - 1}"] * 10) + "]}" for i in range(1, 8)]
    merge.write_text("\n".join(lines) + "\n" + MODEL)
    for f in (nested, merge):
        rc, err, seconds = validate(f, capsys)
        assert_refused(rc, err, str(f), f"more than {MAX_VALUES:,} values")
        assert seconds < 1.0, (f, seconds)


def test_billion_laughs_from_the_command_line_process(tmp_path: Path) -> None:
    f = tmp_path / "bomb.yaml"
    f.write_text(billion_laughs())
    # The whole process (Python start-up and torch import included) on a busy machine: the
    # point is that it ends, with code 2 and one line, instead of growing until killed.
    proc = subprocess.run([sys.executable, "-m", "archlab", "validate", "--no-timing", str(f)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "values once its aliases are expanded" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("style", ["flow", "block-list", "block-map", "json"])
def test_deep_nesting_is_one_line(style: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    depth = 5000
    if style == "flow":
        f = tmp_path / "deep.yaml"
        f.write_text("name: deep\nx: " + "[" * depth + "]" * depth + "\n" + MODEL)
    elif style == "block-list":
        f = tmp_path / "deep.yaml"
        f.write_text("name: deep\nx:\n" + "".join(" " * (i + 2) + "-\n" for i in range(depth)))
    elif style == "block-map":
        f = tmp_path / "deep.yaml"
        f.write_text("name: deep\nx:\n" + "".join(" " * (i + 2) + f"k{i}:\n"
                                                  for i in range(depth)))
    else:
        f = tmp_path / "deep.json"
        f.write_text('{"name": "deep", "x": ' + "[" * depth + "]" * depth + "}")
    rc, err, seconds = validate(f, capsys)
    assert_refused(rc, err, str(f), f"nested more than {MAX_DEPTH} levels deep")
    assert seconds < 5.0, seconds  # the 12 MB block files take a moment to read


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "loop.yaml"
    f.write_text("name: loop\nx: &a [1, *a]\n" + MODEL)
    rc, err, _ = validate(f, capsys)
    assert_refused(rc, err, "'*a' is inside its own anchor")


def test_ordinary_anchors_still_work(tmp_path: Path) -> None:
    # Sharing a list of layers between models is what anchors are for: not a bomb.
    f = tmp_path / "shared.yaml"
    f.write_text("name: shared\nmodels:\n"
                 "  a:\n    layers: &stack\n      - Conv2D: {filters: 4, kernel_size: 3}\n"
                 "      - Flatten\n      - Dense: {units: 10, activation: softmax}\n"
                 "  b:\n    train: {batch_size: 64}\n    layers: *stack\n")
    study = load_study(f)
    assert study.models["a"].layers == study.models["b"].layers
    assert len(study.models["b"].layers) == 3


def test_the_limits_leave_room_for_real_studies() -> None:
    from archlab import zoo_names

    for name in zoo_names():  # the largest built-in studies load well inside both limits
        load_study(f"zoo:{name}")
    assert MAX_DEPTH >= 50 and MAX_VALUES >= 50_000


# ---------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(("study_name", "model_name", "expected"), [
    ("..", "m", ["field 'name'", "can be a directory name", "received '..'"]),
    (".", "m", ["field 'name'", "received '.'"]),
    ("ok", "..", ["model '..'", "model name that can be a directory name"]),
    ("x" * 300, "m", ["field 'name'", f"at most {MAX_NAME_LENGTH} characters",
                      "received 300 characters"]),
    ("ok", "y" * 101, ["model 'yyyy", "at most 100 characters", "received 101 characters"]),
    ("a/b", "m", ["field 'name'", "letters, digits"]),
], ids=["study-dotdot", "study-dot", "model-dotdot", "study-300", "model-101", "slash"])
def test_names_must_be_path_components(study_name: str, model_name: str, expected: list[str],
                                       tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(f"name: '{study_name}'\nmodels:\n  '{model_name}':\n"
                 "    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]\n")
    rc, err, _ = validate(f, capsys)
    assert_refused(rc, err, str(f), *expected)
    assert len(err) < 300  # a 300-character name is not echoed whole


def test_names_with_dots_inside_are_fine() -> None:
    study = parse_study({"name": "v1.2", "models": {"m.1": {"layers": [
        "Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]}}})
    assert study.name == "v1.2" and "m.1" in study.models
    assert parse_study({**study.to_config(), "name": "n" * MAX_NAME_LENGTH}).name


# ---------------------------------------------------------------------------------------------
# Numbers


@pytest.mark.parametrize(("yaml_text", "expected"), [
    ("train: {optimizer: {name: adam, learning_rate: .inf}}",
     ["field 'train.optimizer.learning_rate'", "finite", "received .inf"]),
    ("train: {optimizer: {name: sgd, learning_rate: .nan}}",
     ["field 'train.optimizer.learning_rate'", "finite", "received .nan"]),
    ("train: {early_stopping: {min_delta: .inf}}", ["min_delta", "received .inf"]),
    ("data: {preprocessing: {normalize: {axis: 7}}}",
     ["field 'data.preprocessing.normalize.axis'", "Expected an integer >= -3 and <= 2",
      "received 7", "(images, height, width)"]),
    ("data: {preprocessing: {normalize: {axis: -4}}}", ["received -4"]),
    ("train: {batch_size: 1000000000000000000000000000000}",
     ["field 'train.batch_size'", f"<= {MAX_SIZE}", "received 1000000000000000000000000000000"]),
    ("train: {epochs: 100000000000000000000}", ["field 'train.epochs'", f"<= {MAX_SIZE}"]),
    ("train: {repeats: 1000000}", ["field 'train.repeats'", "<= 1000"]),
    ("seed: 100000000000000000000", ["field 'seed'", "<= 4294967295"]),
], ids=["lr-inf", "lr-nan", "min-delta-inf", "axis-7", "axis-minus-4", "batch-1e30",
        "epochs-1e20", "repeats-1e6", "seed-1e20"])
def test_numbers_out_of_range(yaml_text: str, expected: list[str], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(f"name: s\n{yaml_text}\n" + MODEL)
    rc, err, _ = validate(f, capsys)
    assert_refused(rc, err, str(f), *expected)


def test_layer_sizes_have_upper_bounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("name: s\nmodels:\n  m:\n    layers:\n      - Flatten\n"
                 "      - Dense: {units: 1000000000000}\n"
                 "      - Dense: {units: 10, activation: softmax}\n")
    rc, err, _ = validate(f, capsys)
    assert_refused(rc, err, "model 'm', layer 2 (Dense), field 'units'", f"<= {MAX_SIZE}",
                   "received 1000000000000")


@pytest.mark.parametrize("axis", [-3, -1, 0, 1, 2])
def test_every_axis_of_the_image_array_is_accepted(axis: int) -> None:
    assert NormalizeArgs(axis=axis).axis == axis


def _float_fields(cls: type[BaseModel]) -> list[str]:
    def is_float(annotation: Any) -> bool:
        return annotation is float or any(is_float(a) for a in get_args(annotation)
                                          if not isinstance(a, FieldInfo))

    return [name for name, info in cls.model_fields.items() if is_float(info.annotation)]


def _schema_classes() -> list[type[BaseModel]]:
    return [Split, NormalizeArgs, DataSpec, EarlyStopping, TrainSpec, Study,
            *OPTIMIZERS.values(), *LAYER_TYPES.values()]


def test_every_float_field_is_finite() -> None:
    checked = []
    for cls in _schema_classes():
        for field in _float_fields(cls):
            for bad in (math.inf, -math.inf, math.nan):
                with pytest.raises(ValidationError) as info:
                    cls.model_validate({**_required(cls), field: bad})
                # An optimizer's learning_rate is a number or a schedule: pydantic files the
                # number's errors under that branch's tag, 'number'.
                assert any(e["loc"][-1] == field or e["loc"][-2:] == (field, "number")
                           for e in info.value.errors()), (cls, field)
            checked.append(f"{cls.__name__}.{field}")
    # learning rates, betas, epsilons, decay, clipnorm, rates, momentum, min_delta, split, l2...
    assert len(checked) >= 25, checked
    assert "Adam.learning_rate" in checked and "BatchNormalization.epsilon" in checked


def _required(cls: type[BaseModel]) -> dict[str, Any]:
    """The smallest valid values for a class's required fields."""
    values = {"units": 1, "filters": 1, "kernel_size": 1, "rate": 0.5, "activation": "relu",
              "branches": [[], []], "stddev": 0.1, "target_shape": [1],
              "name": "s", "models": {"m": {"layers": ["Flatten"]}}}
    return {f: values[f] for f, info in cls.model_fields.items() if info.is_required()}


def test_finite_numbers_are_still_accepted_in_every_float_field() -> None:
    study = parse_study({"name": "s", "train": {"optimizer": {"name": "adam", "lr": 1e-3,
                                                              "clipnorm": 1.0}},
                         "models": {"m": {"layers": ["Flatten", {"Dense": {
                             "units": 10, "activation": "softmax",
                             "kernel_regularizer": {"l2": 0.01}}}]}}})
    assert study.train.optimizer.learning_rate == 1e-3


def test_errors_are_spec_errors_in_the_python_api() -> None:
    with pytest.raises(SpecError, match="finite"):
        parse_study({"name": "s", "train": {"optimizer": {"name": "sgd", "momentum": math.nan}},
                     "models": {"m": {"layers": ["Flatten"]}}})
