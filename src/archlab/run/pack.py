"""Packed repeats in a study: which repeats to pack (a timed probe, cached), and running a pack
so that each replica is recorded exactly as a separate run.

Packing is an execution detail: the run ids, checkpoints, weights, predictions and history are
those of separate runs (a checkpoint written by a pack resumes a separate run and the other way
round); the run's environment JSON says ``packed: n``. Its ``train_seconds`` and
``wall_seconds`` are the pack's, shared out equally between its runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from archlab.data import Tensors
from archlab.data.tensors import Preprocess
from archlab.errors import StoreError
from archlab.machine import load_per_core, read_cache, timings_cache_path
from archlab.model import BuiltModel, build_model
from archlab.packed import fit_packed, pack_blocker
from archlab.plan import RunPlan
from archlab.run.checkpoint import CheckpointError, _read, load_checkpoint, save_checkpoint
from archlab.run.environment import environment
from archlab.run.execute import Interrupted, RunContext, peak_rss_bytes, record_result
from archlab.run.projection import _key, _write_cache, projected_seconds
from archlab.spec import Study
from archlab.store import CHECKPOINT_FILE, RunStatus, Store
from archlab.train import TrainState, fit

__all__ = ["PACK_MIN_RATIO", "PackProbe", "conv_on_cpu", "execute_pack", "pack_probe",
           "should_pack"]

log = logging.getLogger("archlab")

#: Packed throughput over separate throughput above which a model's repeats are packed.
PACK_MIN_RATIO = 1.15
#: Projected seconds of training (all n runs) below which no probe is timed: the runs are
#: short, and a probe (a few seconds, once per model and machine) could cost what it saves.
PROBE_WORTH_S = 60.0
#: Timed training steps per side and round, at most.
PROBE_STEPS = 20
#: Seconds of timed steps per side and round, about; rounds stop after twice this (at least
#: one round, at most 3).
STEP_BUDGET_S = 2.0


@dataclass(frozen=True)
class PackProbe:
    """Measured training throughput of n packed replicas against n separate runs."""

    replicas: int
    ratio: float  # packed samples/s over separate samples/s (> 1: packing is faster)
    packed_step_s: float  # one packed step (n replicas' batches), in a fit, median round
    separate_step_s: float  # one separate step (one replica's batch), in a fit, median
    load_per_core: float | None
    measured_at: float
    cached: bool = False

    @property
    def pack(self) -> bool:
        return self.ratio >= PACK_MIN_RATIO


#: Bumped when the packed trainer changes how fast it runs (2: Dense stacks as batched
#: matmuls with a written-out backward pass; 3: a separate MLP run takes the dense plan too,
#: its optimizer step without the wrapper): older cached probes are then measured again.
PROBE_FORMAT = 3


def _probe_key(study: Study, model: str, n: int, device: str) -> str:
    base = _key(study, model, device)  # layers, batch, optimizer, data, threads, torch, cpu
    blob = json.dumps([base, n, PROBE_FORMAT])
    return "pack:" + hashlib.sha256(blob.encode()).hexdigest()[:24]


def _synthetic(built: BuiltModel, batches: int, batch_size: int, device: str) -> Tensors:
    """Random images and labels of the model's shapes: ``batches`` training batches, one
    batch each for validation and test."""
    h, w, c = built.input_shape
    classes = built.output_shape[0]
    gen = torch.Generator().manual_seed(0)

    def part(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.rand(size, h, w, c, generator=gen).to(device),  # images as Tensors hold
                torch.randint(0, classes, (size,), generator=gen).to(device))

    (xt, yt), (xv, yv), (xs, ys) = part(batches * batch_size), part(batch_size), part(batch_size)
    return Tensors(xt, yt, xv, yv, xs, ys, tuple(str(i) for i in range(classes)), False,
                   Preprocess("float"))  # already float: made NCHW per batch


def _measure(study: Study, model: str, n: int, device: str, steps: int,
             budget_s: float) -> PackProbe:
    """Time the real trainers on synthetic data: one separate :func:`archlab.train.fit` and
    one :func:`fit_packed` of n replicas, each on 2 batches and on 2 + k batches, so that the
    difference is k steady training steps without either side's fixed costs (set-up,
    evaluation). Rounds are interleaved (a burst of load from elsewhere hits both sides
    alike); medians. k is at most ``steps``, fewer for slow models (about ``budget_s`` a side).
    """
    load = load_per_core()
    train = study.train_for(model).model_copy(update={"epochs": 1, "restore_best": False})
    single = build_model(study, model, seed=0)
    single.module.to(device)
    replicas = [build_model(study, model, seed=i) for i in range(n)]
    for built in replicas:
        built.module.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    seeds = list(range(n))

    def separate(data: Tensors) -> float:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        fit(single, data, train, 0)
        sync()
        return time.perf_counter() - t0

    def packed(data: Tensors) -> float:
        t0 = time.perf_counter()
        fit_packed(replicas, data, train, seeds)
        sync()
        return time.perf_counter() - t0

    short = _synthetic(single, 2, train.batch_size, device)
    separate(short)  # warm-up: allocation, kernel choice, layout probes
    warm = packed(short)
    k = max(4, min(steps, int(budget_s / max(warm / 2, 1e-4))))
    long = _synthetic(single, 2 + k, train.batch_size, device)
    sep: list[float] = []
    pk: list[float] = []
    started = time.perf_counter()
    while len(pk) < 3:
        sep.append((separate(long) - separate(short)) / k)
        pk.append((packed(long) - packed(short)) / k)
        if time.perf_counter() - started > 2 * budget_s:
            break
    s, p = max(statistics.median(sep), 1e-9), max(statistics.median(pk), 1e-9)
    return PackProbe(n, n * s / p, p, s, load, time.time())


def pack_probe(study: Study, model: str, n: int, *, device: str = "cpu",
               steps: int = PROBE_STEPS, budget_s: float = STEP_BUDGET_S,
               use_cache: bool = True) -> PackProbe:
    """Whether packing ``n`` repeats of ``model`` pays on this machine: from the step-timing
    cache, else timed on synthetic data of the model's input shape (and cached, keyed by the
    model's config, n, torch threads, torch and archlab versions, device and CPU model)."""
    path = timings_cache_path()
    key = _probe_key(study, model, n, device)
    if use_cache:
        entry = read_cache(path).get(key)
        if isinstance(entry, dict):
            try:
                return PackProbe(**entry, cached=True)
            except TypeError:  # another version's entry: measure again
                pass
    probe = _measure(study, model, n, device, steps, budget_s)
    if use_cache:
        _write_cache(path, key, probe)  # type: ignore[arg-type]
    return probe


def conv_on_cpu(study: Study, model: str, device: str) -> bool:
    """A convolutional model on the CPU: never packed, never probed. vmap runs n replicas'
    convolutions as one grouped convolution, which the CPU runs several times slower than n
    separate ones (0.14x to 0.75x of separate throughput on the zoo: docs/packing.md), and
    one packed step of a large CNN takes seconds, so even the probe would cost minutes."""
    if not device.startswith("cpu"):
        return False
    built = build_model(study, model, device="meta")
    return any(isinstance(m, torch.nn.Conv2d) for m in built.module.modules())


def should_pack(study: Study, model: str, n: int, *, device: str = "cpu") -> bool:
    """Pack ``model``'s ``n`` repeats: packable (see :func:`archlab.packed.pack_blocker`),
    long enough that a probe can pay for itself (:data:`PROBE_WORTH_S` of projected
    training for the n runs), not a CNN on the CPU (:func:`conv_on_cpu`), and measured faster
    packed."""
    if n < 2 or pack_blocker(study, model) is not None:
        return False
    if conv_on_cpu(study, model, device):
        return False
    if n * projected_seconds(study, model, device=device) < PROBE_WORTH_S:
        return False
    try:
        return pack_probe(study, model, n, device=device).pack
    except Exception as exc:  # noqa: BLE001 - e.g. an op vmap cannot batch: train separately
        log.warning("%s: repeats run separately (packing failed in its probe: %s)", model,
                    " ".join(str(exc).split())[:200])
        return False


def _checkpoint_epoch(data: bytes) -> int:
    _, meta = _read(data)
    return int(meta["epoch"])


def execute_pack(study: Study, plans: list[RunPlan],
                 ctx: RunContext) -> dict[str, RunStatus] | None:
    """Train ``plans`` (repeats of one model) as one pack, each recorded as a separate run.

    Returns each run's status, or None (nothing trained) when the runs' checkpoints are at
    different epochs: the caller then runs them separately, each resuming its own.
    """
    if getattr(ctx, "epoch_check", None) is not None:
        return None  # a pruner may stop each replica at its own epoch: separate runs
    t_wall = time.perf_counter()
    torch.set_num_threads(ctx.threads)
    model = plans[0].model
    assert all(p.model == model for p in plans)
    n = len(plans)
    train = study.train_for(model)
    with Store(ctx.directory) as store:
        ckpts = {p.run_id: store.run_dir(p.run_id) / CHECKPOINT_FILE for p in plans}

        def discard(plan: RunPlan, why: str) -> None:
            message = f"checkpoint discarded, restarting from epoch 0: {why}"
            log.warning("%s: %s", plan.run_id, message)
            ckpts[plan.run_id].unlink(missing_ok=True)
            store.forget_file(plan.run_id, CHECKPOINT_FILE)
            store.truncate_epochs(plan.run_id, 0)
            store.add_warning(plan.run_id, message)
            ctx.progress(plan.run_id, {"kind": "warning", "message": message})

        saved: dict[str, bytes | None] = {}
        for p in plans:
            saved[p.run_id] = None
            if store.status(p.run_id) is None or not ckpts[p.run_id].exists():
                continue
            try:
                data = store.read_verified(p.run_id, CHECKPOINT_FILE)
                _checkpoint_epoch(data)
                saved[p.run_id] = data
            except (StoreError, CheckpointError) as exc:
                discard(p, str(exc))
        epochs = {_checkpoint_epoch(d) if d is not None else 0 for d in saved.values()}
        if len(epochs) > 1:
            return None
        def record_environment(plan: RunPlan, threads_from: str | None) -> None:
            env = environment(torch.get_num_threads(), ctx.device,
                              threads_from=threads_from) | {"packed": n}
            store.start_run(plan.run_id, plan.model, plan.repeat, plan.seed,
                            plan.config.to_json(), env)

        for p in plans:
            store.run_dir(p.run_id).mkdir(parents=True, exist_ok=True)
            record_environment(p, getattr(ctx, "threads_from", None))
        store.set_meta(data_sizes={"train": len(ctx.data.x_train), "val": len(ctx.data.x_val),
                                   "test": len(ctx.data.x_test),
                                   "classes": len(ctx.data.class_names)})
        builts: list[BuiltModel] = []
        for p in plans:
            built = build_model(study, model, seed=p.seed)
            built.module.to(ctx.device)
            builts.append(built)

        def resume_of(plan: RunPlan, built: BuiltModel,
                      data: bytes) -> Callable[..., TrainState]:
            def resume(opt: torch.optim.Optimizer, sched: Any,
                       gen: torch.Generator) -> TrainState:
                state = load_checkpoint(data, built.module, opt, sched, gen)
                if torch.get_num_threads() != ctx.threads:  # the checkpoint's count wins
                    record_environment(plan, "checkpoint")
                store.truncate_epochs(plan.run_id, state.epoch)
                ctx.progress(plan.run_id, {"kind": "resumed", "epoch": state.epoch})
                return state
            return resume

        def epoch_hook(plan: RunPlan, built: BuiltModel) -> Callable[..., None]:
            def hook(st: TrainState, opt: Any, sched: Any, gen: torch.Generator) -> None:
                save_checkpoint(ckpts[plan.run_id], st, built.module, opt, sched, gen)
                store.record_epoch(plan.run_id, st.history[-1], files=[CHECKPOINT_FILE])
                ctx.progress(plan.run_id, {"kind": "epoch", "epoch": st.epoch,
                                           "epochs": train.epochs, **st.history[-1]})
            return hook

        def on_batches(done: int, total: int) -> None:
            if ctx.stop_requested():
                raise Interrupted
            for p in plans:
                ctx.progress(p.run_id, {"kind": "batch", "done": done, "total": total})

        resumes = [resume_of(p, b, saved[p.run_id]) if saved[p.run_id] is not None else None
                   for p, b in zip(plans, builts, strict=True)]
        try:
            results = fit_packed(builts, ctx.data, train, [p.seed for p in plans],
                                 resumes=resumes,
                                 on_epoch_end=[epoch_hook(p, b)
                                               for p, b in zip(plans, builts, strict=True)],
                                 on_batches=on_batches)
        except CheckpointError:
            # Raised before the first batch, nothing trained: each run goes on separately,
            # and execute_run discards the checkpoint it cannot use, as for any run.
            return None
        except Interrupted:
            for p in plans:
                store.fail_run(p.run_id, "interrupted by the user",
                               status=RunStatus.INTERRUPTED, peak_rss_bytes=peak_rss_bytes())
            return {p.run_id: RunStatus.INTERRUPTED for p in plans}
        return {p.run_id: record_result(store, p, ctx, b, r, started=t_wall, share=n)
                for p, b, r in zip(plans, builts, results, strict=True)}
