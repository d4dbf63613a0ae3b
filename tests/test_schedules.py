"""Learning-rate schedules and ReduceLROnPlateau: Keras 3's values, the history's `lr`, errors,
and a resumed run equal to an uninterrupted one bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import archlab
from archlab import SpecError, TrainSpec
from archlab.data import Tensors, load_dataset, prepare_tensors
from archlab.optim import LearningRate, make_optimizer
from archlab.optimizers import CosineDecay, ExponentialDecay
from archlab.plan import plan_runs
from archlab.run.checkpoint import load_checkpoint, save_checkpoint
from archlab.train import fit
from tests.fitting import (
    SEED,
    assert_same_fit,
    fresh,
    sample_tensors,
    small_study,
    stopped_and_resumed,
)
from tests.keras_twin import keras

# keras.ops.convert_to_numpy on the torch backend warns about numpy 2's copy keyword
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.usefixtures("one_torch_thread")]



def _train(train: dict[str, Any]) -> TrainSpec:
    return TrainSpec.model_validate(train)


def _controller(train: dict[str, Any]) -> tuple[torch.optim.Optimizer, LearningRate]:
    spec = _train(train)
    opt, sched = make_optimizer(spec.optimizer, [torch.nn.Parameter(torch.zeros(1))],
                                plateau=spec.reduce_lr_on_plateau)
    assert isinstance(sched, LearningRate)
    return opt, sched


SCHEDULES = [
    {"CosineDecay": {"initial_learning_rate": 0.1, "decay_steps": 50}},
    {"CosineDecay": {"initial_learning_rate": 0.1, "decay_steps": 50, "alpha": 0.2}},
    {"ExponentialDecay": {"initial_learning_rate": 0.1, "decay_steps": 7, "decay_rate": 0.5}},
    {"ExponentialDecay": {"initial_learning_rate": 0.1, "decay_steps": 7, "decay_rate": 0.5,
                          "staircase": True}},
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=["cosine", "cosine-alpha", "exponential",
                                                     "exponential-staircase"])
def test_each_optimizer_step_uses_keras_schedule_value(schedule: dict[str, Any]) -> None:
    (name, args), = schedule.items()
    reference = getattr(keras.optimizers.schedules, name)(**args)
    opt, sched = _controller({"optimizer": {"name": "sgd", "learning_rate": schedule}})
    for step in range(70):  # past decay_steps: Keras's cosine stays at its floor
        want = float(keras.ops.convert_to_numpy(reference(step)))
        # Keras computes in float32: near the cosine's floor that is float32's error on the
        # initial rate's scale, not on the (smaller) value.
        tolerance = 1e-6 * args["initial_learning_rate"]
        assert opt.param_groups[0]["lr"] == pytest.approx(want, rel=1e-6, abs=tolerance), step
        sched.step()


def test_cosine_warmup_is_keras() -> None:
    args = {"initial_learning_rate": 0.01, "decay_steps": 40, "warmup_target": 0.5,
            "warmup_steps": 10, "alpha": 0.1}
    reference = keras.optimizers.schedules.CosineDecay(**args)
    ours = CosineDecay(**args)
    got = [ours(step) for step in range(60)]
    want = [float(keras.ops.convert_to_numpy(reference(step))) for step in range(60)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0] == pytest.approx(0.01) and got[10] == pytest.approx(0.5)  # warmup, then peak
    assert ExponentialDecay(initial_learning_rate=1.0, decay_steps=2, decay_rate=0.5)(4) == 0.25


def _keras_plateau(values: list[float], monitor: str, lr: float, **kwargs: Any) -> list[float]:
    """Keras 3's callback on a model stand-in: the learning rate it logs at each epoch end."""
    callback = keras.callbacks.ReduceLROnPlateau(monitor=monitor, **kwargs)
    model = type("Model", (), {})()
    model.optimizer = keras.optimizers.SGD(learning_rate=lr)
    callback.set_model(model)
    callback.on_train_begin()
    logged = []
    for epoch, value in enumerate(values):
        logs = {monitor: value}
        callback.on_epoch_end(epoch, logs)
        logged.append(logs["learning_rate"])
    logged.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    return logged


# Plateaus shorter and longer than `patience`, improvements smaller than `min_delta`, a
# cooldown, and enough bad epochs to reach `min_lr`.
LOSSES = [1.0, 0.995, 0.994, 0.9, 0.95, 0.96, 0.97, 0.5, 0.49, 0.495, 0.6, 0.6, 0.6, 0.6, 0.6,
          0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.4, 0.6, 0.6, 0.6]
PLATEAUS = [
    ("val_loss", LOSSES, {"factor": 0.5, "patience": 2, "min_delta": 0.01, "cooldown": 1,
                          "min_lr": 0.004}),
    ("val_loss", LOSSES, {"factor": 0.1, "patience": 0, "min_delta": 0.0}),
    ("loss", LOSSES, {"factor": 0.3, "patience": 3, "cooldown": 2}),
    ("val_loss", LOSSES, {}),  # Keras's defaults: patience 10, min_delta 1e-4
    ("val_accuracy", [0.5, 0.6, 0.6, 0.605, 0.61, 0.7, 0.69, 0.7, 0.7, 0.7, 0.71, 0.7],
     {"factor": 0.5, "patience": 1, "min_delta": 0.02, "mode": "max"}),
    ("val_loss", [-x for x in LOSSES], {"factor": 0.5, "patience": 1, "mode": "max"}),
]


@pytest.mark.parametrize("monitor,values,kwargs", PLATEAUS,
                         ids=["min-delta-cooldown-min-lr", "patience-0", "loss-cooldown",
                              "defaults", "accuracy-max", "loss-max"])
def test_reduce_lr_on_plateau_follows_keras_callback(monitor: str, values: list[float],
                                                     kwargs: dict[str, Any]) -> None:
    opt, sched = _controller({"optimizer": {"name": "sgd", "learning_rate": 0.08},
                              "reduce_lr_on_plateau": {"monitor": monitor, **kwargs}})
    got = []
    for value in values:
        got.append(sched.current())
        sched.epoch_end({monitor: value})
    got.append(opt.param_groups[0]["lr"])
    want = _keras_plateau(values, monitor, 0.08, **kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-7)
    assert len(set(got)) > 1 or kwargs == {}, "the sequence should reduce at least once"


def test_auto_mode_maximizes_an_accuracy() -> None:
    # Keras's auto mode reads the metric's direction: accuracy goes up. The same sequence with
    # mode max is the Keras reference (above).
    values = [0.5, 0.6, 0.6, 0.6, 0.7]
    _, auto = _controller({"optimizer": "sgd", "reduce_lr_on_plateau": {
        "monitor": "val_accuracy", "patience": 1}})
    _, explicit = _controller({"optimizer": "sgd", "reduce_lr_on_plateau": {
        "monitor": "val_accuracy", "patience": 1, "mode": "max"}})
    for value in values:
        auto.epoch_end({"val_accuracy": value})
        explicit.epoch_end({"val_accuracy": value})
        assert auto.state_dict() == explicit.state_dict()
    assert auto.lr == pytest.approx(1e-4, rel=1e-7)  # reduced at epochs 3 and 4


def test_decay_with_plateau_divides_the_reduced_rate_as_keras_2() -> None:
    opt, sched = _controller({"optimizer": {"name": "sgd", "learning_rate": 0.1, "decay": 0.5},
                              "reduce_lr_on_plateau": {"patience": 0}})
    for _ in range(4):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 3)
    sched.epoch_end({"val_loss": 1.0})  # the first value is always an improvement
    sched.epoch_end({"val_loss": 1.0})
    assert opt.param_groups[0]["lr"] == pytest.approx(float(np.float32(0.01)) / 3)


def test_spec_errors_are_one_line() -> None:
    layers = ["Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]

    def error(train: dict[str, Any], model_train: dict[str, Any] | None = None) -> str:
        model: dict[str, Any] = {"layers": layers}
        if model_train:
            model["train"] = model_train
        with pytest.raises(SpecError) as info:
            archlab.parse_study({"name": "t", "train": train, "models": {"m": model}})
        message = str(info.value)
        assert "\n" not in message
        return message

    cosine = {"CosineDecay": {"initial_learning_rate": 0.1, "decay_steps": 100}}
    assert "Expected decay 0 with a learning_rate schedule" in error(
        {"optimizer": {"name": "sgd", "learning_rate": cosine, "decay": 0.01}})
    assert "received learning_rate CosineDecay" in error(
        {"optimizer": {"name": "adam", "learning_rate": cosine},
         "reduce_lr_on_plateau": {"patience": 2}})
    assert "decay_steps" in error({"optimizer": {"name": "sgd", "learning_rate": {
        "ExponentialDecay": {"initial_learning_rate": 0.1, "decay_steps": 0,
                             "decay_rate": 0.9}}}})
    assert "CosineDecay or ExponentialDecay" in error(
        {"optimizer": {"name": "sgd", "learning_rate": {"PiecewiseConstantDecay": {}}}})
    assert "factor" in error({"reduce_lr_on_plateau": {"factor": 1.0}})
    assert "monitor" in error({"reduce_lr_on_plateau": {"monitor": "val_acc"}})
    # A model's own schedule under the study's plateau: refused when the study is built.
    with pytest.raises(SpecError, match="model 'm'.*received learning_rate CosineDecay"):
        study = archlab.parse_study({"name": "t", "train": {"reduce_lr_on_plateau": {}},
                                     "models": {"m": {"layers": layers, "train": {
                                         "optimizer": {"name": "sgd",
                                                       "learning_rate": cosine}}}}})
        archlab.validate_study(study)


def test_schedule_round_trips_and_leaves_other_run_ids_alone() -> None:
    plain = {"name": "t", "seed": 1, "data": {"dataset": "mnist-sample"},
             "models": {"m": {"layers": ["Flatten", {"Dense": {"units": 10,
                                                               "activation": "softmax"}}]}}}
    before = [p.run_id for p in plan_runs(archlab.parse_study(plain))]
    config = TrainSpec().to_config()
    assert "augmentation" not in config and "reduce_lr_on_plateau" not in config
    scheduled = dict(plain, train={
        "optimizer": {"name": "sgd", "learning_rate": {"ExponentialDecay": {
            "initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.9}}},
        "reduce_lr_on_plateau": None})
    study = archlab.parse_study(scheduled)
    dumped = study.train.to_config()
    assert dumped["optimizer"]["learning_rate"] == {"ExponentialDecay": {
        "initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.9}}
    assert TrainSpec.model_validate(dumped) == study.train
    assert [p.run_id for p in plan_runs(archlab.parse_study(plain))] == before
    assert [p.run_id for p in plan_runs(study)] != before


# ---------------------------------------------------------------------------------------------
# Training: the history's lr, and resuming


@pytest.fixture(scope="module")
def data() -> Tensors:
    return sample_tensors(1000, 300)


SCHEDULED = {"optimizer": {"name": "sgd", "momentum": 0.9, "learning_rate": {"CosineDecay": {
    "initial_learning_rate": 0.05, "decay_steps": 30, "warmup_target": 0.1,
    "warmup_steps": 5}}}, "batch_size": 100, "epochs": 4}
PLATEAU = {"optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9},
           "batch_size": 100, "epochs": 4,
           "reduce_lr_on_plateau": {"monitor": "val_accuracy", "patience": 0, "factor": 0.5,
                                    "min_delta": 0.5}}


def test_history_records_the_lr_only_when_it_moves(data: Tensors) -> None:
    study = small_study(SCHEDULED)
    result = fit(fresh(study), data, study.train, SEED)
    steps = 10  # 1000 images, batches of 100
    schedule = study.train.optimizer.learning_rate
    assert [h["lr"] for h in result.history] == [schedule(steps * e) for e in (1, 2, 3, 4)]
    study = small_study(PLATEAU)  # min_delta 0.5: no epoch improves on the first
    result = fit(fresh(study), data, study.train, SEED)
    # Logged before each epoch's check (Keras's order); halved from epoch 2 on, in float32.
    assert [h["lr"] for h in result.history] == pytest.approx([0.05, 0.05, 0.025, 0.0125],
                                                              rel=1e-7)
    plain = small_study({"optimizer": {"name": "sgd", "decay": 0.01}, "batch_size": 100})
    assert "lr" not in fit(fresh(plain), data, plain.train, SEED).history[0]


@pytest.mark.parametrize("train", [SCHEDULED, PLATEAU], ids=["cosine-warmup", "plateau"])
def test_resume_equals_the_uninterrupted_fit_bit_for_bit(data: Tensors, tmp_path: Path,
                                                         train: dict[str, Any]) -> None:
    study = small_study(train)
    assert_same_fit(*stopped_and_resumed(study, data, tmp_path / "checkpoint.safetensors", 2))


def test_the_store_keeps_the_lr_of_runs_that_have_one(tmp_path: Path) -> None:
    from archlab.store import Store

    layers = ["Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]
    study = archlab.parse_study({
        "name": "t", "seed": 3, "data": {"dataset": "mnist-sample"},
        "train": {"optimizer": {"name": "sgd", "learning_rate": {"ExponentialDecay": {
            "initial_learning_rate": 0.1, "decay_steps": 20, "decay_rate": 0.5}}},
            "batch_size": 500, "epochs": 2},
        "models": {"scheduled": {"layers": layers},
                   "constant": {"layers": layers, "train": {"optimizer": "sgd"}}}})
    from archlab.run import RunContext, execute_run

    data = prepare_tensors(load_dataset("mnist-sample"), study.data, study.seed)
    for plan in plan_runs(study):
        execute_run(study, plan, RunContext(tmp_path, data, 1))
    with Store(tmp_path) as store:
        runs = {r.model: r for r in store.runs()}
        scheduled = store.history(runs["scheduled"].run_id)
        constant = store.history(runs["constant"].run_id)
    steps = 9  # 4,500 training images (a tenth held out), batches of 500
    schedule = study.train.optimizer.learning_rate
    assert [h["lr"] for h in scheduled] == pytest.approx([schedule(steps), schedule(2 * steps)])
    assert all("lr" not in h for h in constant) and len(constant) == 2


@pytest.mark.parametrize("name", ["sgd", "rmsprop"])
def test_momentum_under_a_schedule_follows_keras_updates(name: str) -> None:
    """Keras keeps the rate inside the velocity (v = m·v - lr·g): as the schedule moves the
    rate, the weights follow Keras 3's optimizer step for step (the state through JSON
    halfway, as a checkpoint keeps it)."""
    import json

    schedule = {"ExponentialDecay": {"initial_learning_rate": 0.1, "decay_steps": 3,
                                     "decay_rate": 0.5}}
    grads = [0.5, -1.0, 2.0, 0.3, -0.7, 1.5, 0.2, -0.1, 0.9, -2.0, 0.4, 0.05]
    (kind, args), = schedule.items()
    keras_opt = {"sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}[name](
        learning_rate=getattr(keras.optimizers.schedules, kind)(**args), momentum=0.9)
    w = keras.Variable(np.array([1.0], dtype="float32"))
    want = []
    for g in grads:
        keras_opt.apply_gradients([(keras.ops.convert_to_tensor(np.array([g], "float32")), w)])
        want.append(float(keras.ops.convert_to_numpy(w)[0]))
    spec = _train({"optimizer": {"name": name, "learning_rate": schedule,
                                 "momentum": 0.9}}).optimizer
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt, sched = make_optimizer(spec, [p])
    got = []
    for i, g in enumerate(grads):
        if i == 6:  # a checkpoint: the optimizer's and the rate's state through JSON
            state = opt.state_dict()
            state["param_groups"] = json.loads(json.dumps(state["param_groups"]))
            rate = json.loads(json.dumps(sched.state_dict()))
            p = torch.nn.Parameter(p.detach().clone())
            opt, sched = make_optimizer(spec, [p])
            opt.load_state_dict(state)
            sched.load_state_dict(rate)
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        sched.step()
        got.append(p.item())
    if name == "sgd":
        np.testing.assert_allclose(got, want, rtol=2e-6)  # Keras's float32
    else:  # Keras 3 puts RMSprop's ε inside the square root; archlab keeps Keras 2's place
        np.testing.assert_allclose(got, want, atol=1e-5)  # (torch's velocity alone: > 0.3)


def test_a_checkpoint_without_the_runs_rate_state_is_refused(data: Tensors,
                                                              tmp_path: Path) -> None:
    from archlab.run.checkpoint import CheckpointError

    constant = small_study({"optimizer": {"name": "sgd", "learning_rate": 0.05}, "batch_size": 100})
    ckpt = tmp_path / "constant.safetensors"
    built = fresh(constant)
    fit(built, data, constant.train, SEED, on_epoch_end=lambda st, opt, sched, gen:
        save_checkpoint(ckpt, st, built.module, opt, sched, gen))
    scheduled = small_study({**SCHEDULED, "epochs": 2})
    other = fresh(scheduled)
    with pytest.raises(CheckpointError, match="learning-rate state is for another schedule"):
        fit(other, data, scheduled.train, SEED, resume=lambda opt, sched, gen: load_checkpoint(
            ckpt, other.module, opt, sched, gen))
    _, sched = _controller({"optimizer": "sgd", "reduce_lr_on_plateau": {}})
    with pytest.raises(KeyError):  # what load_checkpoint turns into "does not fit this run"
        sched.load_state_dict({"last_epoch": 3, "base_lrs": [0.1]})  # torch LambdaLR's state
