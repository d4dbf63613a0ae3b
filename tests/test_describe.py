"""One description of a model feeds the Keras summary, the compact one-line form and the
results table's architecture columns: they agree, and average pooling is called so in all."""

from __future__ import annotations

from typing import Any

import pytest

from archlab import build_model, load_study, parse_study, zoo_names
from archlab.describe import (
    compact_architecture,
    describe_architecture,
    describe_layer,
    describe_model,
    summary_text,
)
from archlab.layers import AveragePooling2D, Conv2D, GlobalAveragePooling2D, GlobalMaxPooling2D

POOLS: list[Any] = [
    {"Conv2D": {"filters": 8, "kernel_size": 3, "padding": "same"}},
    {"AveragePooling2D": {"pool_size": 2}},
    {"Conv2D": {"filters": 16, "kernel_size": [3, 5], "kernel_regularizer": {"l2": 0.01}}},
    {"MaxPooling2D": {"pool_size": 3, "strides": 1, "padding": "same"}},
    {"AveragePooling2D": {"pool_size": 2, "strides": 1}},
    "GlobalAveragePooling2D",
    {"Dropout": {"rate": 0.25}},
    {"Dense": {"units": 10, "activation": "softmax"}},
]


def pools_study() -> Any:
    return parse_study({"name": "pools", "data": {"dataset": "mnist-sample"},
                        "models": {"m": {"layers": POOLS}}})


def test_average_pooling_is_labelled_in_the_table_columns() -> None:
    study = pools_study()
    arch = describe_architecture(study.models["m"].layers)  # typed layers, as RunConfig holds
    assert arch.pooling == "avg 2/2,3/1,avg 2/1,global avg"
    assert arch.kernels == "3,3x5" and arch.channels == "8-16"
    assert arch.padding == "same/valid" and arch.dropout == "0.25" and arch.l2 == "l2 0.01"
    assert arch.dense == "10" and arch.conv_layers == 2 and arch.batch_norm == 0


def test_global_pools_say_which() -> None:
    assert describe_layer(GlobalAveragePooling2D()).pooling == "global avg"
    assert describe_layer(GlobalMaxPooling2D()).pooling == "global max"
    assert describe_layer(AveragePooling2D(pool_size=3)).label == "avgpool3"


def test_the_three_views_read_one_description() -> None:
    built = build_model(pools_study(), "m", device="meta")
    description = describe_model(built)
    assert description.architecture == describe_architecture(pools_study().models["m"].layers)
    assert compact_architecture(built) == description.compact()
    assert summary_text(built) == description.summary()
    # The compact form uses the same per-layer labels the table's facts carry.
    compact = description.compact()
    for facts in description.layers:
        assert facts.label in compact
    assert "avgpool2" in compact and "avgpool2/1" in compact and "gap" in compact
    assert "average_pooling2d_1 (AveragePooling2D)" in description.summary()


def test_yaml_and_typed_layers_describe_alike() -> None:
    study = pools_study()
    typed = describe_architecture(study.models["m"].layers)
    assert describe_architecture([layer.to_config() for layer in study.models["m"].layers]) \
        == typed
    assert describe_architecture(POOLS) == typed


@pytest.mark.parametrize("name", zoo_names())
def test_every_zoo_model_agrees_with_itself(name: str) -> None:
    study = load_study(f"zoo:{name}")
    for model, spec in study.models.items():
        built = build_model(study, model, device="meta")
        description = describe_model(built)
        assert description.architecture == describe_architecture(spec.layers), model
        assert description.total_params == built.total_params
        convs = [la for la in spec.layers if isinstance(la, Conv2D)]
        assert description.architecture.conv_layers >= len(convs)


def test_branches_are_described_inside_the_concatenate() -> None:
    study = load_study("zoo:kernels-padding")
    description = describe_model(build_model(study, "m10", device="meta"))
    concat = next(f for f in description.layers if f.layer == "Concatenate")
    assert concat.label.startswith("concat[conv1 32 same | conv3 32 same")
    assert len(concat.branches) == 4
    assert description.architecture.conv_layers == 8  # four in the branches, four after


def test_summary_ends_with_macs_and_memory() -> None:
    built = build_model(load_study("zoo:keras-mnist-cnn"), "cnn", device="meta")
    lines = summary_text(built).splitlines()
    assert lines[-2] == f"MACs per sample: {built.macs_per_sample:,}"
    assert lines[-1].startswith("Training memory (estimate): 103.1 MiB = ")
    assert "adadelta state" in lines[-1] and "(batch 128)" in lines[-1]


@pytest.mark.parametrize(("layer", "keras"), [
    ("Conv2D", "conv2d"), ("ReLU", "re_lu"), ("LeakyReLU", "leaky_re_lu"), ("PReLU", "p_re_lu"),
    ("ELU", "elu"), ("MaxPooling2D", "max_pooling2d"), ("BatchNormalization",
                                                        "batch_normalization"),
    ("GlobalAveragePooling2D", "global_average_pooling2d"), ("ZeroPadding2D", "zero_padding2d"),
    ("DepthwiseConv2D", "depthwise_conv2d"), ("UpSampling2D", "up_sampling2d"),
])
def test_layer_names_are_keras_snake_case(layer: str, keras: str) -> None:
    from archlab.layers import keras_layer_name

    assert keras_layer_name(layer) == keras  # what keras.src.utils.naming.to_snake_case gives


def test_summary_names_relu_layers_as_keras_does() -> None:
    study = parse_study({"name": "acts", "data": {"dataset": "mnist-sample"}, "models": {"m": {
        "layers": ["Flatten", {"Dense": {"units": 8}}, "ReLU", {"Dense": {"units": 8}},
                   {"LeakyReLU": {}}, "ReLU", {"Dense": {"units": 10, "activation": "softmax"}}]}}})
    names = [row.name for row in build_model(study, "m", device="meta").rows]
    assert names == ["flatten_1", "dense_1", "re_lu_1", "dense_2", "leaky_re_lu_1", "re_lu_2",
                     "dense_3"]
    assert "re_lu_2 (ReLU)" in summary_text(build_model(study, "m", device="meta"))
