"""Keras layers: each a pydantic spec (Keras names, arguments and defaults) that infers its output
shape and builds its torch module. Every layer registers itself with ``@register_layer``; the
spec's layer union is derived from that registry."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from archlab.layers import conv, core, merge, normalization, pooling  # noqa: F401 - register
from archlab.layers.activations import ELU, LeakyReLU, PReLU, ReLU, Softmax
from archlab.layers.base import (
    ACTIVATIONS,
    LAYER_TYPES,
    LayerSpec,
    Regularizer,
    Shape,
    ShapeProblem,
    apply_max_norm,
    init_tensor,
    keras_layer_name,
    layer_names,
    register_layer,
)
from archlab.layers.conv import Conv2D, Convolution2D
from archlab.layers.core import Activation, Dense, Dropout, Flatten
from archlab.layers.depthwise import DepthwiseConv2D, SeparableConv2D
from archlab.layers.merge import (
    MERGE_LAYERS,
    Add,
    Average,
    Concatenate,
    Maximum,
    Merge,
    Multiply,
    Subtract,
)
from archlab.layers.normalization import BatchNormalization, LayerNormalization
from archlab.layers.pooling import (
    AveragePooling2D,
    AvgPool2D,
    GlobalAveragePooling2D,
    GlobalAvgPool2D,
    GlobalMaxPool2D,
    GlobalMaxPooling2D,
    MaxPool2D,
    MaxPooling2D,
)
from archlab.layers.regularization import GaussianNoise, SpatialDropout2D
from archlab.layers.reshaping import Cropping2D, Reshape, UpSampling2D, ZeroPadding2D

__all__ = [
    "ACTIVATIONS",
    "ELU",
    "LAYER_TYPES",
    "MERGE_LAYERS",
    "Activation",
    "ActivityRegularization",
    "Add",
    "Average",
    "AveragePooling2D",
    "AvgPool2D",
    "BatchNormalization",
    "Branches",
    "Concatenate",
    "Conv2D",
    "Convolution2D",
    "Cropping2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "Flatten",
    "GaussianNoise",
    "GlobalAveragePooling2D",
    "GlobalAvgPool2D",
    "GlobalMaxPool2D",
    "GlobalMaxPooling2D",
    "Layer",
    "LayerItem",
    "LayerList",
    "LayerNormalization",
    "LayerSpec",
    "LeakyReLU",
    "MaxPool2D",
    "MaxPooling2D",
    "Maximum",
    "Merge",
    "Multiply",
    "PReLU",
    "ReLU",
    "Regularizer",
    "Reshape",
    "SeparableConv2D",
    "Shape",
    "ShapeProblem",
    "Softmax",
    "SpatialDropout2D",
    "Subtract",
    "UpSampling2D",
    "ZeroPadding2D",
    "apply_max_norm",
    "init_tensor",
    "keras_layer_name",
    "layer_item",
    "layer_names",
    "register_layer",
]

# The union pydantic validates against, derived from the registry (discriminated by `type`).
Layer = Annotated[
    Union[tuple(LAYER_TYPES.values())],  # type: ignore[valid-type]  # noqa: UP007
    Field(discriminator="type"),
]


def layer_item(value: Any) -> Any:
    """Turn the YAML form (``Flatten`` or ``{Conv2D: {...}}``) into ``{type: ..., **args}``.

    Errors carry only data (type and ctx): spec/messages.py words every message and hint, so
    there is one wording and one "did you mean".
    """
    if isinstance(value, LayerSpec):
        return value
    if isinstance(value, str):
        name, args = value, {}
    elif isinstance(value, dict) and "type" in value:
        return value
    elif isinstance(value, dict) and len(value) == 1:
        name, args = next(iter(value.items()))
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise PydanticCustomError("layer_args", "arguments of {name} are not a mapping",
                                      {"name": name})
    else:
        raise PydanticCustomError("layer_item", "not one layer")
    if name not in LAYER_TYPES:
        raise PydanticCustomError("unknown_layer", "Unknown layer '{name}'", {"name": name})
    return {"type": name, **args}


LayerName = Literal[tuple(LAYER_TYPES)]  # type: ignore[valid-type]
# The JSON Schema shows what users write: `Flatten` or `{Conv2D: {...}}`.
LayerItem = Annotated[Layer, BeforeValidator(
    layer_item, json_schema_input_type=Union[  # noqa: UP007
        LayerName, Annotated[dict[LayerName, Union[dict[str, Any], None]],  # noqa: UP007
                             Field(min_length=1, max_length=1)]])]
LayerList = list[LayerItem]
for _merge in MERGE_LAYERS:
    _merge.model_rebuild(_types_namespace={"LayerItem": LayerItem})

#: The torch modules exported here, imported (with torch) on first use: reading a study's
#: layers imports no torch.
_TORCH_MODULES = ("ActivityRegularization", "Branches", "Pad")


def __getattr__(name: str) -> Any:
    if name in _TORCH_MODULES:
        from archlab.layers import _modules

        return getattr(_modules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
