"""A study written in a notebook cell: as a Python dict or as YAML text (load_study)."""

from __future__ import annotations

import copy

import pytest

import archlab
from archlab.errors import SpecError
from archlab.spec.io import is_study_text

YAML = """
name: cell
data: {dataset: mnist-sample}
train: {epochs: 1}
models:
  mlp:
    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]
"""

DICT = {"name": "cell", "data": {"dataset": "mnist-sample"}, "train": {"epochs": 1},
        "models": {"mlp": {"layers": ["Flatten",
                                      {"Dense": {"units": 10, "activation": "softmax"}}]}}}


def test_yaml_text_and_dict_give_the_same_study() -> None:
    from_text = archlab.load_study(YAML)
    from_dict = archlab.load_study(DICT)
    assert from_text.source == "<yaml>" and from_dict.source == "<dict>"
    assert archlab.dump_study(from_text) == archlab.dump_study(from_dict)
    assert from_text.train.epochs == 1 and list(from_text.models) == ["mlp"]


def test_the_callers_dict_is_not_changed() -> None:
    data = copy.deepcopy(DICT)
    data["models"]["mlp"]["sweep"] = {"train.batch_size": [16, 32]}
    before = copy.deepcopy(data)
    study = archlab.load_study(data)
    assert data == before
    assert sorted(study.models) == ["mlp[batch_size=16]", "mlp[batch_size=32]"]


def test_a_one_line_flow_mapping_is_text_and_a_path_is_not() -> None:
    assert archlab.load_study("{name: flow, models: {m: {layers: [Flatten, "
                              "{Dense: {units: 10, activation: softmax}}]}}}").name == "flow"
    assert is_study_text(YAML) and not is_study_text("my-study.yaml")
    assert not is_study_text("zoo:quickstart")


@pytest.mark.parametrize("source, where", [
    ("name: x\nmodels: {a: {layers: [Flatten, {Dense: {units: q}}]}}", "<yaml>"),
    ({"name": "x", "models": {"a": {"layers": ["Flaten"]}}}, "<dict>"),
])
def test_errors_are_one_line_naming_the_cell(source: object, where: str) -> None:
    with pytest.raises(SpecError) as info:
        archlab.load_study(source)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"{where}: model 'a'") and "\n" not in message


def test_bad_yaml_text_is_one_line() -> None:
    with pytest.raises(SpecError, match=r"^<yaml>: invalid YAML at line 3, column 1: "):
        archlab.load_study("name: x\nmodels: [unclosed\n")
