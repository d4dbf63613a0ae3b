"""Running a study: plan runs (model × repeat), skip finished ones, train the rest.

A run's identity is a hash of everything that determines its numbers (resolved model spec,
training config, data config, seed), so re-running a study only trains what is missing or
changed. Each run checkpoints at every epoch end (weights, optimizer, scheduler and RNG
states, history) with an atomic rename, so a killed run resumes from its last epoch.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import platform
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from archlab._builder import BuiltModel, build_model
from archlab._errors import ArchlabError
from archlab._spec import Study, canonical_json, dump_study
from archlab._store import DONE, Store
from archlab._train import Tensors, TrainState, fit, prepare_tensors

DEFAULT_ROOT = Path("archlab-runs")


def derive_seed(study_seed: int, model: str, repeat: int) -> int:
    """A run's seed from the study seed, model name and repeat index (stable across edits)."""
    digest = hashlib.sha256(f"{study_seed}/{model}/{repeat}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class RunPlan:
    """One run to do: which model, which repeat, its seed, identity and resolved config."""

    run_id: str
    model: str
    repeat: int
    seed: int
    config: dict[str, Any]


def plan_runs(study: Study, *, repeats: int | None = None) -> list[RunPlan]:
    """Every run the study asks for, in study order (model by model, repeat by repeat)."""
    plans = []
    for name, spec in study.models.items():
        train = study.train_for(name)
        n = repeats or train.repeats
        train_cfg = train.to_config()
        train_cfg.pop("repeats")  # how many repeats exist does not change any one of them
        for r in range(n):
            seed = derive_seed(study.seed, name, r)
            config = {"model": name, "layers": spec.to_config()["layers"], "train": train_cfg,
                      "data": study.data.model_dump(mode="json"), "seed": seed,
                      "split_seed": study.seed}
            run_id = hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]
            plans.append(RunPlan(run_id, name, r, seed, config))
    return plans


def study_dir(study: Study, out: str | Path | None = None) -> Path:
    return Path(out) if out is not None else DEFAULT_ROOT / study.name


def resolve_device(device: str | None) -> str:
    """'auto' (the default) is the first CUDA device when torch sees one, else the CPU."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError:
        raise ArchlabError(f"--device: Expected cpu, cuda, cuda:N or auto, received "
                           f"{device!r}") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ArchlabError(f"--device: {device!r} requested but this torch build sees no CUDA "
                           f"device (torch {torch.__version__})")
    return device


def environment(threads: int, device: str = "cpu") -> dict[str, Any]:
    from archlab import __version__

    env = {"archlab": __version__, "torch": torch.__version__,
           "python": platform.python_version(), "machine": platform.machine(),
           "processor": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "threads": threads, "device": device}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


# ---------------------------------------------------------------------------------------------
# Checkpoints: safetensors for every tensor, JSON metadata for the rest (never pickle).


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, meta: dict[str, str]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata=meta)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_weights(module: torch.nn.Module, path: Path, meta: dict[str, str] | None = None) -> None:
    _atomic_save(dict(module.state_dict()), path, meta or {})


def _save_checkpoint(path: Path, built: BuiltModel, state: TrainState, opt: torch.optim.Optimizer,
                     sched: Any, gen: torch.Generator) -> None:
    tensors = {f"model/{k}": v for k, v in built.module.state_dict().items()}
    opt_state = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in opt_state["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt/{pid}/{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    tensors["rng/torch"] = torch.get_rng_state()
    device = next(built.module.parameters()).device
    if device.type == "cuda":
        tensors["rng/cuda"] = torch.cuda.get_rng_state(device)
    tensors["rng/shuffle"] = gen.get_state()
    if state.best_weights is not None:
        tensors.update({f"best/{k}": v for k, v in state.best_weights.items()})
    meta = {"epoch": state.epoch, "history": state.history, "best": state.best_val_loss,
            "best_epoch": state.best_epoch, "wait": state.wait, "train_seconds":
            state.train_seconds, "param_groups": opt_state["param_groups"], "scalars": scalars,
            "sched": sched.state_dict() if sched is not None else None}
    _atomic_save(tensors, path, {"archlab": json.dumps(meta)})


def _load_checkpoint(path: Path, built: BuiltModel) -> tuple[TrainState, Callable[..., None]]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = json.loads(fh.metadata()["archlab"])
    tensors = load_file(str(path))
    built.module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")} or None
    state = TrainState(epoch=meta["epoch"], history=meta["history"], best_val_loss=meta["best"],
                       best_epoch=meta["best_epoch"], wait=meta["wait"], best_weights=best,
                       train_seconds=meta["train_seconds"])

    def restore(opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator) -> None:
        per_param: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("opt/"):
                _, pid, name = k.split("/", 2)
                per_param.setdefault(int(pid), {})[name] = v
        for pid, values in meta["scalars"].items():
            per_param.setdefault(int(pid), {}).update(values)
        opt.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
        if sched is not None and meta["sched"] is not None:
            sched.load_state_dict(meta["sched"])
        gen.set_state(tensors["rng/shuffle"])
        torch.set_rng_state(tensors["rng/torch"])
        if "rng/cuda" in tensors:
            device = next(built.module.parameters()).device
            torch.cuda.set_rng_state(tensors["rng/cuda"], device)

    return state, restore


# ---------------------------------------------------------------------------------------------
# One run


class Interrupted(Exception):
    """Raised inside a run when the user pressed Ctrl-C (the last epoch checkpoint is kept)."""


@dataclass
class RunContext:
    """What a run needs besides its plan: where to write, the data, how to report progress."""

    directory: Path
    data: Tensors
    threads: int
    progress: Callable[[str, dict[str, Any]], None] = lambda run_id, event: None
    stop_requested: Callable[[], bool] = lambda: False
    device: str = "cpu"


def execute_run(study: Study, plan: RunPlan, ctx: RunContext) -> str:
    """Train one run to completion (resuming from its checkpoint if any); return its status."""
    t_wall = time.perf_counter()
    run_dir = ctx.directory / "runs" / plan.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "checkpoint.safetensors"
    torch.set_num_threads(ctx.threads)
    with Store(ctx.directory) as store:
        store.start_run(plan.run_id, plan.model, plan.repeat, plan.seed, plan.config,
                        environment(ctx.threads, ctx.device))
        train = study.train_for(plan.model)
        # Initialized on the CPU (same initial weights whatever the device), then moved.
        built = build_model(study, plan.model, seed=plan.seed)
        built.module.to(ctx.device)
        torch.manual_seed(plan.seed)  # dropout stream (seeds CUDA's generators too)
        state, restore = None, None
        if ckpt.exists():
            state, restore = _load_checkpoint(ckpt, built)
            store.truncate_epochs(plan.run_id, state.epoch)
            ctx.progress(plan.run_id, {"kind": "resumed", "epoch": state.epoch})

        def on_epoch_end(st: TrainState, opt: Any, sched: Any, gen: torch.Generator) -> None:
            _save_checkpoint(ckpt, built, st, opt, sched, gen)
            store.record_epoch(plan.run_id, st.history[-1])
            ctx.progress(plan.run_id, {"kind": "epoch", "epoch": st.epoch,
                                       "epochs": train.epochs, **st.history[-1]})

        def on_batches(done: int, total: int) -> None:
            if ctx.stop_requested():
                raise Interrupted
            ctx.progress(plan.run_id, {"kind": "batch", "done": done, "total": total})

        try:
            result = fit(built, ctx.data, train, plan.seed, state=state, restore=restore,
                         on_epoch_end=on_epoch_end, on_batches=on_batches)
        except Interrupted:
            store.fail_run(plan.run_id, "interrupted by the user", status="interrupted")
            return "interrupted"
        if result.status == "finished":
            save_weights(built.module, run_dir / "weights.safetensors",
                         {"model": plan.model, "run_id": plan.run_id})
        counts = {"total_params": built.total_params, "trainable_params": built.trainable_params,
                  "non_trainable_params": built.non_trainable_params,
                  "macs_per_sample": built.macs_per_sample}
        store.finish_run(plan.run_id, status=result.status, metrics=result.final, counts=counts,
                         best_epoch=result.best_epoch, diverged_epoch=result.diverged_epoch,
                         train_seconds=result.train_seconds,
                         wall_seconds=time.perf_counter() - t_wall,
                         samples_per_second=result.samples_per_second, history=result.history)
        ckpt.unlink(missing_ok=True)
        ctx.progress(plan.run_id, {"kind": "done", "status": result.status, **result.final})
        return result.status


# ---------------------------------------------------------------------------------------------
# Workers (--jobs N): one process per run, so no run's memory outlives it.


def _worker(study_cfg: dict[str, Any], source: str, plan: RunPlan, directory: str,
            data_dir: str | None, threads: int, queue: Any, device: str = "cpu") -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends SIGTERM
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    parent = os.getppid()

    def stop_requested() -> bool:
        # Stop on the parent's SIGTERM, and if the parent died (SIGKILL, OOM): an orphan must
        # not keep writing a run that the next `archlab run` will resume.
        return stop["flag"] or os.getppid() != parent

    from archlab._data import load_dataset
    from archlab._spec import parse_study

    study = parse_study(study_cfg, source)
    try:
        raw = load_dataset(study.data.dataset, data_dir)
        data = prepare_tensors(raw, study.data, study.seed).to(device)
        ctx = RunContext(Path(directory), data, threads,
                         progress=lambda rid, ev: queue.put((rid, ev)),
                         stop_requested=stop_requested, device=device)
        execute_run(study, plan, ctx)
    except BaseException as exc:  # noqa: BLE001 - a worker must record why it died
        msg = str(exc) if isinstance(exc, ArchlabError) else traceback.format_exc(limit=3)
        with Store(directory) as store:
            store.fail_run(plan.run_id, f"{exc.__class__.__name__}: {msg.strip()[-500:]}")
        queue.put((plan.run_id, {"kind": "done", "status": "failed"}))


@dataclass
class StudyOutcome:
    directory: Path
    planned: list[RunPlan]
    skipped: list[str]
    statuses: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False


def default_threads(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def run_study(
    study: Study,
    out: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    repeats: int | None = None,
    jobs: int = 1,
    threads: int | None = None,
    progress: Any = None,
    device: str | None = None,
) -> StudyOutcome:
    """Train every run of ``study`` that the store in ``out`` does not already hold.

    Finished (and diverged) runs are skipped; failed, interrupted and half-done runs are
    retried, resuming from their last epoch checkpoint. ``progress`` is a
    :class:`archlab._progress.ProgressView` (or None for silence).
    """
    from archlab._data import load_dataset

    directory = study_dir(study, out)
    directory.mkdir(parents=True, exist_ok=True)
    plans = plan_runs(study, repeats=repeats)
    with Store(directory) as store:
        store.set_meta(study=study.name, source=study.source, spec=dump_study(study),
                       plan=[p.run_id for p in plans],
                       updated_at=time.time())
        done = {r.run_id for r in store.runs() if r.status in DONE}
    (directory / "study.yaml").write_text(dump_study(study))
    todo = [p for p in plans if p.run_id not in done]
    outcome = StudyOutcome(directory, plans, [p.run_id for p in plans if p.run_id in done])
    if not todo:
        return outcome
    threads = threads or default_threads(jobs)
    device = resolve_device(device)
    report = progress.event if progress is not None else (lambda rid, ev: None)
    if progress is not None:
        progress.start(todo, len(outcome.skipped))
    stopper = _StopOnSigint()
    try:
        if jobs <= 1:
            raw = load_dataset(study.data.dataset, data_dir)
            data = prepare_tensors(raw, study.data, study.seed).to(device)
            ctx = RunContext(directory, data, threads, report, stopper.requested, device)
            for plan in todo:
                if stopper.requested():
                    break
                try:
                    outcome.statuses[plan.run_id] = execute_run(study, plan, ctx)
                except ArchlabError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one broken run must not end the study
                    reason = f"{exc.__class__.__name__}: {str(exc).strip()[-500:]}"
                    with Store(directory) as store:  # recorded even if it died before start
                        store.start_run(plan.run_id, plan.model, plan.repeat, plan.seed,
                                        plan.config, environment(threads, device))
                        store.fail_run(plan.run_id, reason)
                    report(plan.run_id, {"kind": "done", "status": "failed", "error": reason})
                    outcome.statuses[plan.run_id] = "failed"
        else:
            _run_parallel(study, todo, directory, data_dir, jobs, threads, report, stopper,
                          outcome, device)
    finally:
        stopper.restore()
        if progress is not None:
            progress.stop()
    outcome.interrupted = stopper.requested()
    return outcome


class _StopOnSigint:
    """First Ctrl-C: finish cleanly (runs stop at the next batch; checkpoints are kept).
    Second Ctrl-C: stop at once."""

    def __init__(self) -> None:
        self.count = 0
        self._old = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, *_: Any) -> None:
        self.count += 1
        if self.count >= 2:
            os._exit(130)

    def requested(self) -> bool:
        return self.count > 0

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self._old)


def _run_parallel(study: Study, todo: list[RunPlan], directory: Path, data_dir: Any, jobs: int,
                  threads: int, report: Callable[[str, dict[str, Any]], None],
                  stopper: _StopOnSigint, outcome: StudyOutcome, device: str) -> None:
    # Each run gets a fresh process (no memory carried between runs), forked from a server
    # that has imported torch and archlab once: a worker starts in milliseconds, not seconds.
    # The server runs no torch op before forking, so no thread pool is forked half-alive.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["archlab._run", "archlab._data"])
    queue = ctx.Queue()
    pending = list(todo)
    running: dict[str, tuple[Any, RunPlan]] = {}
    cfg = study.to_config()
    signalled = False
    while pending or running:
        while pending and len(running) < jobs and not stopper.requested():
            plan = pending.pop(0)
            with Store(directory) as store:  # claimed now: a worker dying at birth is seen
                store.start_run(plan.run_id, plan.model, plan.repeat, plan.seed, plan.config,
                                environment(threads, device))
            proc = ctx.Process(target=_worker, args=(cfg, study.source, plan, str(directory),
                                                     str(data_dir) if data_dir else None,
                                                     threads, queue, device), daemon=True)
            proc.start()
            running[plan.run_id] = (proc, plan)
        if stopper.requested():
            pending.clear()
            if not signalled:
                for proc, _ in running.values():
                    proc.terminate()  # SIGTERM: the worker stops at its next batch
                signalled = True
        try:
            while True:
                rid, event = queue.get(timeout=0.2)
                report(rid, event)
        except Exception:  # queue.Empty
            pass
        for rid, (proc, _plan) in list(running.items()):
            if proc.exitcode is None:
                continue
            proc.join()
            del running[rid]
            with Store(directory) as store:
                status = store.status(rid) or "failed"
                if status == "running":  # the process died without a word: OOM, segfault
                    reason = (f"worker died with signal {-proc.exitcode}" if proc.exitcode < 0
                              else f"worker exited with code {proc.exitcode}")
                    store.fail_run(rid, reason)
                    status = "failed"
                    report(rid, {"kind": "done", "status": "failed", "error": reason})
            outcome.statuses[rid] = status


DATASET_SIZES = {"mnist": (60000, 10000), "fashion-mnist": (60000, 10000),
                 "mnist-sample": (5000, 1000)}


def projected_seconds(study: Study, model: str, *, steps: int = 3,
                      device: str = "cpu") -> float:
    """Time a few training steps on synthetic input; project the model's whole training.

    Counts the training steps of every epoch plus the evaluation passes (validation each
    epoch, train/val/test at the end; a forward pass costs about a third of a training step).
    """
    from archlab._train import make_optimizer, prefer_channels_last

    train = study.train_for(model)
    built = build_model(study, model, seed=0)
    built.module.to(device)
    prefer_channels_last(built.module)  # as fit() trains it
    opt, _ = make_optimizer(train.optimizer, built.module.parameters())
    n_train, n_test = DATASET_SIZES[study.data.dataset]
    split = study.data.validation
    n_val = n_test if split == "test" else round(n_train * split.split)  # type: ignore[union-attr]
    n_train -= 0 if split == "test" else n_val
    bs = train.batch_size
    h, w, c = built.input_shape
    gen = torch.Generator().manual_seed(0)
    xb = torch.rand(bs, c, h, w, generator=gen).to(device)
    yb = torch.randint(0, built.output_shape[0], (bs,), generator=gen).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(built.module(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t0)
    per_sample = float(np.median(times[2:])) / bs  # the first steps pay one-off costs
    forward_samples = n_val * train.epochs + n_train + n_val + n_test
    return per_sample * (n_train * train.epochs + forward_samples / 3)
