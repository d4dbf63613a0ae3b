"""activity_regularizer: the training and evaluation losses are Keras 3's on the same weights
and batch (Keras 3 divides a layer's activity penalty by the batch size)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import archlab
from archlab.data import Tensors, load_dataset, prepare_tensors
from archlab.plan import plan_runs
from archlab.train import evaluate, fit
from tests.keras_twin import keras

# keras.ops.convert_to_numpy on the torch backend warns about numpy 2's copy keyword
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.usefixtures("one_torch_thread")]

N = 48  # one training batch


def _layers(hidden: Any, conv: Any, output: Any) -> list[Any]:
    """A conv, a depthwise conv, a hidden and the output Dense; None leaves the argument out."""

    def reg(value: Any) -> dict[str, Any]:
        return {} if value is None else {"activity_regularizer": value}

    return [{"Conv2D": {"filters": 3, "kernel_size": 3, "activation": "relu", **reg(conv)}},
            {"MaxPooling2D": {"pool_size": 2}},
            {"DepthwiseConv2D": {"kernel_size": 3, "activation": "tanh", **reg(conv)}},
            "Flatten",
            {"Dense": {"units": 8, "activation": "relu", "kernel_regularizer": {"l2": 0.01},
                       **reg(hidden)}},
            {"Dense": {"units": 10, "activation": "softmax", **reg(output)}}]


def _study(layers: list[Any]) -> archlab.Study:
    return archlab.parse_study({
        "name": "t", "seed": 3, "data": {"dataset": "mnist-sample", "validation": {"split": 0.1}},
        "train": {"optimizer": {"name": "sgd", "learning_rate": 1e-12}, "batch_size": N,
                  "epochs": 1}, "models": {"m": {"layers": layers}}})


def _keras_regularizer(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else keras.regularizers.L1L2(**value)


def _keras_model(built: archlab.BuiltModel, hidden: Any, conv: Any, output: Any) -> Any:
    """The same model in Keras 3, with archlab's initial weights."""
    L = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(3, 3, activation="relu", activity_regularizer=_keras_regularizer(conv)),
        L.MaxPooling2D(2),
        L.DepthwiseConv2D(3, activation="tanh", activity_regularizer=_keras_regularizer(conv)),
        L.Flatten(),
        L.Dense(8, activation="relu", kernel_regularizer=keras.regularizers.L2(0.01),
                activity_regularizer=_keras_regularizer(hidden)),
        L.Dense(10, activation="softmax", activity_regularizer=_keras_regularizer(output)),
    ])
    torch_layers = [m for m in built.module if hasattr(m, "core")]
    keras_layers = [k for k in model.layers if k.weights]
    for t, k in zip(torch_layers, keras_layers, strict=True):
        w = t.core.weight.detach()
        # Keras's kernels: Dense (in, out); Conv2D (kh, kw, in, out); depthwise (kh, kw, in, 1).
        kernel = w.T if w.dim() == 2 else w.permute(2, 3, 1, 0) if k.name.startswith(
            "conv") else w.permute(2, 3, 0, 1)
        k.set_weights([kernel.numpy(), t.core.bias.detach().numpy()])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-12),
                  loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def data() -> Tensors:
    study = _study(_layers(None, None, None))
    full = prepare_tensors(load_dataset("mnist-sample"), study.data, study.seed)
    return Tensors(full.x_train[:N], full.y_train[:N], full.x_val[:100], full.y_val[:100],
                   full.x_test[:100], full.y_test[:100], full.class_names,
                   full.validation_is_test)


@pytest.mark.parametrize("hidden,conv,output", [
    ({"l1": 0.01}, None, None),
    (None, "l2", None),
    ({"l2": 0.003}, {"l1": 0.002}, {"l1": 0.05, "l2": 0.02}),
    ("l1", {"l1": 0.001, "l2": 0.001}, "l2"),
], ids=["dense-l1", "conv-l2-string", "all-l1-l2", "strings-and-l1-l2"])
def test_training_and_evaluation_losses_are_keras(data: Tensors, hidden: Any, conv: Any,
                                                  output: Any) -> None:
    study = _study(_layers(hidden, conv, output))
    built = archlab.build_model(study, "m", seed=1)
    model = _keras_model(built, hidden, conv, output)
    # Keras gets the float images the trainer makes of each batch (NHWC, x / 255)
    x, y = data.pre(data.x_train).permute(0, 2, 3, 1).numpy(), data.y_train.numpy()
    want_train = float(np.asarray(model.train_on_batch(x, y)))  # the loss before its step
    want_eval = float(model.evaluate(data.pre(data.x_val).permute(0, 2, 3, 1).numpy(),
                                     data.y_val.numpy(), batch_size=32, verbose=0))
    # archlab: evaluation first (before fit's step), then one epoch of one batch.
    got_eval, _ = evaluate(built, data.x_val, data.y_val, data.pre)
    got_train = fit(built, data, study.train, 0).history[0]["loss"]
    assert got_train == pytest.approx(want_train, abs=1e-5, rel=1e-5)
    assert got_eval == pytest.approx(want_eval, abs=1e-5, rel=1e-5)
    plain = _study(_layers(None, None, None))
    ce_only = archlab.build_model(plain, "m", seed=1)
    assert evaluate(ce_only, data.x_val, data.y_val, data.pre)[0] < got_eval  # penalty counts


def test_no_activity_regularizer_changes_no_run_id_and_round_trips() -> None:
    plain = _study(_layers(None, None, None))
    assert all("activity_regularizer" not in str(layer.to_config())
               for layer in plain.models["m"].layers)
    with_it = _study(_layers({"l1": 0.01}, None, None))
    assert with_it.models["m"].layers[4].to_config() == {"Dense": {
        "units": 8, "activation": "relu", "kernel_regularizer": {"l2": 0.01},
        "activity_regularizer": {"l1": 0.01}}}
    assert archlab.parse_study(with_it.to_config()) == with_it
    assert plan_runs(plain)[0].run_id != plan_runs(with_it)[0].run_id


def test_a_bad_activity_regularizer_is_a_one_line_error() -> None:
    with pytest.raises(archlab.SpecError, match=r"layer 5 \(Dense\).*activity_regularizer.*"
                                                r"Expected a regularizer such as \{l2: 0.01\}"):
        _study(_layers(0.01, None, None))


def test_export_leaves_the_penalty_out(data: Tensors) -> None:
    built = archlab.build_model(_study(_layers("l1", "l2", "l2")), "m", seed=1)
    built.module.eval()
    x = data.pre(data.x_val[:5])
    traced = torch.jit.trace(built.module, (x[:2],), check_trace=False)
    torch.testing.assert_close(traced(x), built.module(x))


def test_a_model_copied_after_a_forward_pass_drops_the_penalty(data: Tensors) -> None:
    import copy

    built = archlab.build_model(_study(_layers("l1", None, None)), "m", seed=1)
    x = data.pre(data.x_val[:4])
    built.module(x).sum().backward()  # the penalty is part of this graph
    assert built.activity_loss() is not None
    twin = copy.deepcopy(built.module)  # as restore-best and the layout probe copy
    assert all(m.per_sample is None for m in twin.modules()
               if isinstance(m, type(built.activity[0])))
    torch.testing.assert_close(twin(x), built.module(x))
