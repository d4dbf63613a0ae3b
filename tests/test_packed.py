"""Packed repeats: each replica of a pack computes what a separate fit with its seed computes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

import archlab
from archlab.data import Tensors, load_dataset, prepare_tensors
from archlab.layout import prefer_channels_last
from archlab.model import build_model
from archlab.packed import PackedModel, fit_packed, pack_blocker
from archlab.train import TrainResult, fit

SEEDS = [11, 22, 33]
CONV = {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}}
HEAD = ["Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def raw() -> Any:
    return load_dataset("mnist-sample")


def _study(tiny_config: dict[str, Any], layers: list[Any], train: dict[str, Any]) -> Any:
    cfg = copy.deepcopy(tiny_config)
    cfg["models"] = {"m": {"layers": layers}}
    cfg["train"] = {"batch_size": 128, "epochs": 2, **train}
    return archlab.parse_study(cfg)


def _first(data: Tensors, n: int) -> Tensors:
    """The first ``n`` training images only: conv tests stay fast on 2 cores."""
    return Tensors(**{**data.__dict__, "x_train": data.x_train[:n], "y_train": data.y_train[:n]})


def _separate(study: Any, data: Tensors, seeds: list[int]) -> list[TrainResult]:
    out = []
    for s in seeds:
        built = build_model(study, "m", seed=s)
        torch.manual_seed(s)  # as execute_run seeds the dropout stream
        out.append(fit(built, data, study.train_for("m"), s))
    return out


def _packed(study: Any, data: Tensors, seeds: list[int]) -> list[TrainResult]:
    builts = [build_model(study, "m", seed=s) for s in seeds]
    return fit_packed(builts, data, study.train_for("m"), seeds)


def _assert_close(sep: list[TrainResult], packed: list[TrainResult], tol: float) -> None:
    for a, b in zip(sep, packed, strict=True):
        assert b.status is a.status
        assert len(b.history) == len(a.history)
        for key in a.final:
            assert b.final[key] == pytest.approx(a.final[key], abs=tol), key
        for ra, rb in zip(a.history, b.history, strict=True):
            assert rb["loss"] == pytest.approx(ra["loss"], abs=tol)
            assert rb["val_loss"] == pytest.approx(ra["val_loss"], abs=tol)


def test_initial_weights_are_exactly_the_separate_runs(tiny_study: Any) -> None:
    pack = PackedModel([build_model(tiny_study, "cnn", seed=s) for s in SEEDS])
    for r, s in enumerate(SEEDS):
        own = build_model(tiny_study, "cnn", seed=s).module
        for name, p in own.named_parameters():
            assert torch.equal(pack.params[name][r], p), name
        for name, b in own.named_buffers():
            assert torch.equal(pack.buffers[name][r], b), name


def test_mlp_l2_momentum_clipnorm_decay_matches_separate(tiny_config: dict[str, Any],
                                                         raw: Any) -> None:
    layers = ["Flatten", {"Dense": {"units": 16, "activation": "relu",
                                    "kernel_regularizer": {"l2": 0.001}}},
              {"Dense": {"units": 10, "activation": "softmax"}}]
    study = _study(tiny_config, layers, {"optimizer": {"name": "sgd", "learning_rate": 0.1,
                                                       "momentum": 0.9, "clipnorm": 0.5,
                                                       "decay": 0.01}})
    data = prepare_tensors(raw, study.data, study.seed)
    sep, packed = _separate(study, data, SEEDS), _packed(study, data, SEEDS)
    # Different seeds learn different models: the comparison is replica to replica.
    assert len({round(r.final["test_loss"], 4) for r in sep}) == len(SEEDS)
    _assert_close(sep, packed, 1e-5)


def test_adam_with_dropout_matches_separate_with_the_same_masks(tiny_study: Any,
                                                                raw: Any) -> None:
    # TINY's cnn: Conv2D, MaxPooling2D, Dropout 0.25 (on channels-last input), Adam.
    data = _first(prepare_tensors(raw, tiny_study.data, tiny_study.seed), 1024)
    seeds = SEEDS[:2]
    sep = []
    for s in seeds:
        built = build_model(tiny_study, "cnn", seed=s)
        torch.manual_seed(s)
        sep.append(fit(built, data, tiny_study.train_for("cnn"), s))
    builts = [build_model(tiny_study, "cnn", seed=s) for s in seeds]
    packed = fit_packed(builts, data, tiny_study.train_for("cnn"), seeds)
    _assert_close(sep, packed, 1e-5)


def test_dense_stack_with_dropout_runs_as_batched_matmuls(tiny_config: dict[str, Any],
                                                         raw: Any) -> None:
    # mlp-hparams' mlp128-drop in small: Dropout on the input and after each hidden layer.
    drop = {"Dropout": {"rate": 0.5}}
    layers = ["Flatten", drop, {"Dense": {"units": 16, "activation": "relu"}}, drop,
              {"Dense": {"units": 16, "activation": "tanh", "use_bias": False}}, drop,
              {"Dense": {"units": 10, "activation": "softmax"}}]
    study = _study(tiny_config, layers, {"optimizer": {"name": "adam"}})
    pack = PackedModel([build_model(study, "m", seed=s) for s in SEEDS])
    assert pack.plan is not None and pack.plan.fused and len(pack.sites) == 3
    assert pack.transposed == {"2.core.weight", "4.core.weight", "6.core.weight"}
    data = prepare_tensors(raw, study.data, study.seed)
    _assert_close(_separate(study, data, SEEDS), _packed(study, data, SEEDS), 1e-5)


def test_dense_plan_and_vmap_compute_the_same_logits(tiny_config: dict[str, Any]) -> None:
    layers = ["Flatten", {"Dense": {"units": 16, "activation": "relu"}},
              {"Reshape": {"target_shape": [2, 2, 4]}}, "Flatten",
              {"Dense": {"units": 10, "activation": "softmax"}}]
    study = _study(tiny_config, layers, {})
    pack = PackedModel([build_model(study, "m", seed=s) for s in SEEDS])
    assert pack.plan is not None
    x = torch.rand(3, 5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (3, 5), generator=torch.Generator().manual_seed(1))
    planned, logits = pack.train_step_forward(x, y, [])
    pack.plan = None  # the general path: vmap over functional_call
    with torch.no_grad():  # the same weights in the replicas' own layout
        pack.leaves = {k: v.clone() for k, v in pack.params.items()}
    vmapped, vlogits = pack.train_step_forward(x, y, [])
    assert torch.allclose(logits, vlogits, atol=1e-6)
    assert torch.allclose(planned, vmapped, atol=1e-6)


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "elu"])
def test_fused_dense_step_gradients_equal_autograd(tiny_config: dict[str, Any],
                                                   act: str) -> None:
    reg = {"l2": 0.01, "l1": 0.001}
    layers = ["Flatten", {"Dropout": {"rate": 0.3}},
              {"Dense": {"units": 12, "activation": act, "kernel_regularizer": reg,
                         "bias_regularizer": {"l2": 0.1}}}, {"Dropout": {"rate": 0.5}},
              {"Dense": {"units": 8, "activation": "relu", "use_bias": False}},
              {"Dense": {"units": 10, "activation": "softmax"}}]
    study = _study(tiny_config, layers, {})
    pack = PackedModel([build_model(study, "m", seed=s) for s in SEEDS])
    assert pack.plan is not None and pack.plan.fused is (act != "elu")  # elu: autograd
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 7, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (3, 7), generator=gen)
    masks = pack.draw_masks(7, [torch.Generator().manual_seed(s) for s in SEEDS])
    losses, logits = pack.train_step(x, y, masks)
    grads = {k: v.grad for k, v in pack.leaves.items()}
    for v in pack.leaves.values():
        v.grad = None
    auto_losses, auto_logits = pack.train_step_forward(x, y, masks)
    auto_losses.sum().backward()
    assert torch.allclose(losses, auto_losses, atol=1e-6)
    assert torch.allclose(logits, auto_logits, atol=1e-6)
    for k, v in pack.leaves.items():
        assert v.grad is not None and grads[k] is not None, k
        assert torch.allclose(grads[k], v.grad, atol=1e-6), k


def test_a_cnn_has_no_dense_plan(tiny_study: Any) -> None:
    pack = PackedModel([build_model(tiny_study, "cnn", seed=s) for s in SEEDS])
    assert pack.plan is None and not pack.transposed


def test_dropout_masks_are_the_separate_runs_masks(tiny_study: Any) -> None:
    builts = [build_model(tiny_study, "cnn", seed=s) for s in SEEDS]
    for built in builts:
        prefer_channels_last(built.module)  # NHWC, as fit lays out a conv model by default
    pack = PackedModel(builts)
    assert len(pack.sites) == 1 and pack.sites[0].channels_last
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    batches = [pack.draw_masks(5, gens)[0] for _ in range(2)]
    images = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for r, s in enumerate(SEEDS):
        # What a separate run's Dropout draws: its input is channels-last (after the conv
        # block), its stream the global generator seeded with the run's seed.
        module = build_model(tiny_study, "cnn", seed=s).module
        prefer_channels_last(module)
        assert isinstance(module[2], torch.nn.Dropout)
        torch.manual_seed(s)
        for masks in batches:  # two batches: the stream advances as a separate run's does
            with torch.no_grad():
                x = module[1](module[0](images)) + 1.0  # no zeros: every drop is visible
            assert not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(module[2].train()(x), x * masks[r])  # archlab's Dropout
    assert not torch.equal(batches[0][0], batches[0][1])  # each replica its own masks


def test_batchnorm_matches_separate_within_rounding(tiny_config: dict[str, Any],
                                                    raw: Any) -> None:
    layers = [CONV, "BatchNormalization", {"MaxPooling2D": {"pool_size": 2}},
              {"SpatialDropout2D": {"rate": 0.2}}, *HEAD]
    study = _study(tiny_config, layers, {"optimizer": {"name": "sgd", "momentum": 0.9}})
    data = _first(prepare_tensors(raw, study.data, study.seed), 1024)
    seeds = SEEDS[:2]
    sep, packed = _separate(study, data, seeds), _packed(study, data, seeds)
    # BatchNormalization amplifies rounding: a separate run with contiguous instead of
    # channels-last tensors differs from itself by ~3e-4 in loss after 2 epochs.
    _assert_close(sep, packed, 3e-3)


def test_batchnorm_running_stats_are_per_replica(tiny_config: dict[str, Any], raw: Any) -> None:
    layers = [CONV, "BatchNormalization", *HEAD]
    study = _study(tiny_config, layers, {"optimizer": "sgd", "epochs": 1})
    data = _first(prepare_tensors(raw, study.data, study.seed), 256)
    seeds = SEEDS[:2]
    sep = []
    for s in seeds:
        built = build_model(study, "m", seed=s)
        fit(built, data, study.train_for("m"), s)
        sep.append(built.module)
    builts = [build_model(study, "m", seed=s) for s in seeds]
    fit_packed(builts, data, study.train_for("m"), seeds)
    for own, packed in zip(sep, builts, strict=True):
        bn, pbn = own[1], packed.module[1]
        assert int(pbn.num_batches_tracked) == int(bn.num_batches_tracked) == 2
        assert torch.allclose(pbn.running_mean, bn.running_mean, atol=1e-5)
        assert torch.allclose(pbn.running_var, bn.running_var, rtol=1e-4)
    assert not torch.allclose(builts[0].module[1].running_mean,
                              builts[1].module[1].running_mean)


def test_restore_best_and_max_norm_per_replica(tiny_config: dict[str, Any], raw: Any) -> None:
    layers = ["Flatten", {"Dense": {"units": 16, "activation": "relu",
                                    "kernel_constraint": "max_norm"}},
              {"Dense": {"units": 10, "activation": "softmax"}}]
    study = _study(tiny_config, layers, {"optimizer": {"name": "rmsprop"}, "epochs": 3,
                                         "restore_best": True})
    data = prepare_tensors(raw, study.data, study.seed)
    sep, packed = _separate(study, data, SEEDS[:2]), _packed(study, data, SEEDS[:2])
    _assert_close(sep, packed, 1e-5)
    assert [r.best_epoch for r in packed] == [r.best_epoch for r in sep]


def test_what_cannot_be_packed_is_named(tiny_config: dict[str, Any]) -> None:
    study = _study(tiny_config, HEAD, {"early_stopping": {"patience": 1}})
    assert "early stopping" in (pack_blocker(study, "m") or "")
    study = _study(tiny_config, [{"GaussianNoise": {"stddev": 0.1}}, *HEAD], {})
    assert "GaussianNoise" in (pack_blocker(study, "m") or "")
    dense = {"Dense": {"units": 10, "activation": "softmax", "activity_regularizer": "l2"}}
    study = _study(tiny_config, ["Flatten", dense], {})
    assert "activity_regularizer" in (pack_blocker(study, "m") or "")
    study = _study(tiny_config, [CONV, "BatchNormalization", {"Dropout": {"rate": 0.5}}, *HEAD],
                   {"optimizer": "adadelta", "restore_best": True})
    assert pack_blocker(study, "m") is None
