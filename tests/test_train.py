"""The trainer: evaluation, fitting, divergence, and resuming from a checkpoint bit for bit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import archlab
from archlab.data import Tensors, load_dataset, prepare_tensors
from archlab.engine import EVAL_BATCH
from archlab.run.checkpoint import load_checkpoint, save_checkpoint
from archlab.store import RunStatus
from archlab.train import TrainState, evaluate, fit

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


MLP_DROPOUT = ["Flatten", {"Dense": {"units": 32, "activation": "relu"}},
               {"Dropout": {"rate": 0.3}}, {"Dense": {"units": 10, "activation": "softmax"}}]


@pytest.mark.parametrize(("train", "layers"), [
    # Adam state, Keras `decay` as a scheduler, early stopping's counters, best weights
    ({"optimizer": {"name": "adam", "decay": 0.01}, "batch_size": 100, "epochs": 4,
      "restore_best": True, "early_stopping": {"patience": 3}}, CNN),
    # momentum buffers
    ({"optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9}, "batch_size": 100,
      "epochs": 4}, CNN),
    # the written-out MLP step (dense plan) and the direct fused optimizer step
    ({"optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9}, "batch_size": 64,
      "epochs": 4}, MLP_DROPOUT),
], ids=["adam-decay-restore-best", "sgd-momentum", "mlp-dense-plan"])
def test_resume_from_a_checkpoint_equals_the_uninterrupted_fit_bit_for_bit(
        sample: Tensors, tmp_path: Path, train: dict[str, Any], layers: list[Any]) -> None:
    data = small(sample)
    study = study_with(train, layers)
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


# --- the fast paths: each one gives the numbers the plain autograd step gives, bit for bit ---

PLANNED = {
    "relu-momentum": (["Flatten", {"Dense": {"units": 32, "activation": "relu"}},
                       {"Dense": {"units": 32, "activation": "relu"}},
                       {"Dense": {"units": 10, "activation": "softmax"}}],
                      {"name": "sgd", "learning_rate": 0.09, "momentum": 0.9}),
    "tanh-dropout-adam": (["Flatten", {"Dropout": {"rate": 0.2}},
                           {"Dense": {"units": 24, "activation": "tanh"}},
                           {"Dropout": {"rate": 0.5}},
                           {"Dense": {"units": 10, "activation": "softmax"}}], {"name": "adam"}),
    "sigmoid-l2-l1-nesterov-decay": (
        ["Flatten", {"Dense": {"units": 16, "activation": "sigmoid", "use_bias": False,
                               "kernel_regularizer": {"l2": 0.001}}},
         {"Dense": {"units": 10, "activation": "softmax", "bias_regularizer": {"l1": 0.01}}}],
        {"name": "sgd", "momentum": 0.9, "nesterov": True, "decay": 0.001}),
    "linear-clipnorm-maxnorm-adadelta": (
        ["Flatten", {"Dense": {"units": 16, "kernel_constraint": "max_norm"}},
         {"Dense": {"units": 10, "activation": "softmax"}}], {"name": "adadelta", "clipnorm": 1.0}),
    "amsgrad-cosine": (["Flatten", {"Dense": {"units": 16, "activation": "relu"}},
                        {"Dense": {"units": 10, "activation": "softmax"}}],
                       {"name": "adam", "amsgrad": True, "learning_rate": {"CosineDecay": {
                           "initial_learning_rate": 0.01, "decay_steps": 40}}}),
}


def _trained(study: archlab.Study, data: Tensors) -> tuple[Any, dict[str, torch.Tensor]]:
    built = fresh(study)
    result = fit(built, data, study.train_for("m"), SEED)
    return result, {k: v.clone() for k, v in built.module.state_dict().items()}


def _same(a: tuple[Any, dict[str, torch.Tensor]], b: tuple[Any, dict[str, torch.Tensor]]) -> None:
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in a[0].history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in b[0].history] == strip
    assert a[0].final == b[0].final
    for name, w in a[1].items():
        assert torch.equal(w, b[1][name]), name


@pytest.mark.parametrize("case", list(PLANNED))
def test_the_single_run_dense_plan_is_autograd_bit_for_bit(
        sample: Tensors, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    from archlab.engine import DENSE_PLAN_ENV, single_dense_plan

    layers, optimizer = PLANNED[case]
    study = study_with({"optimizer": optimizer, "batch_size": 50, "epochs": 2}, layers)
    data = small(sample, 600, 100)
    assert single_dense_plan(fresh(study)) is not None  # the plan is taken
    planned = _trained(study, data)
    monkeypatch.setenv(DENSE_PLAN_ENV, "0")
    assert single_dense_plan(fresh(study)) is None
    _same(_trained(study, data), planned)


def test_the_direct_optimizer_step_is_opt_step_bit_for_bit(
        sample: Tensors, monkeypatch: pytest.MonkeyPatch) -> None:
    import archlab.train as trainer

    data = small(sample, 600, 100)
    for case in ("relu-momentum", "tanh-dropout-adam", "amsgrad-cosine"):
        layers, optimizer = PLANNED[case]
        study = study_with({"optimizer": optimizer, "batch_size": 50, "epochs": 2}, layers)
        direct = _trained(study, data)
        with monkeypatch.context() as m:
            m.setattr(trainer, "DirectStep", lambda opt: opt.step)
            _same(_trained(study, data), direct)


def test_a_model_the_plan_cannot_run_goes_through_autograd(sample: Tensors) -> None:
    from archlab.engine import single_dense_plan

    both = ["Flatten", {"Dense": {"units": 8, "kernel_regularizer": {"l1": 0.01, "l2": 0.01}}},
            {"Dense": {"units": 10, "activation": "softmax"}}]
    elu = ["Flatten", {"Dense": {"units": 8, "activation": "elu"}},
           {"Dense": {"units": 10, "activation": "softmax"}}]
    for layers in (CNN, both, elu):
        assert single_dense_plan(fresh(study_with({}, layers))) is None


CONV_POOL = [{"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
             {"MaxPooling2D": {"pool_size": 2}},
             {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu", "padding": "same"}},
             {"MaxPooling2D": {"pool_size": 2}}, "BatchNormalization", {"Dropout": {"rate": 0.3}},
             "Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]


def test_relu_after_pool_gives_the_same_loss_and_gradients_and_is_undone() -> None:
    import torch.nn.functional as F

    from archlab.engine import relu_after_pool
    from archlab.layout import set_channels_last

    built = fresh(study_with({}, CONV_POOL))
    set_channels_last(built.module, True)
    before = repr(built.module)
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x[:, :, :14] -= 0.7  # windows whose max is negative: ReLU gives 0 either way
    y = torch.arange(16) % 10

    def step() -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(1)  # the same dropout masks
        loss = F.cross_entropy(built.module(x), y)
        grads = torch.autograd.grad(loss, list(built.module.parameters()))
        return loss, list(grads)

    loss, grads = step()
    with relu_after_pool(built.module) as moved:
        assert moved == 2 and repr(built.module) != before
        loss2, grads2 = step()
    assert repr(built.module) == before  # put back
    assert torch.equal(loss, loss2)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads2, strict=True))


def test_in_place_relus_give_the_same_loss_and_gradients_and_are_undone() -> None:
    import torch.nn.functional as F

    from archlab.engine import relu_after_pool
    from archlab.layout import set_channels_last

    layers = [{"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
              {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
              {"MaxPooling2D": {"pool_size": 2}}, "Flatten",
              {"Dense": {"units": 16, "activation": "relu"}}, "BatchNormalization",
              {"Dense": {"units": 10, "activation": "softmax"}}]
    built = fresh(study_with({}, layers))
    set_channels_last(built.module, True)
    before = repr(built.module)
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(2)) - 0.3
    y = torch.arange(16) % 10

    def step() -> tuple[torch.Tensor, list[torch.Tensor]]:
        loss = F.cross_entropy(built.module(x), y)
        return loss, list(torch.autograd.grad(loss, list(built.module.parameters())))

    loss, grads = step()
    with relu_after_pool(built.module) as moved:
        assert moved == 1  # the second conv's ReLU; the first conv's and Dense's run in place
        assert sum(isinstance(m, torch.nn.ReLU) and m.inplace
                   for m in built.module.modules()) == 2
        loss2, grads2 = step()
    assert repr(built.module) == before
    assert torch.equal(loss, loss2)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads2, strict=True))


def test_the_final_evaluation_reuses_the_last_validation_and_its_predictions(
        sample: Tensors) -> None:
    from archlab.train import predict_proba

    data = small(sample)
    as_test = Tensors(data.x_train, data.y_train, data.x_test, data.y_test, data.x_test,
                      data.y_test, data.class_names, True, data.pre)  # validation: test
    study = study_with({"optimizer": {"name": "adam"}, "batch_size": 64, "epochs": 2},
                       CONV_POOL)
    for tensors in (data, as_test):
        built = fresh(study)
        result = fit(built, tensors, study.train_for("m"), SEED)
        for split, xs, ys in (("train", tensors.x_train, tensors.y_train),
                              ("val", tensors.x_val, tensors.y_val),
                              ("test", tensors.x_test, tensors.y_test)):
            assert (result.final[f"{split}_loss"], result.final[f"{split}_accuracy"]) == \
                evaluate(built, xs, ys, tensors.pre), split
        assert result.test_proba is not None
        assert torch.equal(result.test_proba, predict_proba(built, tensors.x_test, tensors.pre))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
def test_the_dense_plan_on_cuda_agrees_with_autograd(
        sample: Tensors, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not run here (no GPU in this project's sessions): the same kernels are called on CUDA,
    but cuBLAS promises no bit-identity between calls, so this asks for agreement only."""
    from archlab.engine import DENSE_PLAN_ENV

    layers, optimizer = PLANNED["tanh-dropout-adam"]
    study = study_with({"optimizer": optimizer, "batch_size": 50, "epochs": 2}, layers)
    data = small(sample, 600, 100).to("cuda")

    def run() -> dict[str, float]:
        built = fresh(study)
        built.module.to("cuda")
        torch.manual_seed(SEED)
        return fit(built, data, study.train_for("m"), SEED).final

    planned = run()
    monkeypatch.setenv(DENSE_PLAN_ENV, "0")
    assert run() == pytest.approx(planned, rel=1e-5, abs=1e-6)
