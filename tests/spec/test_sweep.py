"""Sweeps: a model's `sweep:` grid expands into one validated model per point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from archlab.errors import SpecError
from archlab.spec import dump_study, load_study, parse_study
from archlab.spec.sweep import MAX_POINTS

MLP = [
    "Flatten",
    {"Dense": {"units": 32, "activation": "relu"}},
    {"Dense": {"units": 10, "activation": "softmax"}},
]
GRID = {
    "train.batch_size": [32, 128],
    "train.optimizer.learning_rate": [0.01, 0.1],
    "layers.1.Dense.units": [32, 128],
}


def study(sweep: Any, layers: Any = None, **top: Any) -> dict[str, Any]:
    return {"name": "sw", **top,
            "models": {"mlp": {"layers": layers or MLP, "sweep": sweep},
                       "plain": {"layers": [MLP[0], MLP[2]]}}}


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_grid_expands_to_the_cartesian_product_with_readable_names() -> None:
    s = parse_study(study(GRID, train={"optimizer": "sgd"}))
    swept = [n for n in s.models if n != "plain"]
    assert len(swept) == 8
    assert swept[0] == "mlp[batch_size=32,learning_rate=0.01,units=32]"
    assert swept[-1] == "mlp[batch_size=128,learning_rate=0.1,units=128]"
    assert list(s.models)[-1] == "plain" and s.models["plain"].swept == {}
    name = "mlp[batch_size=128,learning_rate=0.1,units=32]"
    m = s.models[name]
    assert m.swept == {"train.batch_size": 128, "train.optimizer.learning_rate": 0.1,
                       "layers.1.Dense.units": 32}
    train = s.train_for(name)
    assert train.batch_size == 128
    # The study's optimizer is copied into the point; only the learning rate changes.
    assert train.optimizer.to_config() == {"name": "sgd", "learning_rate": 0.1}
    assert m.layers[1].to_config()["Dense"] == {"units": 32, "activation": "relu"}
    assert s.models["mlp[batch_size=32,learning_rate=0.01,units=128]"].layers[1] \
        .to_config()["Dense"]["units"] == 128


def test_points_round_trip_with_their_swept_values(tmp_path: Path) -> None:
    s = parse_study(study(GRID))
    again = load_study(write(tmp_path, yaml.safe_load(dump_study(s))))
    assert again.models == s.models
    assert again.to_config() == s.to_config()


def test_same_tail_paths_get_longer_labels_and_lists_read_as_3x3() -> None:
    layers = ["Flatten", {"Dense": {"units": 16}}, {"Dense": {"units": 16}},
              {"Dense": {"units": 10, "activation": "softmax"}}]
    s = parse_study(study({"layers.1.Dense.units": [8], "layers.2.Dense.units": [4, 12]},
                          layers=layers))
    assert "mlp[1.Dense.units=8,2.Dense.units=12]" in s.models
    cnn = [{"Conv2D": {"filters": 4, "kernel_size": 3}}, "Flatten",
           {"Dense": {"units": 10, "activation": "softmax"}}]
    s = parse_study(study({"layers.0.Conv2D.kernel_size": [[3, 3], [5, 5]]}, layers=cnn))
    assert [n for n in s.models if n.startswith("mlp")] == ["mlp[kernel_size=3x3]",
                                                             "mlp[kernel_size=5x5]"]


def test_a_bare_layer_and_a_string_optimizer_can_be_swept() -> None:
    layers = ["Flatten", "BatchNormalization", MLP[2]]
    s = parse_study(study({"layers.1.BatchNormalization.momentum": [0.9, 0.5]}, layers=layers,
                          train={"optimizer": "adam"}))
    assert s.models["mlp[momentum=0.5]"].layers[1].to_config() == {
        "BatchNormalization": {"momentum": 0.5}}
    s = parse_study({"name": "sw", "models": {"m": {
        "train": {"optimizer": {"name": "sgd", "lr": 0.5}}, "layers": MLP,
        "sweep": {"train.optimizer.learning_rate": [0.2]}}}})
    assert s.train_for("m[learning_rate=0.2]").optimizer.to_config() == {
        "name": "sgd", "learning_rate": 0.2}


@pytest.mark.parametrize(("sweep", "expected"), [
    ({"layers.5.Dense.units": [1]}, "sweep 'layers.5.Dense.units': no layer 5 (layers are "
                                     "numbered 0 to 2)"),
    ({"layers.1.Conv2D.filters": [1]}, "layer 1 is Dense, received 'Conv2D'"),
    ({"layers.x.Dense.units": [1]}, "Expected a layer index after 'layers', received 'x'"),
    ({"layers.1.Dense": [1]}, "Expected an argument of layer 1 (Dense)"),
    ({"train.batch_size": 32}, "Expected a list of values (e.g. [32, 128]), received 32"),
    ({"train.batch_size": []}, "Expected a list of at least one value, received an empty list"),
    ({"model.units": [1]}, "Expected a path that starts with 'train.' or 'layers.', received "
                           "'model'"),
    ({"train.batch_size": [32, 32]}, "the value 32 is listed twice"),
    ({"train": [1]}, "Expected a field under 'train.'"),
    ([1, 2], "field 'sweep': Expected a mapping of dotted paths"),
    ({f"layers.{i}.Dense.units" if i else "train.epochs": list(range(1, 12))
      for i in (0, 1, 2)} | {"layers.1.Dense.units": list(range(1, 12))},
     "Expected at most"),
])
def test_an_invalid_path_or_value_list_is_one_line(tmp_path: Path, sweep: Any,
                                                   expected: str) -> None:
    path = write(tmp_path, study(sweep))
    with pytest.raises(SpecError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: model 'mlp'"), message
    assert expected in message, message


def test_more_than_the_point_limit_is_refused() -> None:
    big = {"train.batch_size": list(range(1, 101)), "train.epochs": list(range(1, 12))}
    with pytest.raises(SpecError, match=f"Expected at most {MAX_POINTS} points, received 1,100"):
        parse_study(study(big))


def test_an_invalid_point_is_named_by_its_generated_name(tmp_path: Path) -> None:
    path = write(tmp_path, study({"train.batch_size": [32, 64],
                                  "layers.1.Dense.units": [16, 0]}))
    with pytest.raises(SpecError) as info:
        load_study(path)
    message = str(info.value)
    assert message.startswith(f"{path}: model 'mlp[batch_size=32,units=0]', layer 2 (Dense), "
                              "field 'units': Expected a positive integer, received 0"), message


def test_a_point_that_takes_another_models_name_is_refused() -> None:
    data = study({"train.epochs": [1]})
    data["models"]["mlp[epochs=1]"] = {"layers": MLP}
    with pytest.raises(SpecError, match="the point 'mlp\\[epochs=1\\]' has the name of another"):
        parse_study(data)


def test_odd_values_still_give_safe_names() -> None:
    s = parse_study(study({"train.optimizer": [{"name": "sgd"}, "adam", "rmsprop"]}))
    names = [n for n in s.models if n.startswith("mlp")]
    assert names == ["mlp[optimizer=option1]", "mlp[optimizer=adam]", "mlp[optimizer=rmsprop]"]
    assert s.models[names[0]].swept == {"train.optimizer": {"name": "sgd"}}


def test_hand_written_names_keep_the_plain_pattern() -> None:
    for bad in ("a/b", "mlp[units]", "mlp[a=1", ".."):
        with pytest.raises(SpecError):
            parse_study({"name": "s", "models": {bad: {"layers": MLP}}})
    with pytest.raises(SpecError, match="at most 100 characters"):
        parse_study({"name": "s", "models": {"m" * 101: {"layers": MLP}}})
