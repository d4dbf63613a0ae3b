"""The study's ``search:`` section: what it accepts, what it refuses (one line naming the file,
the search, the path and the field, before anything trains), and what validate prints."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

import archlab
from archlab.cli import main
from archlab.errors import SpecError
from archlab.run import plan_runs
from archlab.run.search import trial_study, validate_search
from archlab.spec.search import search_points, trial_name
from tests.conftest import TINY

SPACE = {"layers.1.Dense.units": {"int": [16, 256], "log": True},
         "train.optimizer.learning_rate": {"float": [1.0e-4, 1.0], "log": True},
         "layers.2.Dropout.rate": {"float": [0.0, 0.6]},
         "train.optimizer.name": {"choice": ["sgd", "adam", "adadelta"]}}


def _study(search: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(TINY)
    cfg["models"]["mlp"]["layers"].insert(2, {"Dropout": {"rate": 0.1}})
    cfg["search"] = {"base": "mlp", "space": copy.deepcopy(SPACE), "trials": 30,
                     **(search or {})}
    cfg.update(top)
    return cfg


def test_search_parses_with_optuna_defaults_and_round_trips() -> None:
    study = archlab.parse_study(_study())
    s = study.search
    assert s is not None
    assert (s.sampler, s.pruner.name, s.objective, s.direction) == (
        "tpe", "median", "val_accuracy", "maximize")
    assert s.pruner.median is not None and s.pruner.median.n_startup_trials == 5  # Optuna's
    assert (s.confirm.top, s.confirm.repeats) == (3, 5)
    again = archlab.parse_study(study.to_config())
    assert again.search == s
    assert archlab.parse_study(_study({"pruner": "none"})).search.pruner.name == "none"
    hb = archlab.parse_study(_study({"pruner": {"hyperband": {"reduction_factor": 2}}}))
    assert hb.search.pruner.to_config() == {"hyperband": {"reduction_factor": 2}}
    assert archlab.parse_study(_study({"objective": "val_loss"})).search.direction == "minimize"


def test_a_study_without_search_keeps_its_config_and_run_ids(tiny_study: archlab.Study
                                                             ) -> None:
    assert "search" not in tiny_study.to_config()
    with_search = archlab.parse_study(_study())
    without = archlab.parse_study({k: v for k, v in _study().items() if k != "search"})
    # The search adds no field to the models' runs: same plans, same ids.
    assert [p.run_id for p in plan_runs(with_search)] == [p.run_id for p in plan_runs(without)]


def test_trial_points_use_the_sweep_paths() -> None:
    study = archlab.parse_study(_study())
    point = trial_study(study, trial_name("mlp", 7), {
        "layers.1.Dense.units": 64, "train.optimizer.learning_rate": 0.01,
        "layers.2.Dropout.rate": 0.3, "train.optimizer.name": "sgd"})
    assert list(point.models) == ["mlp.trial007"] and point.search is None
    spec = point.models["mlp.trial007"]
    assert spec.layers[1].units == 64 and spec.layers[2].rate == 0.3
    train = point.train_for("mlp.trial007")
    assert train.optimizer.name == "sgd" and train.optimizer.learning_rate == 0.01
    assert spec.swept == {"layers.1.Dense.units": 64, "train.optimizer.learning_rate": 0.01,
                          "layers.2.Dropout.rate": 0.3, "train.optimizer.name": "sgd"}
    labels = [label for label, _ in search_points(study.search)]
    # Each path alone at its bounds (each choice), then both corners.
    assert labels[:2] == ["path 'layers.1.Dense.units' at 16",
                          "path 'layers.1.Dense.units' at 256"]
    assert "path 'train.optimizer.name' at 'adadelta'" in labels
    assert labels[-2:] == ["low corner", "high corner"]


@pytest.mark.parametrize(("search", "parts"), [
    ({"base": "mpl"}, ["search, field 'base'", "received 'mpl'", "did you mean 'mlp'?"]),
    ({"space": {"layers.1.Dense.unit": {"int": [8, 64]}}},
     ["search, path 'layers.1.Dense.unit' at 8", "layer 2 (Dense)", "Unknown argument 'unit'",
      "did you mean 'units'?"]),
    ({"space": {"layers.1.Dropout.rate": {"float": [0.0, 0.5]}}},
     ["search, path 'layers.1.Dropout.rate'", "layer 1 is Dense"]),
    ({"space": {"model.units": {"int": [8, 64]}}},
     ["search, path 'model.units'", "starts with 'train.' or 'layers.'"]),
    ({"space": {"layers.1.Dense.units": {"int": [64, 8]}}},
     ["search, path 'layers.1.Dense.units', field 'int'", "low <= high", "[64, 8]"]),
    ({"space": {"layers.1.Dense.units": {"int": [0, 8]}}},
     ["search, path 'layers.1.Dense.units' at 0", "field 'units'", "positive integer"]),
    ({"space": {"layers.2.Dropout.rate": {"float": [0.0, 1.5]}}},
     ["search, path 'layers.2.Dropout.rate' at 1.5", "layer 3 (Dropout), field 'rate'",
      "received 1.5"]),
    ({"space": {"train.optimizer.learning_rate": {"float": [0.0, 1.0], "log": True}}},
     ["search, path 'train.optimizer.learning_rate', field 'float'", "low > 0"]),
    ({"space": {"layers.2.Dropout.rate": {"flot": [0.0, 0.5]}}},
     ["search, path 'layers.2.Dropout.rate'", "{choice: [values]}", "{flot: [0.0, 0.5]}"]),
    ({"space": {"train.optimizer.name": {"choice": ["sgd", "sgd"]}}},
     ["search, path 'train.optimizer.name', field 'choice'", "'sgd' twice"]),
    ({"space": {"train.optimizer.name": {"choice": ["sgd", "sgdx"]}}},
     ["search, path 'train.optimizer.name' at 'sgdx'", "Unknown optimizer 'sgdx'"]),
    ({"space": {"train.optimizer.momentum": {"float": [0.0, 0.9]}}},
     ["search, path 'train.optimizer.momentum' at 0.0", "Unknown argument 'momentum'"]),
    ({"space": {}}, ["search, field 'space'", "at least 1"]),
    ({"trials": 0}, ["search, field 'trials'", "positive integer", "received 0"]),
    ({"pruner": "medain"}, ["search, field 'pruner'", "did you mean 'median'?"]),
    ({"sampler": "cmaes"}, ["search, field 'sampler'", "'tpe', 'random' or 'grid'"]),
    ({"objective": "test_accuracy"}, ["search, field 'objective'", "'val_accuracy' or"]),
    ({"confirm": {"repeats": 1}}, ["search, field 'confirm.repeats'", ">= 2", "received 1"]),
    ({"confirm": {"top": 31}}, ["search, field 'confirm.top'", "at most 30", "received 31"]),
    ({"sampler": "grid"}, ["search, path 'layers.1.Dense.units', field 'log'", "grid"]),
    ({"sampler": "grid", "trials": 9, "space": {"layers.1.Dense.units": {"int": [8, 10]}}},
     ["search, field 'trials'", "at most 3 for this grid", "received 9"]),
    ({"sampler": "grid", "space": {"layers.2.Dropout.rate": {"float": [0.0, 0.5]}}},
     ["search, path 'layers.2.Dropout.rate'", "float range"]),
])
def test_search_errors_are_one_line(tmp_path: Path, search: dict[str, Any],
                                    parts: list[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_study(search), sort_keys=False))
    with pytest.raises(SpecError) as caught:
        archlab.load_study(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: search") and "\n" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_trial_names_cannot_collide_with_a_model(tiny_config: dict[str, Any]) -> None:
    cfg = _study()
    cfg["models"]["mlp.trial003"] = copy.deepcopy(cfg["models"]["cnn"])
    with pytest.raises(SpecError, match=r"a model 'mlp\.trial003', a name the search gives"):
        archlab.parse_study(cfg, "s.yaml")


def test_points_that_do_not_build_are_refused_before_training() -> None:
    # The output layer's units: valid numbers, but not 10 outputs for 10 classes.
    study = archlab.parse_study(_study({"space": {"layers.3.Dense.units": {"int": [8, 10]}}}),
                                "s.yaml")
    with pytest.raises(SpecError) as caught:
        validate_search(study)
    message = str(caught.value)
    assert message.startswith("s.yaml: search, path 'layers.3.Dense.units' at 8: ")
    assert "Expected 10 outputs" in message and "\n" not in message


def test_validate_prints_the_trials_and_the_projected_time(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_study({"trials": 12, "confirm": {"top": 2, "repeats": 3}}),
                                   sort_keys=False))
    assert main(["validate", str(path)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert ("search over mlp: 12 trials (4 parameters, tpe sampler, median pruner, objective "
            "val_accuracy) + 4 confirmation runs; projected ") in printed
    # And a bad point stops validate with one line and exit 2.
    path.write_text(yaml.safe_dump(_study({"space": {"layers.3.Dense.units": {"int": [8, 10]}}}),
                                   sort_keys=False))
    assert main(["validate", "--no-timing", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "search, path 'layers.3.Dense.units' at 8" in err


def test_the_docs_search_example_validates_and_builds(tmp_path: Path) -> None:
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "spec.md").read_text(encoding="utf-8")
    body = text[text.index("## Search (Optuna)"):]
    body = body[:body.find("\n## ", 1) if "\n## " in body[1:] else len(body)]
    (block,) = re.findall(r"```yaml\n(.*?)```", body, re.S)
    path = tmp_path / "example.yaml"
    path.write_text(block, encoding="utf-8")
    study = archlab.load_study(path)
    archlab.validate_study(study)
    validate_search(study)  # every checked point builds
    assert study.search is not None and study.search.space.keys() == SPACE.keys()
