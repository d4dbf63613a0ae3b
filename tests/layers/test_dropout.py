"""archlab's Dropout (store format 4): its multiplier, its stream, and the run ids it changes."""

from __future__ import annotations

import pytest
import torch

import archlab
from archlab.layers._modules import Dropout, dropout_multiplier
from archlab.plan import plan_runs


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5, 0.8])
def test_the_multiplier_keeps_each_element_with_probability_one_minus_rate(rate: float) -> None:
    x = torch.empty(400_000)
    m = dropout_multiplier(x, rate, torch.Generator().manual_seed(1))
    kept = m != 0
    assert m.unique().tolist() == [0.0, pytest.approx(1.0 / (1.0 - rate))]
    # 400,000 draws: the kept share's standard error is at most 0.0008
    assert kept.double().mean().item() == pytest.approx(1.0 - rate, abs=0.004)
    assert m.double().mean().item() == pytest.approx(1.0, abs=0.02)  # expectation kept


def test_the_multiplier_fills_memory_order_and_follows_its_generator() -> None:
    g = torch.Generator().manual_seed(3)
    nchw = torch.empty(4, 3, 5, 5)
    nhwc = torch.empty(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    a = dropout_multiplier(nchw, 0.5, g.manual_seed(3))
    b = dropout_multiplier(nhwc, 0.5, g.manual_seed(3))
    assert a.is_contiguous() and b.is_contiguous(memory_format=torch.channels_last)
    # the k-th value of the stream goes to the k-th element in memory order
    assert torch.equal(a.flatten(), b.permute(0, 2, 3, 1).flatten())
    assert not torch.equal(a, dropout_multiplier(nchw, 0.5, g))  # the stream moves on
    c = dropout_multiplier(torch.empty(7), 0.5, g.manual_seed(3))  # an odd count
    assert torch.equal(c, a.flatten()[:7])


def test_dropout_draws_from_the_global_generator_and_is_the_identity_in_evaluation() -> None:
    layer = Dropout(0.4)
    x = torch.rand(8, 16) + 1.0
    torch.manual_seed(5)
    y = layer(x)
    torch.manual_seed(5)
    assert torch.equal(y, x * dropout_multiplier(x, 0.4))
    assert (y == 0).any() and isinstance(layer, torch.nn.Dropout)
    assert layer.eval()(x) is x
    x.requires_grad_(True)
    torch.manual_seed(5)
    layer.train()(x).sum().backward()
    torch.manual_seed(5)
    assert torch.equal(x.grad, dropout_multiplier(x, 0.4))  # type: ignore[arg-type]


def test_the_builder_makes_archlabs_dropout() -> None:
    study = archlab.parse_study({"name": "d", "data": {"dataset": "mnist-sample"}, "models": {
        "m": {"layers": ["Flatten", {"Dropout": {"rate": 0.2}},
                         {"Dense": {"units": 10, "activation": "softmax"}}]}}})
    assert type(archlab.build_model(study, "m").module[1]) is Dropout


IDS = {"name": "ids", "seed": 7, "data": {"dataset": "mnist-sample", "validation": "test"},
       "models": {
           "mlp": {"layers": ["Flatten", {"Dense": {"units": 16, "activation": "relu"}},
                              {"Dense": {"units": 10, "activation": "softmax"}}]},
           "cnn": {"layers": [{"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
                              {"MaxPooling2D": {"pool_size": 2}}, {"Dropout": {"rate": 0.25}},
                              "Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]},
           "branchy": {"layers": [
               {"Concatenate": {"branches": [
                   [{"Conv2D": {"filters": 2, "kernel_size": 3, "padding": "same"}}],
                   [{"Dropout": {"rate": 0.1}}]]}},
               "Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]},
           "spatial": {"layers": [{"Conv2D": {"filters": 2, "kernel_size": 3}},
                                  {"SpatialDropout2D": {"rate": 0.1}}, "Flatten",
                                  {"Dense": {"units": 10, "activation": "softmax"}}]}}}
#: the run ids archlab gave these models before store format 4 (computed at that commit)
FORMAT_3_IDS = {"mlp": "6cbb08122633939f", "cnn": "cc5b05a0717eb551",
                "branchy": "2aa4ab6906837033", "spatial": "8498de08800504b2"}


def test_only_runs_with_dropout_get_new_ids() -> None:
    ids = {p.model: p.run_id for p in plan_runs(archlab.parse_study(IDS))}
    # numbers unchanged, ids unchanged: no Dropout, or SpatialDropout2D (its draw is as before)
    assert ids["mlp"] == FORMAT_3_IDS["mlp"] and ids["spatial"] == FORMAT_3_IDS["spatial"]
    # Dropout anywhere (a branch too): new masks, new ids, so stores never mix the two
    assert ids["cnn"] != FORMAT_3_IDS["cnn"] and ids["branchy"] != FORMAT_3_IDS["branchy"]
