"""The layers of issue 10 against Keras 3 (torch backend): parameter counts (total, trainable,
per layer), per-layer output shapes and, with archlab's weights copied into Keras, the same
probabilities on random input. Skipped when Keras is absent."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover - another backend was chosen first
    pytest.skip("Keras is configured for another backend", allow_module_level=True)

from archlab import SpecError, build_model, parse_study  # noqa: E402
from archlab.layers import (  # noqa: E402
    ELU,
    Conv2D,
    Cropping2D,
    DepthwiseConv2D,
    GaussianNoise,
    GlobalAvgPool2D,
    GlobalMaxPool2D,
    LayerNormalization,
    LeakyReLU,
    Merge,
    PReLU,
    ReLU,
    Reshape,
    SeparableConv2D,
    Softmax,
    SpatialDropout2D,
    UpSampling2D,
    ZeroPadding2D,
)
from tests.keras_twin import copy_weights_into, keras_twin, same_probabilities, to_numpy  # noqa: E402
from tests.test_keras_parity import _copy_layer, _keras_layer, _perturb, on_cifar10  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

def keras_layer(spec: Any) -> Any:
    """The Keras layer for one spec: issue 10's layers here, the rest from the parity tests."""
    L = keras.layers
    if isinstance(spec, Conv2D):
        return L.Conv2D(spec.filters, spec.kernel_size, strides=spec.strides,
                        padding=spec.padding, dilation_rate=spec.dilation_rate,
                        groups=spec.groups, activation=spec.activation, use_bias=spec.use_bias)
    if isinstance(spec, DepthwiseConv2D):
        return L.DepthwiseConv2D(spec.kernel_size, strides=spec.strides, padding=spec.padding,
                                 depth_multiplier=spec.depth_multiplier,
                                 dilation_rate=spec.dilation_rate, activation=spec.activation,
                                 use_bias=spec.use_bias)
    if isinstance(spec, SeparableConv2D):
        return L.SeparableConv2D(spec.filters, spec.kernel_size, strides=spec.strides,
                                 padding=spec.padding, depth_multiplier=spec.depth_multiplier,
                                 dilation_rate=spec.dilation_rate, activation=spec.activation,
                                 use_bias=spec.use_bias)
    if isinstance(spec, GlobalMaxPool2D | GlobalAvgPool2D):
        return getattr(L, spec.type)()
    if isinstance(spec, ReLU):
        return L.ReLU(max_value=spec.max_value, negative_slope=spec.negative_slope,
                      threshold=spec.threshold)
    if isinstance(spec, LeakyReLU):
        return L.LeakyReLU(negative_slope=spec.negative_slope)
    if isinstance(spec, PReLU):
        return L.PReLU(shared_axes=spec.shared_axes)
    if isinstance(spec, ELU):
        return L.ELU(alpha=spec.alpha)
    if isinstance(spec, Softmax):
        return L.Softmax(axis=spec.axis)
    if isinstance(spec, Reshape):
        return L.Reshape(tuple(spec.target_shape))
    if isinstance(spec, ZeroPadding2D):
        return L.ZeroPadding2D(padding=spec.padding)
    if isinstance(spec, Cropping2D):
        return L.Cropping2D(cropping=spec.cropping)
    if isinstance(spec, UpSampling2D):
        return L.UpSampling2D(size=spec.size, interpolation=spec.interpolation)
    if isinstance(spec, SpatialDropout2D):
        return L.SpatialDropout2D(spec.rate)
    if isinstance(spec, GaussianNoise):
        return L.GaussianNoise(spec.stddev)
    if isinstance(spec, LayerNormalization):
        return L.LayerNormalization(axis=spec.axis, epsilon=spec.epsilon, center=spec.center,
                                    scale=spec.scale)
    return _keras_layer(spec)


def copy_weights(spec: Any, module: Any, klayer: Any) -> None:
    """Copy one layer's torch weights into its Keras twin (issue 10's layers; else parity's)."""
    if isinstance(spec, DepthwiseConv2D | SeparableConv2D):
        core = module.core
        dw = core.weight if isinstance(spec, DepthwiseConv2D) else core.depthwise.weight
        dw = dw.detach().numpy()  # (cin·m, 1, kh, kw) -> Keras's (kh, kw, cin, m)
        cin = dw.shape[0] // spec.depth_multiplier
        kernel = klayer.kernel if isinstance(spec, DepthwiseConv2D) else klayer.depthwise_kernel
        kernel.assign(
            dw.reshape(cin, spec.depth_multiplier, *dw.shape[2:]).transpose(2, 3, 0, 1))
        last = core
        if isinstance(spec, SeparableConv2D):
            last = core.pointwise
            klayer.pointwise_kernel.assign(last.weight.detach().numpy().transpose(2, 3, 1, 0))
        if spec.use_bias:
            klayer.bias.assign(last.bias.detach().numpy())
        return
    if isinstance(spec, PReLU):
        klayer.alpha.assign(module.alpha.detach().numpy())
        return
    if isinstance(spec, LayerNormalization):
        if spec.scale:
            klayer.gamma.assign(module.gamma.detach().numpy())
        if spec.center:
            klayer.beta.assign(module.beta.detach().numpy())
        return
    _copy_layer(spec, module, klayer)


def assert_matches_keras(layers: list[Any], *, training_free: bool = True,
                         study: Any = None, model: str = "m") -> Any:
    """Build ``layers`` (or ``study``'s ``model``) in archlab and Keras; compare counts, shapes
    and probabilities."""
    if study is None:
        study = parse_study({"name": "k", "models": {"m": {"layers": layers}}})
    built = build_model(study, model, seed=0)
    specs = list(study.models[model].layers)
    _perturb(built.module, seed=1)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # PReLU's slopes start at zero: make them differ
        for name, p in built.module.named_parameters():
            if name.endswith("alpha"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    kmodel, rows = keras_twin(built, specs, keras_layer)
    copy_weights_into(specs, built.module, {id(spec): k for spec, k, _ in rows}, copy_weights)
    same_probabilities(built, kmodel, np.random.default_rng(0))
    return built


def _conv(filters: int, k: int = 3, **args: Any) -> dict[str, Any]:
    return {"Conv2D": {"filters": filters, "kernel_size": k, "activation": "relu", **args}}


OUT = [{"Dense": {"units": 10, "activation": "softmax"}}]
HEAD = [_conv(4, strides=2)]  # 13x13x4
TAIL = ["Flatten", *OUT]

# ---------------------------------------------------------------------------------------------
# 1. merge layers in the branch syntax

MERGE_CASES = {
    "Add-residual": [*HEAD, {"Add": {"branches": [[], [_conv(4, padding="same"),
                                                      _conv(4, padding="same")]]}}, *TAIL],
    "Subtract": [*HEAD, {"Subtract": {"branches": [[_conv(3, 1)], [_conv(3, padding="same")]]}},
                 *TAIL],
    "Multiply": [*HEAD, {"Multiply": {"branches": [[], [_conv(4, 1)], [_conv(4, 5, padding=
                                                                               "same")]]}},
                 *TAIL],
    "Average": [*HEAD, {"Average": {"branches": [[_conv(2, 1)], [_conv(2, 1)]]}}, *TAIL],
    "Maximum": [*HEAD, {"Maximum": {"branches": [[], [{"Conv2D": {"filters": 4,
                                                                  "kernel_size": 1}}]]}},
                *TAIL],
    "Add-flat": ["Flatten", {"Add": {"branches": [[{"Dense": {"units": 8}}],
                                                  [{"Dense": {"units": 8}}]]}}, *OUT],
    "nested": [*HEAD, {"Add": {"branches": [[], [{"Concatenate": {"branches": [
        [_conv(2, 1)], [_conv(2, padding="same")]]}}]]}}, *TAIL],
}


@pytest.mark.parametrize("case", list(MERGE_CASES))
def test_merge_layers_match_keras(case: str) -> None:
    built = assert_matches_keras(MERGE_CASES[case])
    assert all(r.params == 0 for r in built.rows if isinstance(r.spec, Merge))


@pytest.mark.parametrize("merge", ["Add", "Subtract", "Multiply", "Average", "Maximum"])
def test_merge_of_different_shapes_is_one_line_error(merge: str) -> None:
    study = parse_study({"name": "k", "models": {"m": {"layers": [
        {merge: {"branches": [[], [_conv(4, padding="same")]]}}, *TAIL]}}})
    with pytest.raises(SpecError) as e:
        build_model(study, "m", device="meta")
    msg = str(e.value)
    assert "\n" not in msg
    assert f"layer 1 ({merge}), field 'branches': Expected branch outputs of the same shape, " \
           "received (28, 28, 1), (28, 28, 4)" in msg


def test_subtract_takes_exactly_two_branches() -> None:
    with pytest.raises(SpecError) as e:
        parse_study({"name": "k", "models": {"m": {"layers": [
            {"Subtract": {"branches": [[], [], []]}}, *TAIL]}}})
    assert "\n" not in str(e.value) and "Subtract" in str(e.value)


def test_merge_errors_inside_branches_name_the_branch() -> None:
    study = parse_study({"name": "k", "models": {"m": {"layers": [
        {"Add": {"branches": [[], ["Flatten", _conv(2)]]}}, *TAIL]}}})
    with pytest.raises(SpecError, match=r"layer 1 \(Add\), branch 2, layer 2 \(Conv2D\)"):
        build_model(study, "m", device="meta")


def test_merge_labels_in_the_compact_form() -> None:
    from archlab.describe import compact_architecture

    study = parse_study({"name": "k", "models": {"m": {"layers": MERGE_CASES["Add-residual"]}}})
    compact = compact_architecture(build_model(study, "m", device="meta"))
    assert "add[id | conv3 32 same, conv3 32 same]" not in compact
    assert "add[id | conv3 4 same conv3 4 same]" in compact


# ---------------------------------------------------------------------------------------------
# 2. Keras's aliases

ALIAS_CASES = {
    "Convolution2D+MaxPool2D+GlobalAvgPool2D": [
        {"Convolution2D": {"filters": 4, "kernel_size": 3, "padding": "same"}},
        {"MaxPool2D": {"pool_size": 2}}, "GlobalAvgPool2D", *OUT],
    "AvgPool2D+GlobalMaxPool2D": [
        {"Convolution2D": {"filters": 3, "kernel_size": [3, 2], "strides": 2}},
        {"AvgPool2D": {"pool_size": 3, "strides": 2}}, "GlobalMaxPool2D", *OUT],
}


@pytest.mark.parametrize("case", list(ALIAS_CASES))
def test_aliases_match_keras(case: str) -> None:
    assert_matches_keras(ALIAS_CASES[case])


@pytest.mark.parametrize("alias,name", [("Convolution2D", "Conv2D"), ("MaxPool2D", "MaxPooling2D"),
                                        ("AvgPool2D", "AveragePooling2D"),
                                        ("GlobalAvgPool2D", "GlobalAveragePooling2D"),
                                        ("GlobalMaxPool2D", "GlobalMaxPooling2D")])
def test_an_alias_is_its_layer_and_round_trips(alias: str, name: str) -> None:
    from archlab import dump_study
    from archlab.layers import LAYER_TYPES

    assert issubclass(LAYER_TYPES[alias], LAYER_TYPES[name])
    args = {"filters": 2, "kernel_size": 3} if "Conv" in alias else {}
    layers = [{alias: args} if args else alias, "Flatten", *OUT]
    study = parse_study({"name": "k", "models": {"m": {"layers": layers}}})
    assert study.models["m"].layers[0].type == alias
    assert dump_study(study).count(alias) == 1
    assert parse_study(__import__("yaml").safe_load(dump_study(study))) == study


# ---------------------------------------------------------------------------------------------
# 3. activation layers

ACTIVATION_CASES = {
    "relu-args": [_conv(4, strides=2),
                  {"ReLU": {"max_value": 0.4, "negative_slope": 0.2, "threshold": 0.1}},
                  "LeakyReLU", {"PReLU": {"shared_axes": [1, 2]}}, "Flatten",
                  {"Dense": {"units": 12}}, "PReLU", {"ELU": {"alpha": 0.5}},
                  {"Dense": {"units": 10}}, "Softmax"],
    "prelu-per-value": [{"Conv2D": {"filters": 3, "kernel_size": 3, "strides": 2}}, "PReLU",
                        "ReLU", {"LeakyReLU": {"negative_slope": 0.1}}, "Softmax", *TAIL],
    "prelu-shared-channels": [{"Conv2D": {"filters": 3, "kernel_size": 3, "strides": 2}},
                              {"PReLU": {"shared_axes": [3]}}, {"ReLU": {"max_value": 0.2}},
                              "ELU", *TAIL],
}


@pytest.mark.parametrize("case", list(ACTIVATION_CASES))
def test_activation_layers_match_keras(case: str) -> None:
    assert_matches_keras(ACTIVATION_CASES[case])


@pytest.mark.parametrize("layer,args", [
    ("ReLU", {}), ("ReLU", {"max_value": 1.5}), ("ReLU", {"threshold": 0.5}),
    ("ReLU", {"negative_slope": 0.1, "threshold": -0.0, "max_value": 2.0}),
    ("ReLU", {"negative_slope": 0.25, "threshold": 1.0}),
    ("LeakyReLU", {}), ("LeakyReLU", {"negative_slope": 0.05}),
    ("ELU", {}), ("ELU", {"alpha": 0.3}), ("Softmax", {}),
])
def test_activation_layer_values_match_keras(layer: str, args: dict[str, Any]) -> None:
    from archlab.layers import LAYER_TYPES

    spec = LAYER_TYPES[layer](**args)
    x = np.linspace(-3, 3, 61, dtype=np.float32).reshape(1, 61)
    with torch.no_grad():
        ours = spec.build((61,))(torch.from_numpy(x)).numpy()
    theirs = to_numpy(keras_layer(spec)(x))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shared,params", [(None, 13 * 13 * 4), ([1, 2], 4), ([3], 169),
                                           ([1, 2, 3], 1)])
def test_prelu_params_per_value_unless_shared(shared: Any, params: int) -> None:
    layers = [_conv(4, strides=2), {"PReLU": {"shared_axes": shared}}, *TAIL]
    built = assert_matches_keras(layers)
    assert built.rows[1].params == params
    assert built.rows[1].output_shape == (13, 13, 4)


def test_prelu_axis_beyond_the_input_is_one_line_error() -> None:
    study = parse_study({"name": "k", "models": {"m": {"layers": [
        "Flatten", {"PReLU": {"shared_axes": [2]}}, *OUT]}}})
    with pytest.raises(SpecError, match=r"layer 2 \(PReLU\), field 'shared_axes': Expected "
                                        r"axes between 1 and 1"):
        build_model(study, "m", device="meta")


def test_leaky_relu_default_is_keras_3s() -> None:
    assert LeakyReLU().negative_slope == 0.3


# ---------------------------------------------------------------------------------------------
# 4. reshaping, noise and layer normalization

RESHAPING_CASES = {
    "reshape-flat": [_conv(4, strides=2), {"Reshape": {"target_shape": [-1]}}, *OUT],
    "reshape-image": [_conv(4, strides=2), {"Reshape": {"target_shape": [13, 52, 1]}},
                      _conv(2), {"Reshape": {"target_shape": [11, -1, 5]}}, *TAIL],
    "reshape-vector-to-image": ["Flatten", {"Dense": {"units": 48}},
                                {"Reshape": {"target_shape": [4, 4, 3]}}, _conv(2, 2), *TAIL],
    "pad-crop-upsample": [_conv(3, strides=2), "ZeroPadding2D",
                          {"ZeroPadding2D": {"padding": [[0, 2], [1, 3]]}},
                          {"Cropping2D": {"cropping": [1, 2]}},
                          {"Cropping2D": {"cropping": [[0, 3], [2, 1]]}},
                          {"UpSampling2D": {"size": [2, 3]}}, "UpSampling2D",
                          _conv(2, 3, strides=3), *TAIL],
    "noise-dropout-layernorm": [_conv(4, strides=2), {"SpatialDropout2D": {"rate": 0.3}},
                                {"GaussianNoise": {"stddev": 0.5}}, "LayerNormalization",
                                {"LayerNormalization": {"epsilon": 0.1, "center": False}},
                                "Flatten", {"Dense": {"units": 6}},
                                {"LayerNormalization": {"scale": False}}, *OUT],
}


@pytest.mark.parametrize("case", list(RESHAPING_CASES))
def test_reshaping_and_noise_layers_match_keras(case: str) -> None:
    assert_matches_keras(RESHAPING_CASES[case])


@pytest.mark.parametrize("layer,args,field", [
    ("Reshape", {"target_shape": [7, 7]}, "target_shape"),
    ("Reshape", {"target_shape": [-1, -1, 1]}, "target_shape"),
    ("Reshape", {"target_shape": [27, 27, 1]}, "target_shape"),
    ("Reshape", {"target_shape": [5, -1, 1]}, "target_shape"),
    ("Cropping2D", {"cropping": 14}, "cropping"),
])
def test_reshaping_errors_are_one_line(layer: str, args: dict[str, Any], field: str) -> None:
    study = parse_study({"name": "k", "models": {"m": {"layers": [{layer: args}, *TAIL]}}})
    with pytest.raises(SpecError) as e:
        build_model(study, "m", device="meta")
    assert "\n" not in str(e.value)
    assert f"layer 1 ({layer}), field '{field}': Expected" in str(e.value)


def test_padding_forms_round_trip() -> None:
    import yaml

    from archlab import dump_study

    layers = [{"ZeroPadding2D": {"padding": 2}}, {"Cropping2D": {"cropping": [[1, 0], [0, 3]]}},
              *TAIL]
    study = parse_study({"name": "k", "models": {"m": {"layers": layers}}})
    assert study.models["m"].layers[0].padding == ((2, 2), (2, 2))
    assert parse_study(yaml.safe_load(dump_study(study))) == study
    assert build_model(study, "m", device="meta").rows[1].output_shape == (31, 29, 1)


def test_gaussian_noise_and_spatial_dropout_act_only_in_training() -> None:
    torch.manual_seed(0)
    x = torch.ones(64, 8, 5, 5)
    noise = GaussianNoise(stddev=0.5).build((5, 5, 8))
    drop = SpatialDropout2D(rate=0.5).build((5, 5, 8))
    noise.eval()
    drop.eval()
    assert torch.equal(noise(x), x) and torch.equal(drop(x), x)
    noise.train()
    drop.train()
    noisy = noise(x) - x
    assert abs(noisy.mean().item()) < 0.02 and noisy.std().item() == pytest.approx(0.5, rel=0.05)
    dropped = drop(x)
    per_channel = dropped.flatten(2)
    assert torch.all(per_channel.amin(2) == per_channel.amax(2))  # whole channels
    assert set(per_channel[:, :, 0].unique().tolist()) == {0.0, 2.0}  # kept ones scaled


def test_layer_normalization_counts_and_normalizes_channels() -> None:
    built = assert_matches_keras([_conv(4, strides=2), "LayerNormalization", *TAIL])
    assert built.rows[1].params == 8
    module = LayerNormalization().build((13, 13, 4))
    x = torch.randn(2, 4, 13, 13) * 3 + 1
    y = module(x)
    assert torch.allclose(y.mean(1), torch.zeros(2, 13, 13), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 5. DepthwiseConv2D, SeparableConv2D; dilation_rate and groups on Conv2D

CONV_CASES = {
    "dilation-groups": [_conv(6, strides=2), _conv(4, dilation_rate=2, padding="same", groups=2),
                        {"Conv2D": {"filters": 6, "kernel_size": [3, 2], "dilation_rate": [1, 3],
                                    "groups": 2}}, *TAIL],
    "depthwise": [_conv(3, strides=2),
                  {"DepthwiseConv2D": {"kernel_size": 3, "depth_multiplier": 2,
                                       "activation": "relu"}},
                  {"DepthwiseConv2D": {"kernel_size": 2, "strides": 2, "padding": "same",
                                       "use_bias": False}},
                  {"DepthwiseConv2D": {"kernel_size": 3, "dilation_rate": 2, "padding": "same"}},
                  *TAIL],
    "separable": [_conv(3, strides=2),
                  {"SeparableConv2D": {"filters": 5, "kernel_size": 3, "depth_multiplier": 2,
                                       "activation": "relu"}},
                  {"SeparableConv2D": {"filters": 4, "kernel_size": 4, "strides": 2,
                                       "padding": "same", "use_bias": False}},
                  {"SeparableConv2D": {"filters": 4, "kernel_size": 3, "dilation_rate": 2,
                                       "padding": "same"}}, *TAIL],
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_layers_match_keras(case: str) -> None:
    assert_matches_keras(CONV_CASES[case])


def test_keras_param_counts_of_depthwise_and_separable() -> None:
    built = assert_matches_keras([_conv(3, strides=2),
                                  {"DepthwiseConv2D": {"kernel_size": 3, "depth_multiplier": 2}},
                                  {"SeparableConv2D": {"filters": 5, "kernel_size": 3,
                                                       "depth_multiplier": 2}}, *TAIL])
    assert built.rows[1].params == 3 * 3 * 3 * 2 + 6  # depthwise kernel + bias
    assert built.rows[1].output_shape == (11, 11, 6)
    assert built.rows[2].params == 3 * 3 * 6 * 2 + 12 * 5 + 5  # depthwise + pointwise + bias
    assert built.rows[2].output_shape == (9, 9, 5)


@pytest.mark.parametrize("args,field", [
    ({"filters": 4, "kernel_size": 3, "strides": 2, "dilation_rate": 2}, "dilation_rate"),
    ({"filters": 4, "kernel_size": 3, "groups": 3}, "groups"),
    ({"filters": 4, "kernel_size": 15, "dilation_rate": 2}, "kernel_size"),
])
def test_conv_argument_errors_are_one_line(args: dict[str, Any], field: str) -> None:
    study = parse_study({"name": "k", "models": {"m": {"layers": [{"Conv2D": args}, *TAIL]}}})
    with pytest.raises(SpecError) as e:
        build_model(study, "m", device="meta")
    assert "\n" not in str(e.value)
    assert f"layer 1 (Conv2D), field '{field}': Expected" in str(e.value)


def test_depthwise_regularizers_reach_the_loss() -> None:
    study = parse_study({"name": "k", "models": {"m": {"layers": [
        {"SeparableConv2D": {"filters": 2, "kernel_size": 3,
                             "depthwise_regularizer": {"l2": 0.1},
                             "pointwise_regularizer": {"l1": 0.2}}},
        {"DepthwiseConv2D": {"kernel_size": 3, "bias_regularizer": {"l2": 0.3}}}, *TAIL]}}})
    built = build_model(study, "m", seed=0)
    sep, dw = built.module[0].core, built.module[1].core
    expected = (0.1 * sep.depthwise.weight.square().sum() + 0.2 * sep.pointwise.weight.abs().sum()
                + 0.3 * dw.bias.square().sum())
    assert built.regularization_loss().item() == pytest.approx(expected.item())


# ---------------------------------------------------------------------------------------------
# 6. Keras's string shorthand for regularizers


@pytest.mark.parametrize("name", ["l2", "l1", "L2"])
def test_regularizer_shorthand_is_keras_default_factor(name: str) -> None:
    study = parse_study({"name": "k", "models": {"m": {"layers": [
        {"Conv2D": {"filters": 3, "kernel_size": 3, "kernel_regularizer": name}},
        "Flatten", {"Dense": {"units": 10, "activation": "softmax", "bias_regularizer": name}},
    ]}}})
    built = build_model(study, "m", seed=0)
    _perturb(built.module, seed=1)
    conv, dense = built.module[0].core, built.module[2].core
    kconv = keras.layers.Conv2D(3, 3, kernel_regularizer=name)
    kdense = keras.layers.Dense(10, bias_regularizer=name)
    inp = keras.Input(shape=(28, 28, 1))
    kmodel = keras.Model(inp, kdense(keras.layers.Flatten()(kconv(inp))))
    kconv.kernel.assign(conv.weight.detach().numpy().transpose(2, 3, 1, 0))
    kdense.bias.assign(dense.bias.detach().numpy())
    kmodel(np.zeros((1, 28, 28, 1), dtype=np.float32))
    keras_reg = sum(float(to_numpy(loss)) for loss in kmodel.losses)
    assert built.regularization_loss().item() == pytest.approx(keras_reg, rel=1e-5)
    from archlab import dump_study

    assert f"{name.lower()}: 0.01" in dump_study(study)


# kernel_constraint: max_norm (Keras's MaxNorm(max_value=2, axis=0), after each step)


@pytest.mark.parametrize("layer", ["conv", "dense"])
def test_max_norm_matches_keras(layer: str) -> None:
    from archlab.layers import apply_max_norm

    study = parse_study({"name": "k", "models": {"m": {"layers": [
        {"Conv2D": {"filters": 4, "kernel_size": [3, 2], "kernel_constraint": "max_norm"}},
        "Flatten", {"Dense": {"units": 10, "activation": "softmax",
                              "kernel_constraint": "max_norm"}}]}}})
    built = build_model(study, "m", seed=0)
    assert len(built.constrained) == 2
    p, dims = built.constrained[0 if layer == "conv" else 1]
    with torch.no_grad():
        p.mul_(torch.linspace(0.5, 400.0, p.numel()).reshape(p.shape))  # norms above 2
    w = p.detach().numpy().copy()
    keras_layout = w.transpose(2, 3, 1, 0) if layer == "conv" else w.T
    expected = to_numpy(keras.constraints.get("max_norm")(keras_layout))
    apply_max_norm(p, dims)
    got = p.detach().numpy()
    got = got.transpose(2, 3, 1, 0) if layer == "conv" else got.T
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert np.abs(keras_layout - expected).max() > 0.1  # the constraint did something


def test_fit_applies_max_norm_after_each_step() -> None:
    from archlab.data import Tensors
    from archlab.data.tensors import Preprocess
    from archlab.train import fit

    study = parse_study({"name": "k", "train": {"optimizer": {"name": "sgd",
                                                              "learning_rate": 5.0},
                                                "epochs": 1, "batch_size": 8},
                         "models": {"m": {"layers": ["Flatten", {"Dense": {
                             "units": 10, "activation": "softmax",
                             "kernel_constraint": "max_norm"}}]}}})
    built = build_model(study, "m", seed=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(32, 28, 28, 1, generator=gen) * 5  # float images, NHWC as datasets hold them
    y = torch.randint(0, 10, (32,), generator=gen)
    data = Tensors(x, y, x, y, x, y, tuple("0123456789"), False, Preprocess("float"))
    fit(built, data, study.train_for("m"), 0)
    norms = built.module[1].core.weight.detach().norm(dim=1)
    assert norms.max().item() <= 2.0 + 1e-5
    assert norms.max().item() == pytest.approx(2.0, rel=1e-4)  # the step pushed past 2


def test_labels_of_issue_10_layers_in_the_compact_form_and_table() -> None:
    from archlab.describe import compact_architecture, describe_architecture

    layers = [{"SeparableConv2D": {"filters": 8, "kernel_size": 3, "padding": "same"}},
              {"DepthwiseConv2D": {"kernel_size": 3, "depth_multiplier": 2, "padding": "same"}},
              "LeakyReLU", {"SpatialDropout2D": {"rate": 0.2}}, "LayerNormalization",
              {"GaussianNoise": {"stddev": 0.1}}, "UpSampling2D", "GlobalAvgPool2D", *OUT]
    study = parse_study({"name": "k", "models": {"m": {"layers": layers}}})
    compact = compact_architecture(build_model(study, "m", device="meta"))
    assert compact == ("28×28×1 →sepconv3 8 same→ 28×28×8 →dwconv3 ×2 same, leakyrelu0.3, "
                       "sdrop0.2, ln, noise0.1→ 28×28×16 →up2→ 56×56×16 →gap→ 16 →dense 10→ 10")
    table = describe_architecture(study.models["m"].layers)
    assert (table.conv_layers, table.channels, table.dropout) == (1, "8", "0.2")


def test_the_residual_net_on_colour_input_matches_keras() -> None:
    """zoo:residual's ResNet on 32x32 RGB (CIFAR-10's shape): counts, shapes, probabilities."""
    built = assert_matches_keras([], study=on_cifar10("zoo:residual", "resnet"), model="resnet")
    assert built.input_shape == (32, 32, 3)
