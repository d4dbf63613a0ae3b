"""An archlab model's Keras twin, for the tests that hold archlab to Keras (Keras 3 on its
torch backend): the same layers built in Keras with their parameter counts and output shapes
checked, archlab's weights copied across, and the same probabilities on random input."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

# Keras 3 on its torch backend, else the module importing this one is skipped
os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover - another backend was chosen first
    pytest.skip("Keras is configured for another backend", allow_module_level=True)

from archlab.layers import Concatenate, Merge  # noqa: E402

#: (spec, Keras layer, Keras output), in the order of archlab's summary rows
Rows = list[tuple[Any, Any, Any]]


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def keras_walk(layers: list[Any], x: Any, rows: Rows, layer_for: Callable[[Any], Any]) -> Any:
    """Apply Keras layers for ``layers`` (``layer_for(spec)``; a merge by its type, after its
    branches); record (spec, keras layer, output) in summary order."""
    for spec in layers:
        if isinstance(spec, Merge):
            outs = [keras_walk(list(branch), x, rows, layer_for) for branch in spec.branches]
            layer = (keras.layers.Concatenate(axis=-1) if isinstance(spec, Concatenate)
                     else getattr(keras.layers, spec.type)())
            x = layer(outs)
        else:
            layer = layer_for(spec)
            x = layer(x)
        rows.append((spec, layer, x))
    return x


def copy_weights_into(layers: list[Any], modules: Any, keras_layers: dict[int, Any],
                      copy_layer: Callable[[Any, Any, Any], None]) -> None:
    """Copy archlab's torch weights into the Keras layers (keyed by ``id(spec)``), a merge's
    branches included: ``copy_layer(spec, module, keras_layer)`` for each layer."""
    for spec, module in zip(layers, modules, strict=True):
        if isinstance(spec, Merge):
            for branch, seq in zip(spec.branches, module.branches, strict=True):
                copy_weights_into(list(branch), seq, keras_layers, copy_layer)
        else:
            copy_layer(spec, module, keras_layers[id(spec)])


def keras_twin(built: Any, specs: list[Any], layer_for: Callable[[Any], Any]) -> tuple[Any, Rows]:
    """The Keras model of ``specs`` (seeded 0), checked against ``built``: parameter counts
    (total, trainable, per layer) and output shapes per layer. Returns it and its rows."""
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape=built.input_shape)
    rows: Rows = []
    kmodel = keras.Model(inp, keras_walk(specs, inp, rows, layer_for))
    assert kmodel.count_params() == built.total_params
    trainable = sum(int(np.prod(w.shape)) for w in kmodel.trainable_weights)
    assert trainable == built.trainable_params
    assert len(rows) == len(built.rows)
    for (spec, klayer, kout), row in zip(rows, built.rows, strict=True):
        assert row.layer == spec.type
        assert tuple(kout.shape[1:]) == row.output_shape, row.name
        assert klayer.count_params() == row.params, row.name
    return kmodel, rows


def same_probabilities(built: Any, kmodel: Any, rng: np.random.Generator
                       ) -> tuple[np.ndarray, torch.Tensor]:
    """Both models on 6 random inputs from ``rng`` (inference mode) give the same
    probabilities: Keras's probabilities and archlab's logits."""
    x = rng.random((6, *built.input_shape), dtype=np.float32)
    expected = to_numpy(kmodel(x, training=False))
    built.module.eval()
    with torch.no_grad():
        logits = built.module(torch.from_numpy(x).permute(0, 3, 1, 2))
    probs = torch.softmax(logits, 1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-5)
    return expected, logits
