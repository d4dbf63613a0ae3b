"""Device and precision paths: the device string plumbed through, checkpoints that move
between devices, bf16 autocast against fp32 on the CPU, and (where torch sees a GPU) a CUDA
run, a CUDA resume and CUDA bf16. See docs/cpu-trainer.md, "GPU", for what was never run on
a GPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import archlab
from archlab.data import Tensors
from archlab.errors import ArchlabError
from archlab.run import RunContext, execute_run, plan_runs, resolve_device, run_study
from archlab.run.checkpoint import load_checkpoint, save_checkpoint
from archlab.store import RunStatus, Store
from archlab.train import fit

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="torch sees no CUDA device")

#: bf16 against fp32 after TINY's 2 epochs on mnist-sample: bf16 keeps 8 bits of mantissa,
#: so single predictions may flip; the means stay close. Measured on the CPU (torch 2.13,
#: 1 thread): 0.004 in test accuracy and 0.003 in test loss at most (docs/cpu-trainer.md).
BF16_ACCURACY_TOL = 0.03
BF16_LOSS_TOL = 0.05


def test_device_strings() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if CUDA else "cpu")
    with pytest.raises(ArchlabError, match="--device"):
        resolve_device("tpu")
    if not CUDA:
        with pytest.raises(ArchlabError, match="sees no CUDA"):
            resolve_device("cuda:0")


def test_precision_is_in_the_identity_only_when_not_fp32(tiny: archlab.Study) -> None:
    fp32 = plan_runs(tiny)
    bf16 = plan_runs(tiny, precision="bf16")
    assert all("precision" not in p.config.to_json() for p in fp32)  # old run ids unchanged
    assert all(p.config.to_json()["precision"] == "bf16" for p in bf16)
    assert {p.run_id for p in fp32}.isdisjoint(p.run_id for p in bf16)
    with pytest.raises(ArchlabError, match="precision"):
        run_study(tiny, "unused", precision="fp16")


def test_bf16_autocast_agrees_with_fp32(tiny: archlab.Study, tmp_path: Path) -> None:
    run_study(tiny, tmp_path, threads=1, repeats=1)
    run_study(tiny, tmp_path, threads=1, repeats=1, precision="bf16")
    with Store(tmp_path) as store:
        runs = store.runs()
    assert len(runs) == 4
    by = {(r.model, r.environment.get("precision", "fp32")): r for r in runs}
    for model in ("mlp", "cnn"):
        a, b = by[(model, "fp32")].metrics, by[(model, "bf16")].metrics
        assert a != b  # bf16 really computed something else
        assert abs(a["test_accuracy"] - b["test_accuracy"]) <= BF16_ACCURACY_TOL, (model, a, b)
        assert abs(a["test_loss"] - b["test_loss"]) <= BF16_LOSS_TOL, (model, a, b)
        assert math.isfinite(b["val_loss"])


def test_a_cuda_checkpoint_loads_on_the_cpu(tiny: archlab.Study, data: Tensors,
                                            tmp_path: Path) -> None:
    """A checkpoint holding a CUDA RNG state (as a CUDA run writes) loads onto a CPU model:
    tensors come back on the CPU and are copied to each parameter's device."""
    path = tmp_path / "ckpt.safetensors"
    built = archlab.build_model(tiny, "cnn", seed=1)
    train = tiny.train_for("cnn").model_copy(update={"epochs": 1})
    fit(built, data, train, 1, on_epoch_end=lambda st, opt, sched, gen: save_checkpoint(
        path, st, built.module, opt, sched, gen))
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    tensors = load_file(str(path))
    tensors["rng/cuda"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA run's generator
    save_file(tensors, str(path), metadata=header["__metadata__"])
    fresh = archlab.build_model(tiny, "cnn", seed=2)
    opt = torch.optim.Adam(fresh.module.parameters())
    state = load_checkpoint(path, fresh.module, opt, None, torch.Generator())
    assert state.epoch == 1
    for k, v in fresh.module.state_dict().items():
        assert v.device.type == "cpu"
        assert torch.equal(v, built.module.state_dict()[k])


def interrupted_then_resumed(study: archlab.Study, data: Tensors, directory: Path,
                             device: str) -> dict:
    plan = next(p for p in plan_runs(study) if p.model == "cnn")
    epochs: list[int] = []
    ctx = RunContext(directory, data, 1,
                     lambda rid, ev: epochs.append(ev["epoch"]) if ev["kind"] == "epoch" else None,
                     stop_requested=lambda: bool(epochs), device=device)
    assert execute_run(study, plan, ctx) is RunStatus.INTERRUPTED
    assert execute_run(study, plan, RunContext(directory, data, 1, device=device)) \
        is RunStatus.FINISHED
    with Store(directory) as store:
        (run,) = store.runs()
    return run.metrics


@needs_cuda
def test_cuda_run_and_resume(tiny: archlab.Study, data: Tensors, tmp_path: Path) -> None:
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    cuda = data.to("cuda")
    plan = next(p for p in plan_runs(tiny) if p.model == "cnn")
    assert execute_run(tiny, plan, RunContext(tmp_path / "ref", cuda, 1, device="cuda")) \
        is RunStatus.FINISHED
    with Store(tmp_path / "ref") as store:
        (ref,) = store.runs()
    assert ref.environment["device"] == "cuda" and "gpu" in ref.environment
    got = interrupted_then_resumed(tiny, cuda, tmp_path / "resumed", "cuda")
    for k, v in ref.metrics.items():  # cuDNN in deterministic mode: the same numbers
        assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


@needs_cuda
def test_cuda_bf16_autocast_agrees_with_fp32(tiny: archlab.Study, tmp_path: Path) -> None:
    run_study(tiny, tmp_path, repeats=1, device="cuda")
    run_study(tiny, tmp_path, repeats=1, device="cuda", precision="bf16")
    with Store(tmp_path) as store:
        by = {(r.model, r.environment.get("precision", "fp32")): r.metrics
              for r in store.runs()}
    for model in ("mlp", "cnn"):
        a, b = by[(model, "fp32")], by[(model, "bf16")]
        assert abs(a["test_accuracy"] - b["test_accuracy"]) <= BF16_ACCURACY_TOL
        assert abs(a["test_loss"] - b["test_loss"]) <= BF16_LOSS_TOL


@needs_cuda
def test_a_cuda_run_resumes_on_the_cpu(tiny: archlab.Study, data: Tensors,
                                       tmp_path: Path) -> None:
    """Interrupted on the GPU, finished on the CPU: the checkpoint loads (not bit-identical
    to either device's uninterrupted run: the two devices' kernels round differently)."""
    plan = next(p for p in plan_runs(tiny) if p.model == "cnn")
    epochs: list[int] = []
    ctx = RunContext(tmp_path, data.to("cuda"), 1,
                     lambda rid, ev: epochs.append(ev["epoch"]) if ev["kind"] == "epoch" else None,
                     stop_requested=lambda: bool(epochs), device="cuda")
    assert execute_run(tiny, plan, ctx) is RunStatus.INTERRUPTED
    events: list[dict] = []
    ctx = RunContext(tmp_path, data, 1, lambda rid, ev: events.append(ev), device="cpu")
    assert execute_run(tiny, plan, ctx) is RunStatus.FINISHED
    assert {"kind": "resumed", "epoch": 1} in events


def test_cli_precision_reaches_the_run(tiny: archlab.Study, tmp_path: Path) -> None:
    from archlab.cli import main

    study_file = tmp_path / "s.yaml"
    study_file.write_text(archlab.dump_study(tiny))
    assert main(["run", str(study_file), "--epochs", "1", "--models", "mlp", "--repeats", "1",
                 "--out", str(tmp_path / "o"), "--quiet", "--no-report", "--no-timing",
                 "--threads", "1", "--precision", "bf16"]) == 0
    with Store(tmp_path / "o") as store:
        (run,) = store.runs()
    assert run.environment["precision"] == "bf16" and run.environment["threads"] == 1
    assert run.environment["threads_from"] == "given"
    assert run.status is RunStatus.FINISHED and run.config_json["precision"] == "bf16"
