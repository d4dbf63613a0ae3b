"""archlab.data.tensors: preprocessing, the stratified split, and its one-line guard."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import archlab
from archlab.data import RawDataset, load_dataset, prepare_tensors, stratified_split
from archlab.errors import DataError


def raw(per_class: list[int]) -> RawDataset:
    y = np.repeat(np.arange(len(per_class)), per_class)
    x = np.zeros((len(y), 28, 28, 1), dtype=np.uint8)
    return RawDataset(archlab.dataset_info("mnist-sample"), x, y, x[:3], y[:3], "test")


def spec(config: dict[str, Any], fraction: float) -> archlab.DataSpec:
    config["data"]["validation"] = {"split": fraction}
    return archlab.parse_study(config).data


def test_split_is_stratified_seeded_and_disjoint() -> None:
    y = load_dataset("mnist-sample").y_train
    tr, va = stratified_split(y, 0.1, seed=5)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)
    expected = [round(0.1 * n) for n in np.bincount(y)]
    assert np.bincount(y[va], minlength=10).tolist() == expected
    assert np.array_equal(stratified_split(y, 0.1, seed=5)[1], va)
    assert not np.array_equal(stratified_split(y, 0.1, seed=6)[1], va)


def test_prepare_tensors_shapes_and_scale(tiny_config: dict[str, Any]) -> None:
    t = prepare_tensors(load_dataset("mnist-sample"), spec(tiny_config, 0.1), split_seed=1)
    # uint8 in memory, (N, H, W, C); float32 (N, C, H, W) per batch, scaled to [0, 1]
    assert t.x_train.shape == (4500, 28, 28, 1) and t.x_val.shape == (500, 28, 28, 1)
    assert t.x_test.shape == (1000, 28, 28, 1) and t.x_train.dtype == torch.uint8
    batch = t.pre(t.x_train[:64])
    assert batch.shape == (64, 1, 28, 28) and batch.dtype == torch.float32
    assert torch.equal(batch, t.x_train[:64].permute(0, 3, 1, 2).float() / 255)
    assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
    assert not t.validation_is_test


@pytest.mark.parametrize("fraction,empty", [(0.01, "validation"), (0.99, "training")])
def test_empty_side_is_a_one_line_data_error(tiny_config: dict[str, Any], fraction: float,
                                             empty: str) -> None:
    # 10 images per class: 1 % rounds to none held out, 99 % to all of them.
    with pytest.raises(DataError) as info:
        prepare_tensors(raw([10] * 10), spec(tiny_config, fraction), split_seed=0)
    msg = str(info.value)
    assert f"validation split {fraction} leaves the {empty} set empty" in msg
    assert "100 training images in 10 classes" in msg and "data.validation.split" in msg
    assert "\n" not in msg
