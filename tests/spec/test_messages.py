"""Every message and hint is worded in one place (spec/messages.py): the validators only carry
data, and each message names its place with the schema's classes, not their spelling."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from archlab import SpecError, parse_study
from archlab.spec import Study

OUT = {"Dense": {"units": 10, "activation": "softmax"}}


def study(**changes: Any) -> dict[str, Any]:
    return {"name": "s", "models": {"m": {"layers": ["Flatten", OUT]}}, **changes}


def raw_error(data: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as info:
        Study.model_validate(data)
    return dict(info.value.errors()[0])


@pytest.mark.parametrize(("data", "kind", "ctx"), [
    (study(train={"optimizer": "adamm"}), "unknown_optimizer", {"name": "adamm"}),
    (study(models={"m": {"layers": [{"Dense": 5}, OUT]}}), "layer_args", {"name": "Dense"}),
    (study(models={"m": {"layers": [{"Dense": {}, "Flatten": None}, OUT]}}), "layer_item",
     None),
    (study(models={"m": {"layers": ["Dens", OUT]}}), "unknown_layer", {"name": "Dens"}),
    (study(train={"optimizer": {"name": "sgd", "lr": 1, "learning_rate": 1}}), "lr_twice",
     None),
    (study(name=".."), "unsafe_name", {"name": ".."}),
], ids=["optimizer", "layer-args", "layer-item", "layer", "lr-twice", "name"])
def test_validators_carry_data_not_wording(data: dict[str, Any], kind: str,
                                           ctx: dict[str, Any] | None) -> None:
    err = raw_error(data)
    assert err["type"] == kind
    assert err.get("ctx") == ctx
    assert "did you mean" not in err["msg"]  # hints are added once, by the message module


@pytest.mark.parametrize(("data", "message"), [
    (study(train={"optimizer": "adamm"}),
     "s.yaml: field 'train.optimizer': Unknown optimizer 'adamm' (did you mean 'adam'?)"),
    (study(train={"optimizer": "foo"}), "Unknown optimizer 'foo'; expected one of sgd, adam, "
                                        "adadelta, rmsprop, adagrad, nadam"),
    (study(models={"m": {"layers": [{"Dense": 5}, OUT]}}),
     "s.yaml: model 'm', layer 1 (Dense): Expected a mapping of arguments for Dense, received 5 "
     "(did you mean 'Dense: {units: 5}'?)"),
    (study(models={"m": {"layers": ["Flatten", {"Dense": {"units": 3,
                                                          "kernel_regularizer": 0.1}}, OUT]}}),
     "field 'kernel_regularizer': Expected a regularizer such as {l2: 0.01}, received 0.1 "
     "(did you mean '{l2: 0.1}'?)"),
    (study(models={"m": [OUT]}), "s.yaml: model 'm': Expected a model (a mapping with "
                                 "'layers'), received [{Dense: {units: 10, activation: "
                                 "'softmax'}}] (put the layers under 'layers:')"),
], ids=["close-optimizer", "far-optimizer", "layer-args", "regularizer", "model"])
def test_one_hint_per_message(data: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_study(data, "s.yaml")
    text = str(info.value)
    assert message in text, text
    assert text.count("did you mean") <= 1 and text.count("expected one of") <= 1
