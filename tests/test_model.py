"""The model builder's memory estimate: its arithmetic, the optimizers' slots, the check that
refuses a model too large for the machine (one line naming model, layer and memory), and that
building on the meta device stays allocation-free."""

from __future__ import annotations

import math
import re
import resource
from pathlib import Path
from typing import Any

import pytest

from archlab import SpecError, build_model, parse_study, validate_study
from archlab.cli import main
from archlab.model import (
    ACTIVATION_FACTOR,
    BYTES_PER_VALUE,
    available_memory,
    check_memory,
    format_bytes,
)

MLP = ["Flatten", {"Dense": {"units": 32, "activation": "relu"}},
       {"Dense": {"units": 10, "activation": "softmax"}}]


def study_of(layers: list[Any], **train: Any) -> Any:
    return parse_study({"name": "mem", "data": {"dataset": "mnist-sample"}, "train": train,
                        "models": {"m": {"layers": layers}}}, "mem.yaml")


def test_the_estimate_is_params_times_slots_plus_outputs_times_batch() -> None:
    built = build_model(study_of(MLP, batch_size=50, optimizer="adam"), "m", device="meta")
    m = built.memory
    params = 784 * 32 + 32 + 32 * 10 + 10
    assert built.total_params == params
    # Adam: weight + gradient + 2 moments = 4 values per parameter, 4 bytes each.
    assert m.parameter_bytes == params * 4 * BYTES_PER_VALUE
    outputs = 784 + 32 + 10  # Flatten, Dense, Dense
    assert m.activation_bytes == (outputs * ACTIVATION_FACTOR + 784) * BYTES_PER_VALUE * 50
    assert m.total_bytes == m.parameter_bytes + m.activation_bytes
    assert (m.batch_size, m.optimizer) == (50, "adam")
    assert [la.name for la in m.layers] == [r.name for r in built.rows]
    assert m.largest.name == "dense_1" and m.largest.where == "layer 2 (Dense)"


@pytest.mark.parametrize(("optimizer", "slots"), [
    ("sgd", 0), ({"name": "sgd", "momentum": 0.9}, 1), ("adam", 2),
    ({"name": "adam", "amsgrad": True}, 3), ("nadam", 2), ("adadelta", 2), ("adagrad", 1),
    ("rmsprop", 1), ({"name": "rmsprop", "centered": True}, 2),
    ({"name": "rmsprop", "centered": True, "momentum": 0.5}, 3),
], ids=lambda v: str(v))
def test_optimizer_slots(optimizer: Any, slots: int) -> None:
    built = build_model(study_of(MLP, optimizer=optimizer), "m", device="meta")
    assert built.memory.parameter_bytes == built.total_params * (2 + slots) * BYTES_PER_VALUE


@pytest.mark.parametrize("optimizer", ["sgd", {"name": "sgd", "momentum": 0.9}, "adam",
                                       {"name": "adam", "amsgrad": True}, "nadam", "adadelta",
                                       "adagrad", {"name": "rmsprop", "centered": True,
                                                   "momentum": 0.5}], ids=str)
def test_the_slots_are_what_torch_keeps(optimizer: Any) -> None:
    # One real step: torch's optimizer state holds exactly `state_slots` tensors of each
    # parameter's size (scalars such as the step count are not counted).
    import torch

    from archlab.optim import make_optimizer

    study = study_of(MLP, optimizer=optimizer)
    built = build_model(study, "m", seed=0)
    opt, _ = make_optimizer(study.train.optimizer, list(built.module.parameters()))
    built.module(torch.zeros(2, 1, 28, 28)).sum().backward()
    opt.step()
    for p in built.module.parameters():
        full = [t for t in opt.state[p].values()
                if isinstance(t, torch.Tensor) and t.shape == p.shape]
        assert len(full) == study.train.optimizer.state_slots, opt.state[p].keys()


def test_batch_norm_moving_statistics_count_once() -> None:
    layers = [{"Conv2D": {"filters": 4, "kernel_size": 3}}, "BatchNormalization", *MLP]
    built = build_model(study_of(layers, optimizer="sgd"), "m", device="meta")
    bn = next(la for la in built.memory.layers if la.layer == "BatchNormalization")
    # gamma, beta: weight + gradient; moving mean, variance and torch's batch counter: once.
    assert bn.parameter_bytes == (2 * 4 * 2 + 2 * 4 + 1) * BYTES_PER_VALUE


def test_branches_count_their_own_layers() -> None:
    layers = [{"Concatenate": {"branches": [
        [{"Conv2D": {"filters": 8, "kernel_size": 1, "padding": "same"}}],
        [{"Conv2D": {"filters": 16, "kernel_size": 3, "padding": "same"}}]]}}, *MLP]
    built = build_model(study_of(layers, batch_size=1), "m", device="meta")
    by_name = {la.name: la for la in built.memory.layers}
    assert by_name["concatenate_1"].parameter_bytes == 0
    assert by_name["concatenate_1"].activation_bytes == 28 * 28 * 24 * 2 * 4
    assert by_name["branch2/conv2d_2"].where == \
        "layer 1 (Concatenate), branch 2, layer 1 (Conv2D)"
    assert sum(la.parameter_bytes for la in built.memory.layers) == \
        built.memory.parameter_bytes


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 2**30) == "3.0 GiB"
    assert format_bytes(41.3 * 2**40) == "41.3 TiB"


def test_available_memory_is_positive_and_at_most_physical() -> None:
    import os

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < available_memory() <= total


def test_check_memory_names_model_layer_and_amounts() -> None:
    study = study_of(MLP, batch_size=64)
    built = build_model(study, "m", device="meta")
    check_memory(study, built, built.memory.total_bytes)  # exactly enough: fine
    with pytest.raises(SpecError) as info:
        check_memory(study, built, built.memory.total_bytes - 1)
    text = str(info.value)
    assert text.startswith("mem.yaml: model 'm', layer 2 (Dense): Expected a model whose "
                           "training step fits")
    assert format_bytes(built.memory.total_bytes) in text and "batch_size 64" in text
    assert "\n" not in text
    with pytest.raises(SpecError):
        validate_study(study, memory_limit=1024)
    assert set(validate_study(study, memory_limit=2**40)) == {"m"}


def _validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    f = tmp_path / "big.yaml"
    f.write_text(text)
    rc = main(["validate", "--no-timing", str(f)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return rc, captured.err


def test_validate_refuses_a_model_too_large_for_the_machine(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rc, err = _validate(tmp_path, "name: big\ndata: {dataset: mnist-sample}\nmodels:\n  wide:\n"
                        "    layers:\n      - Conv2D: {filters: 100000000, kernel_size: 3}\n"
                        "      - Flatten\n      - Dense: {units: 10, activation: softmax}\n",
                        capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert "big.yaml: model 'wide', layer 1 (Conv2D): Expected a model whose training step " \
           "fits in the " in err
    assert re.search(r"fits in the [\d.,]+ [KMGT]iB of memory available, received an "
                     r"estimated [\d.,]+ TiB, of which [\d.,]+ TiB \(\d+%\) in this layer",
                     err), err
    # Counting a 10^9-parameter model happened on the meta device: no weight was allocated.
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    assert grown < 500 * 2**20, grown


def test_validate_refuses_a_huge_batch_and_huge_units(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    head = "name: big\ndata: {dataset: mnist-sample}\n"
    rc, err = _validate(tmp_path, head + "train: {batch_size: 2000000000}\nmodels:\n  m:\n"
                        "    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]\n",
                        capsys)
    assert rc == 2 and "model 'm', layer 1 (Flatten)" in err and "batch_size 2000000000" in err
    rc, err = _validate(tmp_path, head + "models:\n  m:\n    layers:\n      - Flatten\n"
                        "      - Dense: {units: 100000000}\n"
                        "      - Dense: {units: 10, activation: softmax}\n", capsys)
    assert rc == 2 and "model 'm', layer 2 (Dense)" in err and "TiB" in err


def test_a_layer_too_large_for_torch_is_one_line(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # Each number is within its bound; their product is not within int64.
    rc, err = _validate(tmp_path, "name: big\ndata: {dataset: mnist-sample}\nmodels:\n  m:\n"
                        "    layers:\n      - Flatten\n      - Dense: {units: 2147483647}\n"
                        "      - Dense: {units: 2147483647}\n"
                        "      - Dense: {units: 10, activation: softmax}\n", capsys)
    assert rc == 2 and err.count("\n") == 1
    assert "model 'm', layer 3 (Dense): Expected weights that torch can index" in err


def test_validate_prints_the_memory_beside_macs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--no-timing", "zoo:keras-mnist-cnn"]) == 0
    out = capsys.readouterr().out
    assert "MACs/sample" in out and "memory" in out
    built = build_model(parse_study_zoo(), "cnn", device="meta")
    assert format_bytes(built.memory.total_bytes) in out
    # keras-mnist-cnn: 1.2M params with adadelta (2 slots) and batch 128.
    assert built.memory.parameter_bytes == 1_199_882 * 4 * 4
    assert math.isclose(built.memory.total_bytes / 2**20, 103.1, abs_tol=0.1)


def parse_study_zoo() -> Any:
    from archlab import load_study

    return load_study("zoo:keras-mnist-cnn")
