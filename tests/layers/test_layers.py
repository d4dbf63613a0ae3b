"""Each Keras layer semantic that archlab promises, checked against a reference.

References are hand-computed numbers, closed forms (Keras's initializer and activation
formulas, TensorFlow's 'same' padding rule) or Keras's documented behaviour; nothing here
compares archlab with itself.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from scipy.special import erf

from archlab import (
    SpecError,
    build_model,
    dump_study,
    load_study,
    parse_study,
    summary_text,
    validate_study,
    zoo_names,
)
from archlab.layers import (
    Activation,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Flatten,
    MaxPooling2D,
)

TRUNC = 0.87962566103423978  # stddev of a unit normal truncated to [-2, 2] (Keras's constant)


def _study(layers: list[Any], **model: Any) -> Any:
    return parse_study({"name": "t", "models": {"m": {"layers": layers, **model}}})


def _build(layers: list[Any], seed: int = 0) -> Any:
    return build_model(_study(layers), "m", seed=seed)


def _nchw(a: np.ndarray) -> torch.Tensor:
    """A (H, W) array as a (1, 1, H, W) float64 tensor."""
    return torch.tensor(a, dtype=torch.float64)[None, None]


def _run(spec: Any, shape: tuple[int, ...], x: torch.Tensor) -> torch.Tensor:
    module = spec.build(shape).double()
    with torch.no_grad():
        return module(x)


# ---------------------------------------------------------------------------------------------
# Initializers: Keras's VarianceScaling family with Keras's fans.

# name -> (kind, variance-scaling "n" from the fans): uniform limit sqrt(3/n), normal std sqrt(1/n)
INITS = {
    "glorot_uniform": ("uniform", lambda fi, fo: (fi + fo) / 2),
    "glorot_normal": ("normal", lambda fi, fo: (fi + fo) / 2),
    "he_uniform": ("uniform", lambda fi, fo: fi / 2),
    "he_normal": ("normal", lambda fi, fo: fi / 2),
    "lecun_uniform": ("uniform", lambda fi, fo: fi),
    "lecun_normal": ("normal", lambda fi, fo: fi),
}

# (layer, input shape, fan_in, fan_out): fans as Keras computes them
LAYERS = [
    (Dense(units=300), (400,), 400, 300),
    (Conv2D(filters=128, kernel_size=5), (28, 28, 32), 5 * 5 * 32, 5 * 5 * 128),
    (Conv2D(filters=160, kernel_size=(3, 5)), (28, 28, 48), 3 * 5 * 48, 3 * 5 * 160),
]


@pytest.mark.parametrize("name", list(INITS))
@pytest.mark.parametrize("layer,shape,fan_in,fan_out", LAYERS,
                         ids=["dense", "conv5x5", "conv3x5"])
def test_kernel_initializer_statistics(name: str, layer: Any, shape: Any, fan_in: int,
                                       fan_out: int) -> None:
    torch.manual_seed(0)
    spec = layer.model_copy(update={"kernel_initializer": name})
    w = spec.build(shape).core.weight.detach().double()
    assert w.numel() > 100_000  # big enough for tight statistics
    kind, n = INITS[name]
    n = n(fan_in, fan_out)
    if kind == "uniform":
        limit = math.sqrt(3.0 / n)  # glorot: sqrt(6/(fan_in+fan_out)); he: sqrt(6/fan_in)
        assert w.abs().max() <= limit
        assert w.abs().max() > 0.999 * limit
        assert w.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.01)
    else:
        # Keras: truncated normal, stddev sqrt(1/n)/0.8796..., cut at 2 stddev before scaling,
        # so the empirical std is sqrt(1/n) and no value exceeds 2·sqrt(1/n)/0.8796...
        std = math.sqrt(1.0 / n)
        bound = 2 * std / TRUNC
        assert w.std().item() == pytest.approx(std, rel=0.01)
        assert w.abs().max() <= bound * (1 + 1e-6)
        assert w.abs().max() > 0.98 * bound  # truncated at the bound, not far inside it
    assert w.mean().item() == pytest.approx(0.0, abs=0.01 * w.std().item())


def test_glorot_uniform_is_the_default_and_he_normal_numbers() -> None:
    torch.manual_seed(0)
    w = Dense(units=500).build((800,)).core.weight
    assert w.abs().max().item() == pytest.approx(math.sqrt(6 / 1300), rel=1e-3)
    torch.manual_seed(0)
    w = Conv2D(filters=64, kernel_size=5, kernel_initializer="he_normal").build(
        (12, 12, 32)).core.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / 800), rel=0.01)  # 0.05
    assert w.abs().max().item() <= 2 * math.sqrt(2 / 800) / TRUNC + 1e-7  # 0.1137


@pytest.mark.parametrize("layer,shape", [(Dense(units=10), (30,)),
                                         (Conv2D(filters=8, kernel_size=3), (9, 9, 2))])
def test_bias_defaults_to_zeros(layer: Any, shape: Any) -> None:
    core = layer.build(shape).core
    assert torch.equal(core.bias, torch.zeros_like(core.bias))
    assert layer.model_copy(update={"use_bias": False}).build(shape).core.bias is None
    ones = layer.model_copy(update={"bias_initializer": "ones"}).build(shape).core.bias
    assert torch.equal(ones, torch.ones_like(ones))


def test_bias_initializer_uses_the_bias_fans() -> None:
    # Keras computes fans from the variable's own shape: a bias (units,) has fan_in = fan_out =
    # units, so glorot_uniform's limit is sqrt(6/(2·units)) whatever the kernel's fans.
    torch.manual_seed(0)
    b = Dense(units=20_000, bias_initializer="glorot_uniform").build((3,)).core.bias
    limit = math.sqrt(6 / 40_000)
    assert b.abs().max().item() <= limit
    assert b.abs().max().item() > 0.99 * limit


@pytest.mark.parametrize("name,value", [("zeros", 0.0), ("ones", 1.0)])
def test_constant_kernel_initializers(name: str, value: float) -> None:
    w = Dense(units=3, kernel_initializer=name).build((4,)).core.weight
    assert torch.equal(w, torch.full((3, 4), value))


# ---------------------------------------------------------------------------------------------
# 'same' padding as TensorFlow: the odd extra pixel at the bottom/right.

X4 = np.arange(16, dtype=np.float64).reshape(4, 4)  # [[0,1,2,3],[4,5,6,7],...,[12,...,15]]

CONV_CASES = [
    # kernel 2, stride 1: TF pads 0 top/left, 1 bottom/right
    (2, 1, [[10, 14, 18, 10], [26, 30, 34, 18], [42, 46, 50, 26], [25, 27, 29, 15]]),
    # kernel 2, stride 2: output ceil(4/2) = 2, no padding needed
    (2, 2, [[10, 18], [42, 50]]),
    # kernel 3, stride 2: output 2, total padding 1, all of it at the bottom/right
    (3, 2, [[45, 39], [66, 50]]),
    # kernel 3, stride 1: symmetric padding 1
    (3, 1, [[10, 18, 24, 18], [27, 45, 54, 39], [51, 81, 90, 63], [42, 66, 72, 50]]),
]


@pytest.mark.parametrize("k,s,expected", CONV_CASES, ids=["k2s1", "k2s2", "k3s2", "k3s1"])
def test_conv2d_same_padding_hand_computed(k: int, s: int, expected: list[list[int]]) -> None:
    spec = Conv2D(filters=1, kernel_size=k, strides=s, padding="same", kernel_initializer="ones")
    out = _run(spec, (4, 4, 1), _nchw(X4))
    assert spec.output_shape((4, 4, 1)) == (len(expected), len(expected), 1)
    np.testing.assert_array_equal(out[0, 0].numpy(), np.array(expected, dtype=np.float64))


XNEG = X4 - 20.0  # all negative: a zero-padded max pool would show zeros

MAX_CASES = [
    (2, 1, [[-15, -14, -13, -13], [-11, -10, -9, -9], [-7, -6, -5, -5], [-7, -6, -5, -5]]),
    (3, 2, [[-10, -9], [-6, -5]]),
    (3, 1, [[-15, -14, -13, -13], [-11, -10, -9, -9], [-7, -6, -5, -5], [-7, -6, -5, -5]]),
]


@pytest.mark.parametrize("k,s,expected", MAX_CASES, ids=["k2s1", "k3s2", "k3s1"])
def test_max_pooling_same_padding_hand_computed(k: int, s: int,
                                                expected: list[list[int]]) -> None:
    spec = MaxPooling2D(pool_size=k, strides=s, padding="same")
    out = _run(spec, (4, 4, 1), _nchw(XNEG))
    np.testing.assert_array_equal(out[0, 0].numpy(), np.array(expected, dtype=np.float64))


AVG_CASES = [
    # TF divides by the number of real (unpadded) cells in each window
    (2, 1, [[2.5, 3.5, 4.5, 5], [6.5, 7.5, 8.5, 9], [10.5, 11.5, 12.5, 13],
            [12.5, 13.5, 14.5, 15]]),
    (3, 2, [[45 / 9, 39 / 6], [66 / 6, 50 / 4]]),
    (3, 1, [[10 / 4, 18 / 6, 24 / 6, 18 / 4], [27 / 6, 45 / 9, 54 / 9, 39 / 6],
            [51 / 6, 81 / 9, 90 / 9, 63 / 6], [42 / 4, 66 / 6, 72 / 6, 50 / 4]]),
    (2, 2, [[2.5, 4.5], [10.5, 12.5]]),
]


@pytest.mark.parametrize("k,s,expected", AVG_CASES, ids=["k2s1", "k3s2", "k3s1", "k2s2"])
def test_average_pooling_same_padding_hand_computed(k: int, s: int,
                                                    expected: list[list[float]]) -> None:
    spec = AveragePooling2D(pool_size=k, strides=s, padding="same")
    out = _run(spec, (4, 4, 1), _nchw(X4))
    np.testing.assert_allclose(out[0, 0].numpy(), np.array(expected), rtol=0, atol=1e-12)


def _tf_same(size: int, k: int, s: int) -> tuple[int, int, int]:
    """TensorFlow's documented 'same' rule: out = ceil(size/s); pad_before = total // 2."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def _reference_window(x: np.ndarray, k: tuple[int, int], s: tuple[int, int], padding: str,
                      op: str) -> np.ndarray:
    """Numpy reference for one (H, W) channel: conv with a ones kernel, max, or TF average."""
    h, w = x.shape
    if padding == "same":
        oh, top, bottom = _tf_same(h, k[0], s[0])
        ow, left, right = _tf_same(w, k[1], s[1])
    else:
        oh, ow, top, bottom, left, right = ((h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1,
                                            0, 0, 0, 0)
    fill = -np.inf if op == "max" else np.nan
    xp = np.pad(x, ((top, bottom), (left, right)), constant_values=fill)
    out = np.empty((oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]]
            real = win[~np.isnan(win)]
            out[i, j] = {"sum": real.sum(), "max": real.max(), "avg": real.mean()}[op]
    return out


WINDOW_GRID = [(size, k, s, pad) for size in (5, 6, 7) for k in ((2, 2), (3, 2), (1, 3))
               for s in ((1, 1), (2, 2), (3, 2)) for pad in ("same", "valid")]


@pytest.mark.parametrize("size,k,s,padding", WINDOW_GRID, ids=[
    f"{n}x{n}-k{k[0]}x{k[1]}-s{s[0]}x{s[1]}-{p}" for n, k, s, p in WINDOW_GRID])
def test_window_layers_match_tensorflow_rule(size: int, k: tuple[int, int], s: tuple[int, int],
                                             padding: str) -> None:
    rng = np.random.default_rng(size)
    x = rng.standard_normal((size, size))
    for spec, op in ((Conv2D(filters=1, kernel_size=k, strides=s, padding=padding,
                             kernel_initializer="ones"), "sum"),
                     (MaxPooling2D(pool_size=k, strides=s, padding=padding), "max"),
                     (AveragePooling2D(pool_size=k, strides=s, padding=padding), "avg")):
        expected = _reference_window(x, k, s, padding, op)
        out = _run(spec, (size, size, 1), _nchw(x))[0, 0].numpy()
        assert spec.output_shape((size, size, 1)) == (*expected.shape, 1)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [MaxPooling2D, AveragePooling2D])
@pytest.mark.parametrize("pool,padding,expected", [
    (2, "valid", (14, 14)), (3, "valid", (9, 9)), (3, "same", (10, 10)), (5, "valid", (5, 5)),
    ((2, 3), "valid", (14, 9)), ((2, 3), "same", (14, 10)),
])
def test_pool_strides_default_to_pool_size(cls: Any, pool: Any, padding: str,
                                           expected: tuple[int, int]) -> None:
    spec = cls(pool_size=pool, padding=padding)
    assert spec.output_shape((28, 28, 3)) == (*expected, 3)
    out = spec.build((28, 28, 3))(torch.zeros(2, 3, 28, 28))
    assert tuple(out.shape) == (2, 3, *expected)


def test_pool_size_defaults_to_2() -> None:
    assert MaxPooling2D().output_shape((7, 7, 1)) == (3, 3, 1)  # valid floors
    assert MaxPooling2D(padding="same").output_shape((7, 7, 1)) == (4, 4, 1)


# ---------------------------------------------------------------------------------------------
# BatchNormalization


@pytest.mark.parametrize("shape", [(6,), (5, 4, 3)], ids=["dense", "conv"])
def test_batch_normalization_keras_momentum_and_epsilon(shape: tuple[int, ...]) -> None:
    bn = BatchNormalization().build(shape)
    assert bn.momentum == pytest.approx(0.01)  # Keras 0.99 = torch 1 - 0.99
    assert bn.eps == 1e-3
    c = shape[-1]
    gen = torch.Generator().manual_seed(0)
    m0 = torch.randn(c, generator=gen)
    bn.running_mean.copy_(m0)
    x = torch.randn(32, *((c,) if len(shape) == 1 else (c, shape[0], shape[1])),
                    generator=gen) * 3 + 2
    dims = [0] if len(shape) == 1 else [0, 2, 3]
    batch_mean = x.mean(dim=dims)
    bn.train()
    bn(x)
    # Keras: moving = 0.99·moving + 0.01·batch, i.e. it moves by 0.01 of (batch - moving)
    torch.testing.assert_close(bn.running_mean - m0, 0.01 * (batch_mean - m0), rtol=1e-4,
                               atol=1e-6)
    # Keras 2 (the notebooks' version) feeds the moving variance the unbiased batch variance
    # (variance · n/(n - 1 - eps)); torch uses n/(n - 1): the same to ~1e-5 relative.
    n = x.numel() // c
    var = x.var(dim=dims, unbiased=False) * n / (n - 1 - 1e-3)
    torch.testing.assert_close(bn.running_var, 0.99 + 0.01 * var, rtol=1e-4, atol=1e-6)


def test_batch_normalization_inference_formula() -> None:
    bn = BatchNormalization().build((3,)).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
        bn.running_mean.copy_(torch.tensor([0.5, 1.0, -2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    bn.eval()
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    expected = [1 * (1 - 0.5) / math.sqrt(4.001), 2 * (2 - 1) / math.sqrt(0.251) - 1,
                0.5 * (3 + 2) / math.sqrt(1.001) + 3]
    np.testing.assert_allclose(bn(x)[0].detach().numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("args,total,trainable", [
    ({}, 4 * 16, 2 * 16),
    ({"center": False}, 3 * 16, 16),
    ({"scale": False}, 3 * 16, 16),
    ({"center": False, "scale": False}, 2 * 16, 0),
])
def test_batch_normalization_params_count_moving_stats_as_non_trainable(
        args: dict[str, bool], total: int, trainable: int) -> None:
    layers = ["Flatten", {"Dense": {"units": 16}}, {"BatchNormalization": args},
              {"Dense": {"units": 10, "activation": "softmax"}}]
    built = build_model(_study(layers), "m", device="meta")
    dense = 784 * 16 + 16 + 16 * 10 + 10
    assert built.rows[2].params == total
    assert built.total_params == dense + total
    assert built.trainable_params == dense + trainable
    assert built.non_trainable_params == total - trainable
    assert f"Non-trainable params: {total - trainable:,}" in summary_text(built)


def test_batch_normalization_without_center_scale_is_plain_normalization() -> None:
    bn = BatchNormalization(center=False, scale=False).build((4,))
    assert sum(p.numel() for p in bn.parameters()) == 0
    bn = BatchNormalization(center=False).build((4,))
    assert [n for n, _ in bn.named_parameters()] == ["weight"]
    bn.train()
    y = bn(torch.randn(64, 4))
    torch.testing.assert_close(y.mean(0), torch.zeros(4), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Regularizers: added to the loss as Keras does, l2·Σw² and l1·Σ|w|.


@pytest.mark.parametrize("layer", ["Dense", "Conv2D"])
@pytest.mark.parametrize("which", ["kernel", "bias"])
@pytest.mark.parametrize("reg", [{"l2": 0.01}, {"l1": 0.001}, {"l1": 0.002, "l2": 0.03}])
def test_regularizers_add_keras_penalty(layer: str, which: str, reg: dict[str, float]) -> None:
    first = ({"Conv2D": {"filters": 4, "kernel_size": 3, f"{which}_regularizer": reg,
                         "bias_initializer": "ones"}} if layer == "Conv2D" else
             {"Dense": {"units": 7, f"{which}_regularizer": reg, "bias_initializer": "ones"}})
    layers = ([first, "Flatten"] if layer == "Conv2D" else ["Flatten", first])
    built = _build([*layers, {"Dense": {"units": 10, "activation": "softmax"}}])
    block = built.module[0] if layer == "Conv2D" else built.module[1]
    p = getattr(block.core, "weight" if which == "kernel" else "bias")
    expected = reg.get("l2", 0.0) * p.double().square().sum() + \
        reg.get("l1", 0.0) * p.double().abs().sum()
    loss = built.regularization_loss()
    assert loss is not None
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()  # d/dw (l2·Σw² + l1·Σ|w|) = 2·l2·w + l1·sign(w)
    grad = 2 * reg.get("l2", 0.0) * p.detach() + reg.get("l1", 0.0) * p.detach().sign()
    torch.testing.assert_close(p.grad, grad)


def test_no_regularizer_no_loss_and_output_layer_keeps_its_regularizer() -> None:
    assert _build(["Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]) \
        .regularization_loss() is None
    built = build_model(load_study("zoo:depth-l2"), "conv2-l2", seed=0)
    assert [tuple(p.shape) for p, _ in built.regularized] == [(10, 16)]
    w = built.module[-1].core.weight
    assert built.regularization_loss().item() == pytest.approx(0.01 * w.square().sum().item(),
                                                               rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Flatten in Keras's HWC order


def test_flatten_uses_keras_hwc_order() -> None:
    h, w, c = 2, 3, 4
    x = torch.empty(1, c, h, w)  # NCHW inside archlab
    for ci in range(c):
        for hi in range(h):
            for wi in range(w):
                x[0, ci, hi, wi] = 100 * hi + 10 * wi + ci
    expected = [100 * hi + 10 * wi + ci for hi in range(h) for wi in range(w) for ci in range(c)]
    out = Flatten().build((h, w, c))(x)
    assert out[0].tolist() == expected
    assert Flatten().output_shape((h, w, c)) == (24,)


def test_dense_after_flatten_lines_up_with_keras_kernel() -> None:
    # A Keras kernel (in=H·W·C in HWC order, out) copied as its transpose gives Keras's output.
    built = _build([{"Conv2D": {"filters": 3, "kernel_size": 27}}, "Flatten",
                    {"Dense": {"units": 10, "activation": "softmax"}}])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 28, 28, 1)).astype(np.float32)  # NHWC, as Keras sees it
    conv, dense = built.module[0].core, built.module[2].core
    with torch.no_grad():
        feat = conv(torch.from_numpy(x).permute(0, 3, 1, 2))  # (2, 3, 2, 2)
        keras_flat = feat.permute(0, 2, 3, 1).reshape(2, -1).numpy()  # Keras: HWC order
        expected = keras_flat @ dense.weight.numpy().T + dense.bias.numpy()
        out = built.module(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The output softmax is folded into the loss


def test_output_softmax_is_folded_into_the_loss() -> None:
    built = _build(["Flatten", {"Dense": {"units": 32, "activation": "softmax"}},
                    {"Dense": {"units": 10, "activation": "softmax"}}])
    assert isinstance(built.module[1].act, torch.nn.Softmax)  # a hidden softmax stays
    assert built.module[2].act is None  # the output emits logits
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        logits = built.module(x)
    assert not torch.allclose(logits.sum(1), torch.ones(5))
    # Keras categorical_crossentropy on the softmax probabilities (its clipping at 1e-7 is
    # inactive in this stable case).
    p = torch.softmax(logits.double(), 1).numpy()
    y = np.array([0, 3, 9, 2, 2])
    onehot = np.eye(10)[y]
    p = np.clip(p / p.sum(1, keepdims=True), 1e-7, 1 - 1e-7)
    keras_ce = -(onehot * np.log(p)).sum(1).mean()
    ce = F.cross_entropy(logits, torch.from_numpy(y)).item()
    assert ce == pytest.approx(keras_ce, rel=1e-6)


def test_output_softmax_activation_layer_is_folded() -> None:
    built = _build(["Flatten", {"Dense": {"units": 10}}, {"Activation": {"activation":
                                                                         "softmax"}}])
    assert isinstance(built.module[2], torch.nn.Identity)
    assert built.output_shape == (10,)


def test_output_must_be_softmax() -> None:
    with pytest.raises(SpecError, match=r"model 'm', layer 2 \(Dense\), field 'activation'"):
        _build(["Flatten", {"Dense": {"units": 10, "activation": "relu"}}])


# ---------------------------------------------------------------------------------------------
# Activations: each name is Keras's function


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

ACTIVATION_REFS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1)),
    "gelu": lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))),  # Keras default approximate=False
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "softmax": lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True),
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "relu6": lambda x: np.clip(x, 0, 6),
}


@pytest.mark.parametrize("name", list(ACTIVATION_REFS))
def test_activation_functions(name: str) -> None:
    x = np.linspace(-8, 8, 41).reshape(1, 41)
    expected = ACTIVATION_REFS[name](x)
    out = _run(Activation(activation=name), (41,), torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-7, atol=1e-12)
    # the same function as a Dense activation (identity kernel, zero bias)
    dense = Dense(units=41, activation=name).build((41,)).double()
    with torch.no_grad():
        dense.core.weight.copy_(torch.eye(41, dtype=torch.float64))
        out = dense(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-7, atol=1e-12)


def test_null_activation_is_linear_and_softmax_on_images_is_over_channels() -> None:
    x = torch.randn(2, 3)
    assert torch.equal(Activation(activation=None).build((3,))(x), x)
    img = torch.randn(2, 5, 3, 4)  # NCHW: Keras's last axis (channels) is dim 1 here
    out = Activation(activation="softmax").build((3, 4, 5))(img)
    torch.testing.assert_close(out, torch.softmax(img, dim=1))


# ---------------------------------------------------------------------------------------------
# Shape errors: one SpecError naming model, layer index, layer type, field and input shape

SOFTMAX = {"Dense": {"units": 10, "activation": "softmax"}}

SHAPE_ERRORS = [
    ([{"Conv2D": {"filters": 4, "kernel_size": 29}}, "Flatten", SOFTMAX],
     "layer 1 (Conv2D), field 'kernel_size'", "(28, 28, 1)"),
    ([{"Conv2D": {"filters": 4, "kernel_size": 3}}, {"Conv2D": {"filters": 4, "kernel_size":
                                                                 [2, 27]}}, "Flatten", SOFTMAX],
     "layer 2 (Conv2D), field 'kernel_size'", "(26, 26, 4)"),
    ([{"MaxPooling2D": {}}, {"MaxPooling2D": {}}, {"MaxPooling2D": {}}, {"MaxPooling2D": {}},
      {"MaxPooling2D": {}}, "Flatten", SOFTMAX],
     "layer 5 (MaxPooling2D), field 'pool_size'", "(1, 1, 1)"),
    ([{"AveragePooling2D": {"pool_size": 7, "strides": 7}},
      {"AveragePooling2D": {"pool_size": 5}}, "Flatten", SOFTMAX],
     "layer 2 (AveragePooling2D), field 'pool_size'", "(4, 4, 1)"),
    ([SOFTMAX], "layer 1 (Dense):", "(28, 28, 1)"),
    ([{"Conv2D": {"filters": 2, "kernel_size": 3}}, {"Dense": {"units": 8}}, "Flatten", SOFTMAX],
     "layer 2 (Dense):", "(26, 26, 2)"),
    (["Flatten", {"Conv2D": {"filters": 4, "kernel_size": 3}}, SOFTMAX],
     "layer 2 (Conv2D):", "(784,)"),
    (["Flatten", {"MaxPooling2D": {}}, SOFTMAX],
     "layer 2 (MaxPooling2D):", "(784,)"),
    ([{"Concatenate": {"branches": [[{"Conv2D": {"filters": 2, "kernel_size": 3}}],
                                    [{"Conv2D": {"filters": 2, "kernel_size": 3,
                                                 "padding": "same"}}]]}}, "Flatten", SOFTMAX],
     "layer 1 (Concatenate), field 'branches'", "(28, 28, 1)"),
    ([{"Concatenate": {"branches": [[], [{"MaxPooling2D": {}}]]}}, "Flatten", SOFTMAX],
     "layer 1 (Concatenate), field 'branches'", "(28, 28, 1)"),
    ([{"Conv2D": {"filters": 2, "kernel_size": 3}},
      {"Concatenate": {"branches": [[], ["Flatten", {"Dense": {"units": 3}}]]}}, "Flatten",
      SOFTMAX],
     "layer 2 (Concatenate), field 'branches'", "(26, 26, 2)"),
    ([{"Concatenate": {"branches": [[], [{"Conv2D": {"filters": 2, "kernel_size": 30}}]]}},
      "Flatten", SOFTMAX],
     "layer 1 (Concatenate), branch 2, layer 1 (Conv2D), field 'kernel_size'", "(28, 28, 1)"),
    ([{"Conv2D": {"filters": 2, "kernel_size": 3}}, SOFTMAX],
     "layer 2 (Dense):", "(26, 26, 2)"),
]


@pytest.mark.parametrize("layers,where,shape", SHAPE_ERRORS)
def test_shape_errors_name_model_layer_field_and_input_shape(layers: list[Any], where: str,
                                                             shape: str) -> None:
    study = _study(layers)
    with pytest.raises(SpecError) as info:
        validate_study(study)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("<memory>: model 'm', ")
    assert where in message
    assert message.endswith(f"(input shape {shape})")


# ---------------------------------------------------------------------------------------------
# Parameter counts and MACs, by hand

PARAMS = [
    # Conv2D: kh·kw·cin·filters + filters
    ([{"Conv2D": {"filters": 32, "kernel_size": 3}}], (26, 26, 32), 3 * 3 * 1 * 32 + 32,
     26 * 26 * 32 * 3 * 3 * 1),
    ([{"Conv2D": {"filters": 32, "kernel_size": 3, "use_bias": False}}], (26, 26, 32), 288,
     26 * 26 * 32 * 9),
    ([{"Conv2D": {"filters": 16, "kernel_size": [5, 3], "strides": 2, "padding": "same"}}],
     (14, 14, 16), 5 * 3 * 16 + 16, 14 * 14 * 16 * 5 * 3),
    # Dense after Flatten: in·units + units
    (["Flatten", {"Dense": {"units": 128}}], (128,), 784 * 128 + 128, 784 * 128),
    (["Flatten", {"Dense": {"units": 128, "use_bias": False}}], (128,), 784 * 128, 784 * 128),
]


@pytest.mark.parametrize("layers,out,params,macs", PARAMS)
def test_layer_params_and_macs(layers: list[Any], out: tuple[int, ...], params: int,
                               macs: int) -> None:
    tail = ["Flatten"] if len(out) == 3 else []
    built = build_model(_study([*layers, *tail, SOFTMAX]), "m", device="meta")
    row = built.rows[len(layers) - 1]
    assert row.output_shape == out
    assert row.params == params
    assert row.macs == macs
    flat = math.prod(out)
    assert built.total_params == params + flat * 10 + 10
    assert built.macs_per_sample == macs + flat * 10


def test_concatenate_branches_params_shapes_and_macs() -> None:
    # Notebook 003's inception block (he_normal dropped: counts don't depend on it)
    branches = [[{"Conv2D": {"filters": 32, "kernel_size": 1, "padding": "same"}}],
                [{"Conv2D": {"filters": 32, "kernel_size": 3, "padding": "same"}}],
                [{"Conv2D": {"filters": 32, "kernel_size": 5, "padding": "same"}}],
                [{"Conv2D": {"filters": 32, "kernel_size": 1, "padding": "same"}},
                 {"MaxPooling2D": {"pool_size": 3, "strides": 1, "padding": "same"}}],
                []]
    built = _build([{"Concatenate": {"branches": branches}}, "Flatten", SOFTMAX])
    names = [(r.name, r.output_shape, r.params) for r in built.rows]
    assert names[:6] == [
        ("branch1/conv2d_1", (28, 28, 32), 1 * 32 + 32),
        ("branch2/conv2d_2", (28, 28, 32), 9 * 32 + 32),
        ("branch3/conv2d_3", (28, 28, 32), 25 * 32 + 32),
        ("branch4/conv2d_4", (28, 28, 32), 1 * 32 + 32),
        ("branch4/max_pooling2d_1", (28, 28, 32), 0),
        ("concatenate_1", (28, 28, 129), 0),
    ]
    block = 64 + 320 + 832 + 64
    assert built.total_params == block + 28 * 28 * 129 * 10 + 10
    assert built.macs_per_sample == 28 * 28 * 32 * (1 + 9 + 25 + 1) + 28 * 28 * 129 * 10
    x = torch.randn(2, 1, 28, 28)
    out = built.module[0](x)
    assert tuple(out.shape) == (2, 129, 28, 28)
    torch.testing.assert_close(out[:, 128:], x)  # the identity branch, last on the channel axis


def test_summary_text_lists_keras_rows() -> None:
    built = build_model(load_study("zoo:keras-mnist-cnn"), "cnn", device="meta")
    text = summary_text(built)
    assert "conv2d_1 (Conv2D)" in text and "(None, 26, 26, 32)" in text
    assert "Total params: 1,199,882" in text
    assert "Non-trainable params: 0" in text
    assert built.macs_per_sample == (26 * 26 * 32 * 9 + 24 * 24 * 64 * 9 * 32 + 9216 * 128
                                     + 128 * 10)


def test_meta_and_real_builds_agree() -> None:
    study = load_study("zoo:depth-l2")
    meta = build_model(study, "conv3", device="meta")
    real = build_model(study, "conv3", seed=1)
    assert (meta.trainable_params, meta.non_trainable_params) == \
        (real.trainable_params, real.non_trainable_params)
    assert real.module(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_seed_gives_same_initial_weights() -> None:
    study = load_study("zoo:keras-mnist-cnn")
    a = build_model(study, "cnn", seed=7).module.state_dict()
    b = build_model(study, "cnn", seed=7).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------
# Round trip: to_config() -> parse_study gives the same study


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_study_round_trips(name: str) -> None:
    study = load_study(f"zoo:{name}")
    again = parse_study(study.to_config())
    assert again.model_dump() == study.model_dump()
    via_yaml = parse_study(yaml.safe_load(dump_study(study)))
    assert via_yaml.model_dump() == study.model_dump()


def test_round_trip_keeps_explicit_defaults_and_tuples() -> None:
    layers = [{"Conv2D": {"filters": 4, "kernel_size": [3, 5], "strides": 1,
                          "kernel_regularizer": {"l1": 0.1, "l2": 0.2}}},
              {"MaxPooling2D": {"pool_size": 2, "strides": None}},
              {"Concatenate": {"branches": [[], [{"BatchNormalization": {"center": False}}]]}},
              "Flatten", {"Dropout": {"rate": 0.5}}, SOFTMAX]
    study = _study(layers, train={"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}})
    again = parse_study(study.to_config())
    assert again.model_dump() == study.model_dump()
    assert again.train_for("m").optimizer.learning_rate == 0.1
