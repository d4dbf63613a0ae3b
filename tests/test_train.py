"""The trainer: evaluation, fitting, divergence, and resuming from a checkpoint bit for bit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import archlab
from archlab.data import Tensors, load_dataset, prepare_tensors
from archlab.run.checkpoint import load_checkpoint, save_checkpoint
from archlab.store import RunStatus
from archlab.train import EVAL_BATCH, TrainState, evaluate, fit

#: One torch thread, whatever earlier tests left: on a shared 2-core machine two threads only
#: wait on each other (a resume test took 15 s with 2 threads under load).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEED = 11


def small(data: Tensors, n_train: int = 1200, n_eval: int = 300) -> Tensors:
    """A slice of the embedded sample: each fit below takes a fraction of a second."""
    return Tensors(data.x_train[:n_train], data.y_train[:n_train], data.x_val[:n_eval],
                   data.y_val[:n_eval], data.x_test[:n_eval], data.y_test[:n_eval],
                   data.class_names, data.validation_is_test, data.pre)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Tensors:
    study = archlab.parse_study({"name": "t", "seed": 3, "data": {
        "dataset": "mnist-sample", "validation": {"split": 0.1}},
        "models": {"m": {"layers": ["Flatten", {"Dense": {"units": 10}}]}}})
    return prepare_tensors(load_dataset("mnist-sample"), study.data, study.seed)


def study_with(train: dict[str, Any], layers: list[Any] | None = None) -> archlab.Study:
    layers = layers or ["Flatten", {"Dense": {"units": 16, "activation": "relu"}},
                        {"Dense": {"units": 10, "activation": "softmax"}}]
    return archlab.parse_study({"name": "t", "seed": 3,
                                "data": {"dataset": "mnist-sample",
                                         "validation": {"split": 0.1}},
                                "train": train, "models": {"m": {"layers": layers}}})


def fresh(study: archlab.Study) -> archlab.BuiltModel:
    """The model as a run builds it: seeded initial weights, then the dropout stream seeded."""
    built = archlab.build_model(study, "m", seed=SEED)
    torch.manual_seed(SEED)
    return built


def test_evaluate_is_mean_cross_entropy_and_accuracy_across_batches(sample: Tensors) -> None:
    built = fresh(study_with({"epochs": 1}))
    with torch.no_grad():
        for p in built.module.parameters():
            p.zero_()  # every logit 0: loss is ln(10) exactly, the prediction is class 0
    n = EVAL_BATCH + 500  # more than one evaluation batch
    x, y = sample.x_train[:n], sample.y_train[:n]
    loss, accuracy = evaluate(built, x, y, sample.pre)
    assert loss == pytest.approx(math.log(10), rel=1e-6)
    assert accuracy == (y == 0).sum().item() / n


def test_fit_trains_and_its_final_metrics_are_evaluate(sample: Tensors) -> None:
    data = small(sample)
    study = study_with({"optimizer": {"name": "adam"}, "batch_size": 64, "epochs": 3})
    built = fresh(study)
    seen: list[int] = []
    result = fit(built, data, study.train_for("m"), SEED,
                 on_epoch_end=lambda st, *_: seen.append(st.epoch))
    assert result.status is RunStatus.FINISHED and result.diverged_epoch is None
    assert seen == [1, 2, 3] and [h["epoch"] for h in result.history] == [1, 2, 3]
    losses = [h["loss"] for h in result.history]
    assert losses[2] < losses[0]  # it learns
    assert result.final["test_accuracy"] > 0.6
    assert (result.final["test_loss"], result.final["test_accuracy"]) == evaluate(
        built, data.x_test, data.y_test, data.pre)
    assert result.train_seconds > 0
    assert result.samples_per_second == pytest.approx(3 * len(data.x_train)
                                                      / result.train_seconds)


def test_a_diverging_fit_stops_at_the_first_non_finite_epoch(sample: Tensors) -> None:
    study = study_with({"optimizer": {"name": "sgd", "learning_rate": 1e12}, "epochs": 4})
    result = fit(fresh(study), small(sample), study.train_for("m"), SEED)
    assert result.status is RunStatus.DIVERGED
    assert result.diverged_epoch == len(result.history) == 1 and result.final == {}
    assert not math.isfinite(result.history[0]["loss"])


class Stop(Exception):
    pass


CNN = [{"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
       {"MaxPooling2D": {"pool_size": 2}}, {"Dropout": {"rate": 0.3}}, "Flatten",
       {"Dense": {"units": 10, "activation": "softmax"}}]


@pytest.mark.parametrize("train", [
    # Adam state, Keras `decay` as a scheduler, early stopping's counters, best weights
    {"optimizer": {"name": "adam", "decay": 0.01}, "batch_size": 100, "epochs": 4,
     "restore_best": True, "early_stopping": {"patience": 3}},
    # momentum buffers
    {"optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9}, "batch_size": 100,
     "epochs": 4},
], ids=["adam-decay-restore-best", "sgd-momentum"])
def test_resume_from_a_checkpoint_equals_the_uninterrupted_fit_bit_for_bit(
        sample: Tensors, tmp_path: Path, train: dict[str, Any]) -> None:
    data = small(sample)
    study = study_with(train, CNN)
    spec = study.train_for("m")
    reference = fresh(study)
    want = fit(reference, data, spec, SEED)

    ckpt = tmp_path / "checkpoint.safetensors"
    first = fresh(study)

    def save_then_stop(st: TrainState, opt: Any, sched: Any, gen: torch.Generator) -> None:
        save_checkpoint(ckpt, st, first.module, opt, sched, gen)
        if st.epoch == 2:
            raise Stop  # as a killed process: nothing after epoch 2's checkpoint survives

    with pytest.raises(Stop):
        fit(first, data, spec, SEED, on_epoch_end=save_then_stop)
    torch.manual_seed(12345)  # whatever the RNG did meanwhile, the checkpoint restores it
    resumed = fresh(study)
    resumed_at: list[int] = []

    def resume(opt: Any, sched: Any, gen: torch.Generator) -> TrainState:
        state = load_checkpoint(ckpt, resumed.module, opt, sched, gen)
        resumed_at.append(state.epoch)
        return state

    got = fit(resumed, data, spec, SEED, resume=resume)
    assert resumed_at == [2]
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in want.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in got.history] == strip
    assert got.final == want.final and got.best_epoch == want.best_epoch
    for (name, a), b in zip(reference.module.state_dict().items(),
                            resumed.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("section", ["## Learning-rate schedules", "## Reducing the learning rate",
                                     "## Data augmentation", "## Activity regularization"])
def test_the_training_sections_yaml_examples_validate(section: str, tmp_path: Path) -> None:
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "spec.md").read_text(encoding="utf-8")
    if section not in text:
        pytest.skip(f"no '{section}' section yet")
    body = text[text.index(section):]
    body = body[:body.find("\n## ", 1) if "\n## " in body[1:] else len(body)]
    blocks = re.findall(r"```yaml\n(.*?)```", body, re.S)
    assert blocks, section
    for i, block in enumerate(blocks):
        path = tmp_path / f"example{i}.yaml"
        path.write_text(block, encoding="utf-8")
        archlab.validate_study(archlab.load_study(path))  # raises SpecError when it does not
