"""A small fit on a slice of mnist-sample, shared by the augmentation and schedule tests: the
study (one MLP, the ``train`` section given), a freshly built model, and a fit stopped after
an epoch then resumed from its checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import archlab
from archlab.data import Tensors, load_dataset, prepare_tensors
from archlab.run.checkpoint import load_checkpoint, save_checkpoint
from archlab.train import TrainResult, TrainState, fit

SEED = 11


def sample_tensors(n_train: int, n_eval: int) -> Tensors:
    """The first ``n_train`` training and ``n_eval`` validation and test images of
    mnist-sample (a 0.1 validation split, seed 3)."""
    study = archlab.parse_study({"name": "t", "seed": 3, "data": {
        "dataset": "mnist-sample", "validation": {"split": 0.1}},
        "models": {"m": {"layers": ["Flatten", {"Dense": {"units": 10}}]}}})
    full = prepare_tensors(load_dataset("mnist-sample"), study.data, study.seed)
    return Tensors(full.x_train[:n_train], full.y_train[:n_train], full.x_val[:n_eval],
                   full.y_val[:n_eval], full.x_test[:n_eval], full.y_test[:n_eval],
                   full.class_names, full.validation_is_test)


def small_study(train: dict[str, Any]) -> archlab.Study:
    """Model ``m`` (Flatten, Dense 32 relu, Dropout 0.25, Dense 10 softmax) with ``train``."""
    return archlab.parse_study({
        "name": "t", "seed": 3, "data": {"dataset": "mnist-sample"}, "train": train,
        "models": {"m": {"layers": [
            "Flatten", {"Dense": {"units": 32, "activation": "relu"}}, {"Dropout": {"rate": 0.25}},
            {"Dense": {"units": 10, "activation": "softmax"}}]}}})


def fresh(study: archlab.Study) -> archlab.BuiltModel:
    """Model ``m`` built with :data:`SEED`, torch's global generator seeded likewise."""
    built = archlab.build_model(study, "m", seed=SEED)
    torch.manual_seed(SEED)
    return built


class Stop(Exception):
    """Raised from ``on_epoch_end`` to stop a fit there."""


Fits = tuple[archlab.BuiltModel, TrainResult, archlab.BuiltModel, TrainResult]


def stopped_and_resumed(study: archlab.Study, data: Tensors, ckpt: Path,
                        stop_epoch: int) -> Fits:
    """``(reference, want, resumed, got)``: a fit run to its end, and one stopped after epoch
    ``stop_epoch`` (its checkpoint saved to ``ckpt``) then resumed by a fresh model."""
    reference = fresh(study)
    want = fit(reference, data, study.train, SEED)
    first = fresh(study)

    def save_then_stop(st: TrainState, opt: Any, sched: Any, gen: torch.Generator) -> None:
        save_checkpoint(ckpt, st, first.module, opt, sched, gen)
        if st.epoch == stop_epoch:
            raise Stop

    with pytest.raises(Stop):
        fit(first, data, study.train, SEED, on_epoch_end=save_then_stop)
    torch.manual_seed(12345)
    resumed = fresh(study)
    got = fit(resumed, data, study.train, SEED, resume=lambda opt, sched, gen: load_checkpoint(
        ckpt, resumed.module, opt, sched, gen))
    return reference, want, resumed, got


def assert_same_fit(reference: archlab.BuiltModel, want: TrainResult,
                    resumed: archlab.BuiltModel, got: TrainResult) -> None:
    """The same history (but for the seconds), final metrics and weights, bit for bit."""
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in want.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in got.history] == strip
    assert got.final == want.final
    for (name, a), b in zip(reference.module.state_dict().items(),
                            resumed.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
