"""archlab against Keras itself (Keras 3 on its torch backend); skipped when Keras is absent.

For each model: Keras builds the same layers from the same spec; parameter counts and per-layer
output shapes must agree; archlab's weights are copied into the Keras model and both must give
the same probabilities on random input (inference mode), the same regularization loss and the
same cross-entropy. Keras 3's initializers and optimizers are compared with archlab's too.

Known Keras 3 / Keras 2 differences that archlab resolves towards Keras 2 (the notebooks'
version), hence not compared here: Nadam's momentum schedule (Keras 3: 0.96^t, Keras 2 and
torch: 0.96^(0.004·t)); RMSprop/Adagrad ε inside the square root (Keras 3) or outside
(Keras 2, torch); `decay` (Keras 2 only); BatchNormalization's moving variance (Keras 3:
biased batch variance, Keras 2: unbiased); and Keras 3's torch backend pads asymmetric 'same'
average pooling by replication, where TensorFlow (and archlab) average the real cells only.
"""

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

from archlab import TrainSpec, build_model, load_study, parse_study  # noqa: E402
from archlab.layers import (  # noqa: E402
    Activation,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    MaxPooling2D,
)
from archlab.optim import make_optimizer  # noqa: E402
from tests.keras_twin import (  # noqa: E402
    copy_weights_into,
    keras_twin,
    same_probabilities,
    to_numpy,
)

# keras.ops.convert_to_numpy on the torch backend warns about numpy 2's copy keyword
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _reg(r: Any) -> Any:
    return None if r is None else keras.regularizers.L1L2(l1=r.l1, l2=r.l2)


def _keras_layer(spec: Any) -> Any:
    L = keras.layers
    if isinstance(spec, Conv2D):
        return L.Conv2D(spec.filters, spec.kernel_size, strides=spec.strides,
                        padding=spec.padding, activation=spec.activation,
                        use_bias=spec.use_bias, kernel_regularizer=_reg(spec.kernel_regularizer),
                        bias_regularizer=_reg(spec.bias_regularizer))
    if isinstance(spec, Dense):
        return L.Dense(spec.units, activation=spec.activation, use_bias=spec.use_bias,
                       kernel_regularizer=_reg(spec.kernel_regularizer),
                       bias_regularizer=_reg(spec.bias_regularizer))
    if isinstance(spec, MaxPooling2D | AveragePooling2D):
        cls = L.MaxPooling2D if isinstance(spec, MaxPooling2D) else L.AveragePooling2D
        return cls(spec.pool_size, strides=spec.strides, padding=spec.padding)
    if isinstance(spec, BatchNormalization):
        return L.BatchNormalization(axis=spec.axis, momentum=spec.momentum,
                                    epsilon=spec.epsilon, center=spec.center, scale=spec.scale)
    simple = {Dropout: lambda s: L.Dropout(s.rate), Flatten: lambda s: L.Flatten(),
              Activation: lambda s: L.Activation(s.activation or "linear"),
              GlobalAveragePooling2D: lambda s: L.GlobalAveragePooling2D(),
              GlobalMaxPooling2D: lambda s: L.GlobalMaxPooling2D()}
    return simple[type(spec)](spec)


def _copy_layer(spec: Any, module: Any, k: Any) -> None:
    """Copy one layer's torch weights into its Keras twin (NCHW/OI → Keras layouts)."""
    if isinstance(spec, Conv2D | Dense):
        w = module.core.weight.detach().numpy()
        k.kernel.assign(w.transpose(2, 3, 1, 0) if isinstance(spec, Conv2D) else w.T)
        if spec.use_bias:
            k.bias.assign(module.core.bias.detach().numpy())
    elif isinstance(spec, BatchNormalization):
        if spec.scale:
            k.gamma.assign(module.weight.detach().numpy())
        if spec.center:
            k.beta.assign(module.bias.detach().numpy())
        k.moving_mean.assign(module.running_mean.numpy())
        k.moving_variance.assign(module.running_var.numpy())


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Make zero biases, unit gammas and fresh moving statistics non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))


CUSTOM = {
    "branches": [
        {"Concatenate": {"branches": [
            [{"Conv2D": {"filters": 4, "kernel_size": 1, "padding": "same", "activation":
                         "relu"}}],
            [{"Conv2D": {"filters": 4, "kernel_size": 3, "padding": "same", "activation":
                         "relu"}}],
            [{"Conv2D": {"filters": 4, "kernel_size": 5, "padding": "same", "activation":
                         "relu"}}],
            [{"Conv2D": {"filters": 4, "kernel_size": 1, "padding": "same", "activation":
                         "relu"}},
             {"MaxPooling2D": {"pool_size": 3, "strides": 1, "padding": "same"}}],
            []]}},
        {"Conv2D": {"filters": 8, "kernel_size": 7, "activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 2}},
        "Flatten", {"Dense": {"units": 16, "activation": "relu"}}, "BatchNormalization",
        {"Dense": {"units": 10, "activation": "softmax"}}],
    "odd-padding": [
        {"Conv2D": {"filters": 6, "kernel_size": 2, "strides": 2, "padding": "same",
                    "activation": "elu", "kernel_regularizer": {"l1": 0.001, "l2": 0.01}}},
        {"Conv2D": {"filters": 5, "kernel_size": [4, 3], "strides": [3, 2], "padding": "same",
                    "activation": "selu", "bias_regularizer": {"l2": 0.1}}},
        {"MaxPooling2D": {"pool_size": 2, "strides": 1, "padding": "same"}},
        {"AveragePooling2D": {"pool_size": 3, "strides": 1, "padding": "same"}},
        {"BatchNormalization": {"center": False}},
        {"AveragePooling2D": {"pool_size": 2}},
        {"Conv2D": {"filters": 7, "kernel_size": 2, "padding": "same", "activation": "gelu",
                    "use_bias": False}},
        {"BatchNormalization": {"scale": False, "momentum": 0.9, "epsilon": 0.01}},
        {"Activation": {"activation": "swish"}},
        "GlobalAveragePooling2D",
        {"Dense": {"units": 12, "activation": "softsign"}},
        {"Dense": {"units": 12, "activation": "relu6"}},
        {"Dense": {"units": 12, "activation": "softplus"}},
        {"Dense": {"units": 12, "activation": "tanh"}},
        {"Dense": {"units": 12, "activation": "sigmoid"}},
        {"Dense": {"units": 10}}, {"Activation": {"activation": "softmax"}}],
    "global-max": [
        {"Conv2D": {"filters": 8, "kernel_size": 3, "activation": "relu"}},
        "GlobalMaxPooling2D", {"Dense": {"units": 10, "activation": "softmax"}}],
}

MODELS = [
    ("zoo:keras-mnist-cnn", "cnn"),
    ("zoo:kernels-padding", "m1"),
    ("zoo:kernels-padding", "m4"),
    # the 38M-parameter inception model: ~20 s on 2 cores, so only with -m slow
    pytest.param("zoo:kernels-padding", "m10", marks=pytest.mark.slow),
    ("zoo:depth-l2", "conv2"),
    ("zoo:depth-l2", "conv3-wide-l2"),
    ("zoo:depth-l2", "conv5"),
    ("zoo:conv-stacks", "conv7"),
    ("zoo:mlp-hparams", "mlp128-drop"),
    ("custom", "branches"),
    ("custom", "odd-padding"),
    ("custom", "global-max"),
]


def _load(source: str, model: str) -> Any:
    if source == "custom":
        return parse_study({"name": "custom", "models": {model: {"layers": CUSTOM[model]}}})
    return load_study(source)


def _id(case: Any) -> str:
    source, model = case.values if hasattr(case, "values") else case
    return f"{source}:{model}"


#: The seed CNNs on colour 32x32 input, as on CIFAR-10: the first layer's kernels span 3
#: channels and every later shape follows from 32x32 (the residual net: test_keras_new_layers).
COLOUR = [("zoo:keras-mnist-cnn", "cnn"), ("zoo:kernels-padding", "m1"),
          ("zoo:kernels-padding", "m4"), ("zoo:depth-l2", "conv3-wide-l2"),
          ("zoo:conv-stacks", "conv7"), ("zoo:mlp-hparams", "mlp128-drop"),
          ("custom", "branches"), ("custom", "odd-padding")]


@pytest.mark.parametrize("source,model", MODELS, ids=[_id(c) for c in MODELS])
def test_model_matches_keras(source: str, model: str) -> None:
    _check_against_keras(_load(source, model), model)


@pytest.mark.parametrize("source,model", COLOUR, ids=[_id(c) for c in COLOUR])
def test_colour_model_matches_keras(source: str, model: str) -> None:
    """Summaries and parameter counts equal Keras's for (32, 32, 3) inputs."""
    built = _check_against_keras(on_cifar10(source, model), model)
    assert built.input_shape == (32, 32, 3)
    first = next(m for m in built.module.modules()
                 if isinstance(m, torch.nn.Conv2d | torch.nn.Linear))
    assert (first.in_channels if isinstance(first, torch.nn.Conv2d) else first.in_features) \
        in (3, 32 * 32 * 3)


def on_cifar10(source: str, model: str) -> Any:
    """The study of ``source`` with its data set to cifar10 (32x32 RGB, 10 classes)."""
    config = _load(source, model).to_config()
    return parse_study({**config, "data": {**config["data"], "dataset": "cifar10"}})


def _check_against_keras(study: Any, model: str) -> Any:
    built = build_model(study, model, seed=0)
    layers = list(study.models[model].layers)
    _perturb(built.module, seed=1)

    # parameter counts: total, trainable, per layer; output shapes per layer
    kmodel, rows = keras_twin(built, layers, _keras_layer)

    # same weights -> same probabilities (inference mode)
    copy_weights_into(layers, built.module, {id(spec): k for spec, k, _ in rows}, _copy_layer)
    rng = np.random.default_rng(0)
    expected, logits = same_probabilities(built, kmodel, rng)

    # Keras's categorical cross-entropy of its probabilities = archlab's loss from logits
    y = rng.integers(0, 10, size=6)
    onehot = np.eye(10, dtype=np.float32)[y]
    keras_ce = float(np.mean(to_numpy(keras.losses.categorical_crossentropy(onehot, expected))))
    ce = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).item()
    assert ce == pytest.approx(keras_ce, rel=1e-4)

    # regularization losses, as Keras adds them to the loss
    reg = built.regularization_loss()
    keras_reg = sum(float(to_numpy(loss)) for loss in kmodel.losses)
    assert (0.0 if reg is None else reg.item()) == pytest.approx(keras_reg, rel=1e-5)
    return built


def test_batch_normalization_training_step_matches_keras() -> None:
    spec = BatchNormalization()
    bn = spec.build((5,))
    k = keras.layers.BatchNormalization()
    k.build((None, 5))
    rng = np.random.default_rng(0)
    m0 = rng.standard_normal(5).astype(np.float32)
    bn.running_mean.copy_(torch.from_numpy(m0))
    k.moving_mean.assign(m0)
    x = (rng.standard_normal((64, 5)) * 3 + 1).astype(np.float32)
    bn.train()
    y = bn(torch.from_numpy(x))
    ky = to_numpy(k(x, training=True))
    np.testing.assert_allclose(y.detach().numpy(), ky, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.running_mean.numpy(), to_numpy(k.moving_mean), rtol=1e-5,
                               atol=1e-6)


INIT_NAMES = ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform",
              "lecun_normal"]


@pytest.mark.parametrize("name", INIT_NAMES)
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_initializers_match_keras_statistics(name: str, kind: str) -> None:
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    if kind == "dense":
        k = keras.layers.Dense(400, kernel_initializer=name)
        k.build((None, 600))
        ours = Dense(units=400, kernel_initializer=name).build((600,)).core.weight
    else:
        k = keras.layers.Conv2D(96, 5, kernel_initializer=name)
        k.build((None, 12, 12, 40))
        ours = Conv2D(filters=96, kernel_size=5, kernel_initializer=name).build(
            (12, 12, 40)).core.weight
    theirs = to_numpy(k.kernel).astype(np.float64)
    ours_np = ours.detach().numpy().astype(np.float64)
    assert ours_np.std() == pytest.approx(theirs.std(), rel=0.02)
    # the tails (truncation point / uniform limit); not the max: Keras's torch backend draws 4
    # normals per value and keeps an out-of-range one when all 4 are (p ≈ 4e-6 per value)
    for q in (0.99, 0.9999):
        assert np.quantile(np.abs(ours_np), q) == pytest.approx(
            np.quantile(np.abs(theirs), q), rel=0.02)
    assert np.all(to_numpy(k.bias) == 0)


# Keras keeps hyperparameters (learning rate, ...) in float32 variables: ~5e-8 relative.
KERAS3_SAME_RULES = [
    ("sgd", {}, {}, 1e-6),
    ("sgd", {"learning_rate": 0.05, "momentum": 0.9}, {}, 1e-6),
    ("sgd", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}, {}, 1e-6),
    ("adam", {}, {}, 1e-6),
    ("adam", {"amsgrad": True, "learning_rate": 0.01}, {}, 1e-6),
    ("adadelta", {}, {"learning_rate": 1.0}, 1e-6),  # Keras 3's default lr is 0.001
    ("adadelta", {"rho": 0.9, "learning_rate": 0.3}, {}, 1e-6),
    # ε inside √ in Keras 3: equal up to ε-sized terms; Keras 3's default lr is 0.001
    ("rmsprop", {}, {}, 1e-5),
    ("adagrad", {}, {"learning_rate": 0.01}, 1e-5),
]


# (ε placement differs between Keras 3 and Keras 2 for RMSprop/Adagrad: large gradients only)
OPTIMIZER_CASES = [(*rule, scale) for rule in KERAS3_SAME_RULES for scale in (1.0, 1e-6)
                   if scale == 1.0 or rule[0] not in ("rmsprop", "adagrad")]


@pytest.mark.parametrize("name,args,keras_args,rtol,scale", OPTIMIZER_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(OPTIMIZER_CASES)])
def test_optimizer_steps_match_keras(name: str, args: dict[str, Any],
                                     keras_args: dict[str, Any], rtol: float,
                                     scale: float) -> None:
    grads = [g * scale for g in (1.0, -0.5, 2.0, 0.3, -1.2, 0.0, 0.7, 5.0)]
    spec = TrainSpec.model_validate({"optimizer": {"name": name, **args}}).optimizer
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt, _ = make_optimizer(spec, [p])
    cls = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam,
           "adadelta": keras.optimizers.Adadelta, "rmsprop": keras.optimizers.RMSprop,
           "adagrad": keras.optimizers.Adagrad}[name]
    kopt = cls(**{**args, **keras_args})
    var = keras.Variable(np.array([1.0]), dtype="float64")
    ours, theirs = [], []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        ours.append(p.item() - 1.0)
        kopt.apply_gradients([(keras.ops.convert_to_tensor(np.array([g]), "float64"), var)])
        theirs.append(float(to_numpy(var)[0]) - 1.0)
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=1e-18)
