"""The built-in studies reproduce the seed notebooks' models, parameter for parameter.

Expected totals are the Keras ``model.summary()`` totals of the seed notebooks (printed there,
or computed by hand with Keras's rules where a notebook printed no summary). BatchNormalization's
moving mean and variance count as non-trainable, as in Keras.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from typing import Any

import numpy as np
import pytest
import torch

from archlab import build_model, load_study, zoo_names

# (study, model, total params, non-trainable params or None where the notebook printed none)
EXPECTED: list[tuple[str, str, int, int | None]] = [
    # notebook 000: no summary() printed; splits are 2 x BN channels, computed by hand
    ("depth-l2", "conv2", 5_778, 32),
    ("depth-l2", "conv2-l2", 5_778, 32),
    ("depth-l2", "conv3", 42_346, 128),
    ("depth-l2", "conv3-wide", 93_930, 320),
    ("depth-l2", "conv3-wide-l2", 93_930, 320),
    ("depth-l2", "conv5", 18_738, 120),
    # notebook 001: printed summaries, all trainable
    ("conv-depth", "cnn1", 1_199_882, 0),
    ("conv-depth", "cnn3", 62_466, 0),
    ("conv-depth", "cnn5", 76_978, 0),
    ("conv-depth", "cnn7", 126_818, 0),
    # notebook 002: printed summaries, all trainable
    ("conv-stacks", "conv3", 43_362, 0),
    ("conv-stacks", "conv5", 36_436, 0),
    ("conv-stacks", "conv7", 121_016, 0),
    # notebook 003: printed summaries (trainable + non-trainable)
    ("kernels-padding", "m1", 646_410, 1_280),
    ("kernels-padding", "m2", 1_211_274, 1_280),
    ("kernels-padding", "m3", 696_330, 1_280),
    ("kernels-padding", "m4", 3_842_890, 768),
    ("kernels-padding", "m5", 1_211_274, 1_280),
    ("kernels-padding", "m6", 7_396_362, 768),
    ("kernels-padding", "m7", 2_686_602, 1_280),
    ("kernels-padding", "m8", 2_588_298, 1_280),
    ("kernels-padding", "m9", 3_210_378, 1_280),
    ("kernels-padding", "m10", 37_987_722, 1_280),
    # cifar10 (beyond the notebooks): the seed CNNs on 32x32 RGB, computed by hand from the
    # MNIST counts (the first kernels span 3 channels; Dense sizes follow from 32x32) and
    # checked against Keras 3 in tests/test_keras_parity.py
    ("cifar10", "cnn", 1_626_442, 0),
    ("cifar10", "conv3-wide", 109_418, 320),
    ("cifar10", "cnn3", 63_042, 0),
    ("cifar10", "conv5", 37_756, 0),
    ("cifar10", "m9", 5_832_394, 1_280),
    ("cifar10", "resnet", 78_714, 672),
    # notebook 004: no summary() printed; plain MLPs, no BatchNormalization
    ("mlp-hparams", "mlp32", 26_506, 0),
    ("mlp-hparams", "mlp64", 55_050, 0),
    ("mlp-hparams", "mlp32-b128", 26_506, 0),
    ("mlp-hparams", "mlp32-b32", 26_506, 0),
    ("mlp-hparams", "mlp32x3", 27_562, 0),
    ("mlp-hparams", "mlp128-drop", 118_282, 0),
    ("mlp-hparams", "mlp32-momentum", 26_506, 0),
    ("mlp-hparams", "mlp32-lr09", 26_506, 0),
    # its sweep: Dense W-32-10 on 784 inputs: 784*W + W + 32*W + 32 + 330
    *(("mlp-hparams", f"grid[batch_size={b},learning_rate={lr},units={w}]",
       {32: 26_506, 128: 104_938}[w], 0)
      for b in (32, 128) for lr in (0.01, 0.09) for w in (32, 128)),
    # Keras examples/mnist_cnn.py
    ("keras-mnist-cnn", "cnn", 1_199_882, 0),
    # quickstart: notebook 004's MLP against two small CNNs with fewer parameters (computed by
    # hand: conv2 = 80 + 1,168 + 4,010; conv3 = 80 + 1,168 + 4,640 + 2,890)
    ("quickstart", "conv2", 5_258, 0),
    ("quickstart", "conv3", 8_778, 0),
    ("quickstart", "mlp32", 26_506, 0),
    # residual (beyond the notebooks; computed by hand, checked against Keras 3 below): stem
    # 144 + BN 64; block 16: 2 x (2,304 + 64); block 32: 4,608 + 9,216 + 512 + 3 x 128;
    # block 64: 18,432 + 36,864 + 2,048 + 3 x 256; Dense 650. BN: half non-trainable.
    ("residual", "resnet", 78_426, 672),
    ("residual", "m9", 3_210_378, 1_280),
]

ALL_MODELS = [(s, m) for s in zoo_names() for m in load_study(f"zoo:{s}").models]


@pytest.mark.parametrize(("study", "model", "total", "non_trainable"), EXPECTED,
                         ids=[f"{s}:{m}" for s, m, _, _ in EXPECTED])
def test_param_counts_match_the_notebooks(study: str, model: str, total: int,
                                          non_trainable: int | None) -> None:
    built = build_model(load_study(f"zoo:{study}"), model, device="meta")
    assert built.total_params == total
    assert built.trainable_params + built.non_trainable_params == total
    if non_trainable is not None:
        assert built.non_trainable_params == non_trainable
        assert built.trainable_params == total - non_trainable


def test_notebook_003_m10_split_as_printed() -> None:
    built = build_model(load_study("zoo:kernels-padding"), "m10", device="meta")
    assert (built.total_params, built.trainable_params, built.non_trainable_params) == (
        37_987_722, 37_986_442, 1_280)


def test_every_zoo_model_is_listed() -> None:
    assert sorted(ALL_MODELS) == sorted((s, m) for s, m, _, _ in EXPECTED)


@pytest.mark.parametrize(("study", "model"), ALL_MODELS, ids=[f"{s}:{m}" for s, m in ALL_MODELS])
def test_every_zoo_model_builds_with_ten_outputs(study: str, model: str) -> None:
    built = build_model(load_study(f"zoo:{study}"), model, seed=0)
    assert built.output_shape == (10,)
    h, w, c = built.input_shape
    module = built.module.eval()
    with torch.no_grad():
        out = module(torch.rand(2, c, h, w))
    assert tuple(out.shape) == (2, 10)
    assert torch.isfinite(out).all()


def test_zoo_studies_follow_conventions() -> None:
    for name in zoo_names():
        study = load_study(f"zoo:{name}")
        assert study.name == name
        assert study.description
        for model_name, spec in study.models.items():
            assert model_name == model_name.lower()
            assert spec.description, f"{name}:{model_name} has no description"


def test_notebook_results_name_zoo_models() -> None:
    text = resources.files("archlab").joinpath("zoo/notebook_results.json").read_text()
    results = json.loads(text)
    for study, models in results.items():
        known = load_study(f"zoo:{study}").models
        for model, scores in models.items():
            assert model in known, f"{study}:{model}"
            assert set(scores) <= {"test_accuracy", "test_loss"}
            assert all(v >= 0.0 for v in scores.values())
            assert 0.0 <= scores.get("test_accuracy", 0.0) <= 1.0


# The quickstart's CNNs are its own (scaled-down keras-mnist-cnn); its MLP is notebook 004's.
# The residual study's m9 is notebook 003's best CNN, trained as notebook 003 trained it.
@pytest.mark.parametrize(("study", "model", "source", "source_model"), [
    ("quickstart", "mlp32", "mlp-hparams", "mlp32"),
    ("residual", "m9", "kernels-padding", "m9"),
])
def test_zoo_models_that_are_the_notebook_models(study: str, model: str, source: str,
                                                 source_model: str) -> None:
    copy = load_study(f"zoo:{study}").models[model]
    assert copy.layers == load_study(f"zoo:{source}").models[source_model].layers


def test_residual_m9_is_the_notebooks_best_cnn_under_its_protocol() -> None:
    text = resources.files("archlab").joinpath("zoo/notebook_results.json").read_text()
    scores = {(study, model): s["test_accuracy"] for study, models in json.loads(text).items()
              for model, s in models.items() if "test_accuracy" in s}
    cnns = {k: v for k, v in scores.items() if k[0] != "mlp-hparams"}
    assert max(cnns, key=cnns.__getitem__) == ("kernels-padding", "m9")
    residual, source = load_study("zoo:residual"), load_study("zoo:kernels-padding")
    assert residual.data == source.data
    assert residual.train.model_copy(update={"repeats": 1}) == source.train


def _keras_resnet(keras: Any) -> Any:
    """The residual study's resnet written with Keras 3's functional API, independently of
    archlab's spec: conv-BN-ReLU, conv-BN, Add with the identity or a 1x1 projection, ReLU."""
    layers = keras.layers

    def conv(x: Any, filters: int, kernel: int, strides: int = 1) -> Any:
        return layers.Conv2D(filters, kernel, strides=strides, padding="same",
                             use_bias=False)(x)

    def block(x: Any, filters: int, strides: int) -> Any:
        y = layers.ReLU()(layers.BatchNormalization()(conv(x, filters, 3, strides)))
        y = layers.BatchNormalization()(conv(y, filters, 3))
        shortcut = x
        if strides != 1 or x.shape[-1] != filters:
            shortcut = layers.BatchNormalization()(
                layers.Conv2D(filters, 1, strides=strides, use_bias=False)(x))
        return layers.ReLU()(layers.Add()([shortcut, y]))

    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.ReLU()(layers.BatchNormalization()(conv(inputs, 16, 3)))
    for filters, strides in ((16, 1), (32, 2), (64, 2)):
        x = block(x, filters, strides)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_residual_resnet_has_keras_3s_parameter_counts() -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":  # pragma: no cover - another backend chosen first
        pytest.skip("Keras is configured for another backend")
    model = _keras_resnet(keras)
    built = build_model(load_study("zoo:residual"), "resnet", device="meta")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert (model.count_params(), trainable) == (built.total_params, built.trainable_params)
    assert built.total_params == 78_426 and built.non_trainable_params == 672
    assert tuple(model.output.shape[1:]) == built.output_shape == (10,)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_residual_resnet_matches_keras_layer_by_layer() -> None:
    """Built from the zoo file's own layers in Keras: per-layer params and shapes, and the
    same probabilities with archlab's weights copied in."""
    import yaml

    pytest.importorskip("keras")
    from tests.layers.test_keras_new_layers import assert_matches_keras

    text = resources.files("archlab").joinpath("zoo/residual.yaml").read_text()
    built = assert_matches_keras(yaml.safe_load(text)["models"]["resnet"]["layers"])
    assert built.total_params == 78_426
