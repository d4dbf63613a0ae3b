"""Data augmentation: Keras 3's RandomTranslation, RandomRotation and RandomZoom, their specs,
their pixels next to Keras's, their seeding, and a resumed run equal to an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

import archlab
from archlab import SpecError
from archlab.augment import Augmentation, Augmenter, resample
from archlab.data import Tensors, load_dataset, prepare_tensors
from archlab.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from archlab.train import fit
from tests.fitting import (
    SEED,
    Stop,
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

SPECS = TypeAdapter(list[Augmentation])


def augmenter(specs: list[dict[str, Any]], seed: int = 0) -> Augmenter:
    return Augmenter(SPECS.validate_python(specs), seed)


def images(n: int = 4, h: int = 28, w: int = 28, c: int = 1) -> torch.Tensor:
    """Random images with content up to the borders, so every fill mode shows."""
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(5))


def keras_apply(layers: list[dict[str, Any]], x: torch.Tensor) -> torch.Tensor:
    """Keras 3's layers, one after the other, in training mode, on NCHW ``x``."""
    out: Any = x.permute(0, 2, 3, 1).numpy()
    for spec in layers:
        (name, args), = spec.items()
        out = getattr(keras.layers, name)(**args)(out, training=True)
    return torch.from_numpy(np.array(keras.ops.convert_to_numpy(out))).permute(0, 3, 1, 2)


def test_shape_dtype_and_range_are_kept() -> None:
    x = images(6, 28, 20)  # not square: height and width are not mixed up
    aug = augmenter([{"RandomRotation": {"factor": 0.2}},
                     {"RandomTranslation": {"height_factor": 0.2, "width_factor": 0.1}},
                     {"RandomZoom": {"height_factor": 0.3, "fill_mode": "constant"}}])
    y = aug(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert not torch.equal(x, y)
    assert y.min() >= 0.0 and y.max() <= 1.0 + 1e-6  # interpolation and fills stay in range


def test_zero_factors_leave_the_images_unchanged() -> None:
    x = images()
    aug = augmenter([{"RandomRotation": {"factor": 0.0}},
                     {"RandomTranslation": {"height_factor": 0, "width_factor": [0, 0]}},
                     {"RandomZoom": {"height_factor": 0.0, "width_factor": 0.0}}])
    assert torch.equal(aug(x), x)
    identity = torch.eye(3, dtype=torch.float64).repeat(len(x), 1, 1)
    for fill in ("reflect", "wrap", "constant", "nearest"):  # the sampler itself, at identity
        torch.testing.assert_close(resample(x, identity, fill, "bilinear", 0.5), x,
                                   atol=1e-5, rtol=0)


def test_seeded_streams_repeat_and_differ_across_seeds() -> None:
    specs = [{"RandomRotation": {"factor": 0.1}},
             {"RandomTranslation": {"height_factor": 0.1, "width_factor": 0.1}}]
    x = images()
    a, b, c = augmenter(specs, 1), augmenter(specs, 1), augmenter(specs, 2)
    first = a(x)
    assert torch.equal(first, b(x))
    assert not torch.equal(first, c(x))
    assert not torch.equal(first, a(x))  # the next batch gets new draws
    # A layer's own seed fixes its draws whatever the run's seed (Keras's `seed`).
    fixed = [{"RandomRotation": {"factor": 0.1, "seed": 7}}]
    assert torch.equal(augmenter(fixed, 1)(x), augmenter(fixed, 2)(x))


def test_augmentation_uses_no_other_random_stream() -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    augmenter([{"RandomZoom": {"height_factor": 0.2}}], 3)(images())
    assert torch.equal(torch.get_rng_state(), before)  # dropout's stream is untouched


CASES = [
    ({"RandomTranslation": {"height_factor": [0.1, 0.1], "width_factor": [-0.23, -0.23]}}),
    ({"RandomRotation": {"factor": [0.07, 0.07]}}),
    ({"RandomRotation": {"factor": [-0.3, -0.3]}}),
    ({"RandomZoom": {"height_factor": [0.3, 0.3]}}),  # zoom out
    ({"RandomZoom": {"height_factor": [-0.25, -0.25], "width_factor": [0.2, 0.2]}}),
]


@pytest.mark.parametrize("fill_mode", ["constant", "reflect", "wrap", "nearest"])
@pytest.mark.parametrize("case", CASES, ids=["translation", "rotation", "rotation-negative",
                                             "zoom-out", "zoom-in-out"])
def test_fixed_transforms_give_keras_pixels(case: dict[str, Any], fill_mode: str) -> None:
    (name, args), = case.items()
    layer = {name: {**args, "fill_mode": fill_mode, "fill_value": 0.25}}
    x = images(3, 28, 24)
    want = keras_apply([layer], x)
    got = augmenter([layer])(x)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=["translation", "rotation", "rotation-negative",
                                             "zoom-out", "zoom-in-out"])
def test_colour_batches_get_keras_pixels_each_channel_moved_alike(case: dict[str, Any]) -> None:
    """Augmentation works on colour batches: the same transform for every channel, Keras's
    pixels (RGB 32x32, as CIFAR-10)."""
    (name, args), = case.items()
    layer = {name: {**args, "fill_mode": "reflect"}}
    x = images(3, 32, 32, c=3)
    got = augmenter([layer])(x)
    torch.testing.assert_close(got, keras_apply([layer], x), atol=2e-4, rtol=0)
    same = x[:, :1].repeat(1, 3, 1, 1)  # three equal channels stay equal
    moved = augmenter([layer])(same)
    assert torch.equal(moved[:, 0], moved[:, 1]) and torch.equal(moved[:, 1], moved[:, 2])


@pytest.mark.parametrize("case", CASES[:4], ids=["translation", "rotation", "rotation-negative",
                                                 "zoom-out"])
def test_nearest_interpolation_picks_keras_pixels(case: dict[str, Any]) -> None:
    (name, args), = case.items()
    layer = {name: {**args, "fill_mode": "reflect", "interpolation": "nearest"}}
    x = images(3)
    differ = (augmenter([layer])(x) - keras_apply([layer], x)).abs() > 1e-6
    # Rounding a coordinate that float32 puts within an ulp of .5 may pick the other pixel.
    assert differ.float().mean() < 0.002


def test_listed_transforms_compose_in_keras_order() -> None:
    # A whole-pixel shift resamples exactly, so Keras's two passes and archlab's one agree
    # wherever the rotation does not sample the shift's filled border (Keras fills there, the
    # single pass samples the image): everywhere but near the edges of a digit pushed there.
    data = prepare_tensors(load_dataset("mnist-sample"), archlab.parse_study(
        {"name": "t", "data": {"dataset": "mnist-sample"},
         "models": {"m": {"layers": ["Flatten", {"Dense": {"units": 10}}]}}}).data, 0)
    x = data.pre(data.x_train[:8])  # the float NCHW batch the trainer augments
    layers = [{"RandomTranslation": {"height_factor": [3 / 28, 3 / 28],
                                     "width_factor": [-2 / 28, -2 / 28],
                                     "fill_mode": "constant"}},
              {"RandomRotation": {"factor": [0.05, 0.05], "fill_mode": "constant"}}]
    got = augmenter(layers)(x)
    want = keras_apply(layers, x)
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))
    torch.testing.assert_close(got[inner], want[inner], atol=2e-4, rtol=0)
    assert ((got - want).abs() > 2e-4).float().mean() < 0.005
    reversed_order = keras_apply(layers[::-1], x)
    assert (got - reversed_order).abs().max() > 0.1  # the order matters, and is Keras's


def test_bad_arguments_are_one_line_errors() -> None:
    layers = ["Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]

    def error(augmentation: Any) -> str:
        with pytest.raises(SpecError) as info:
            archlab.parse_study({"name": "t", "train": {"augmentation": augmentation},
                                 "models": {"m": {"layers": layers}}})
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "in [-1, 1]" in error([{"RandomRotation": {"factor": 1.5}}])
    assert "in [-1, 1]" in error([{"RandomTranslation": {"height_factor": [-2, 0.1],
                                                         "width_factor": 0.1}}])
    assert "(-1, 1]" in error([{"RandomZoom": {"height_factor": -1.0}}])
    assert "height_factor" in error([{"RandomZoom": {"height_factor": [0.1, 0.2, 0.3]}}])
    assert "mirror" in error([{"RandomRotation": {"factor": 0.1, "fill_mode": "mirror"}}])
    assert "width_factor" in error([{"RandomTranslation": {"height_factor": 0.1}}])
    assert "RandomFlip" in error([{"RandomFlip": {"mode": "horizontal"}}])
    assert "interpolation" in error([{"RandomZoom": {"height_factor": 0.1,
                                                    "interpolation": "bicubic"}}])


def test_augmentation_round_trips_and_a_model_may_turn_it_off() -> None:
    layers = ["Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]
    study = archlab.parse_study({
        "name": "t", "train": {"augmentation": [{"RandomZoom": {"height_factor": [-0.1, 0.2],
                                                                "seed": 4}}]},
        "models": {"a": {"layers": layers}, "b": {"layers": layers,
                                                  "train": {"augmentation": []}}}})
    assert study.train.to_config()["augmentation"] == [
        {"RandomZoom": {"height_factor": [-0.1, 0.2], "seed": 4}}]
    assert archlab.parse_study(study.to_config()) == study
    assert study.train_for("b").augmentation == []
    assert "augmentation" not in study.train_for("b").to_config()
    assert '"RandomZoom"' in json.dumps(archlab.study_json_schema())  # editors list the names


# ---------------------------------------------------------------------------------------------
# Training


@pytest.fixture(scope="module")
def data() -> Tensors:
    return sample_tensors(800, 200)


TRAIN = {"optimizer": "adam", "batch_size": 100, "epochs": 3,
         "augmentation": [{"RandomRotation": {"factor": 0.05}},
                          {"RandomTranslation": {"height_factor": 0.1, "width_factor": 0.1,
                                                 "fill_mode": "constant"}}]}


def test_only_training_batches_are_augmented(data: Tensors, monkeypatch) -> None:
    seen: list[int] = []
    call = Augmenter.__call__

    def counted(self: Augmenter, x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return call(self, x)

    monkeypatch.setattr(Augmenter, "__call__", counted)
    study = small_study(TRAIN)
    result = fit(fresh(study), data, study.train, SEED)
    assert seen == [100] * 8 * 3  # 8 batches an epoch, never the evaluations
    plain = small_study({k: v for k, v in TRAIN.items() if k != "augmentation"})
    other = fit(fresh(plain), data, plain.train, SEED)
    assert result.history[0]["loss"] != other.history[0]["loss"]


def test_resume_equals_the_uninterrupted_fit_bit_for_bit(data: Tensors, tmp_path: Path) -> None:
    study = small_study(TRAIN)
    assert_same_fit(*stopped_and_resumed(study, data, tmp_path / "checkpoint.safetensors", 1))

    # A checkpoint of the same model trained without augmentation cannot resume this run.
    plain = small_study({k: v for k, v in TRAIN.items() if k != "augmentation"})
    other = tmp_path / "plain.safetensors"
    model = fresh(plain)
    with pytest.raises(Stop):
        fit(model, data, plain.train, SEED, on_epoch_end=lambda st, opt, sched, gen: (
            save_checkpoint(other, st, model.module, opt, sched, gen), (_ for _ in ()).throw(
                Stop())))
    again = fresh(study)
    with pytest.raises(CheckpointError, match="no augmentation state"):
        fit(again, data, study.train, SEED, resume=lambda opt, sched, gen: load_checkpoint(
            other, again.module, opt, sched, gen))


def test_a_killed_run_resumes_to_the_uninterrupted_numbers(tmp_path: Path) -> None:
    """Through execute_run, its checkpoint file and the store: augmentation, a plateau."""
    from archlab.run import RunContext, execute_run, plan_runs
    from archlab.store import RunStatus, Store

    study = small_study({**TRAIN, "optimizer": {"name": "sgd", "learning_rate": 0.05},
                          "reduce_lr_on_plateau": {"patience": 0, "min_delta": 0.5}})
    (plan,) = plan_runs(study)
    full = prepare_tensors(load_dataset("mnist-sample"), study.data, study.seed)
    small = Tensors(full.x_train[:600], full.y_train[:600], full.x_val[:200], full.y_val[:200],
                    full.x_test[:200], full.y_test[:200], full.class_names,
                    full.validation_is_test)
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    assert execute_run(study, plan, RunContext(reference, small, 1)) is RunStatus.FINISHED
    epochs: list[int] = []
    ctx = RunContext(stopped, small, 1,
                     lambda rid, ev: epochs.append(ev["epoch"]) if ev["kind"] == "epoch" else None,
                     stop_requested=lambda: bool(epochs))
    assert execute_run(study, plan, ctx) is RunStatus.INTERRUPTED  # during epoch 2
    assert execute_run(study, plan, RunContext(stopped, small, 1)) is RunStatus.FINISHED
    with Store(reference) as want, Store(stopped) as got:
        assert got.runs()[0].metrics == want.runs()[0].metrics
        strip = [{k: v for k, v in h.items() if k != "seconds"} for h in want.history(plan.run_id)]
        assert [{k: v for k, v in h.items() if k != "seconds"}
                for h in got.history(plan.run_id)] == strip
        assert [h["lr"] for h in strip] == pytest.approx([0.05, 0.05, 0.005], rel=1e-7)
