"""Projected training time: a few timed steps on synthetic input, scaled to the whole run.

Timing steps is slow for heavy models (minutes for a whole zoo study) and noisy on a shared
machine, so each measurement is cached per architecture and machine: a JSON file in the user
cache (``$ARCHLAB_CACHE_DIR`` or ``~/.cache/archlab``), keyed by the model's layers, batch size
and optimizer, the dataset (input shape), device, torch threads, torch and archlab versions
and CPU model. A second projection of the same model on the same machine times nothing.

How sure a projection is: it is a range. While the steps are timed, archlab reads how much of
the CPU time its threads asked for they got (the kernel's schedstat: time run against time
waited on a run queue). A timing taken while the process got less than
:data:`MIN_CPU_SHARE` of it is starved: it is never cached, and its range runs from the timing
scaled to the share it would have had on a quiet machine up to the time at the present load
(a run takes the one or the other, or between, as the load comes and goes). Every range also
carries the steps' spread and the projection's own error (:data:`MODEL_ERROR`: epochs cost
more than their steps). ``--retime`` measures again instead of reading the cache.
A measurement whose steps varied a lot (spread above :data:`SPREAD_LIMIT`) or taken on a
busy machine is flagged in the CLI's note under the table.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from archlab.machine import (
    CACHE_FILE,
    cpu_model,
    load_per_core,
    put_cache,
    read_cache,
    timings_cache_path,
)
from archlab.model import build_model
from archlab.spec import Study

__all__ = ["BUSY_LOAD_PER_CORE", "CACHE_FILE", "MIN_CPU_SHARE", "MODEL_ERROR", "SPREAD_LIMIT",
           "StepTiming", "cpu_clock", "load_per_core",
           "projected_range", "projected_seconds", "projection_note", "step_timing",
           "timings_cache_path"]

#: Spread of the timed steps ((slowest - fastest) / median) above which they "vary a lot".
SPREAD_LIMIT = 0.5
#: 1-minute load average per core above which the machine counts as busy.
BUSY_LOAD_PER_CORE = 0.8
#: Share of the CPU time its threads were ready to use that the process must have had while
#: its steps were timed for the timing to be cached (and not scaled).
MIN_CPU_SHARE = 0.85
#: The projection's own error either way, beyond the timed steps' spread: a run also loads
#: data, evaluates, checkpoints and starts its process; measured on quickstart in
#: docs/performance.md ("Projected time before training").
MODEL_ERROR = 0.35
#: Timed steps stop after this many seconds (at least two are timed, to see the spread).
STEP_BUDGET_S = 3.0
#: A model whose step would take over 4x this (by its MACs at :data:`ASSUMED_MACS_PER_S`) is
#: timed on a smaller batch, sized to take about this long: kernels-padding's m10 takes
#: 16 s a step at batch 128 on one loaded core, and three such steps made a cold
#: ``--dry-run`` of that study last 82 s. Steps at that batch and at 4x it are timed and
#: extrapolated to the model's batch (:func:`_two_batch_timing`); compared with full-batch
#: timings in docs/performance.md.
TIMED_STEP_S = 0.15
#: About what one CPU core does in multiply-accumulates per second in a training step (the
#: zoo's CNNs ran 8-25 GMAC/s on one core): it only sizes the timed batch.
ASSUMED_MACS_PER_S = 2e10


@dataclass(frozen=True)
class StepTiming:
    """One model's measured training step, per sample, and how far to trust it."""

    seconds_per_sample: float  # as timed: at the CPU share the process had then
    spread: float  # (max - min) / median of the timed steps; interquartile range from 8 steps
    load_per_core: float | None  # when it was measured
    measured_at: float
    #: Of the CPU time its threads were ready to use while the steps were timed, the share
    #: they got (None where the kernel does not say: then taken as 1).
    cpu_share: float | None = None
    cached: bool = False

    @property
    def starved(self) -> bool:
        """Timed while the process got less than :data:`MIN_CPU_SHARE` of its CPU time."""
        return self.cpu_share is not None and self.cpu_share < MIN_CPU_SHARE

    @property
    def quiet_seconds_per_sample(self) -> float:
        """The timing scaled to a process that gets all the CPU time it asks for."""
        return self.seconds_per_sample * min(1.0, self.cpu_share or 1.0)

    @property
    def busy(self) -> bool:
        return self.load_per_core is not None and self.load_per_core > BUSY_LOAD_PER_CORE

    @property
    def reliable(self) -> bool:
        return self.spread <= SPREAD_LIMIT and not self.busy and not self.starved


def cpu_clock() -> tuple[float, float] | None:
    """This process's threads' CPU seconds so far, and their seconds spent ready to run but
    waiting for a CPU (Linux's /proc/self/task/*/schedstat); None where unavailable. Threads
    that ended meanwhile drop out: compare two readings around work done by live threads."""
    run = wait = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat", encoding="ascii") as f:
                fields = f.read().split()
            run += int(fields[0])
            wait += int(fields[1])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended while we read
    if run == 0:
        return None
    return run / 1e9, wait / 1e9


def _share(before: tuple[float, float] | None, after: tuple[float, float] | None) -> \
        float | None:
    """The share of its ready time the process ran between two :func:`cpu_clock` readings."""
    if before is None or after is None:
        return None
    ran, waited = after[0] - before[0], after[1] - before[1]
    if ran <= 0 or waited < 0:
        return None
    return ran / (ran + waited)


def _key(study: Study, model: str, device: str) -> str:
    from archlab.version import __version__

    train = study.train_for(model)
    ident = {"layers": [layer.to_config() for layer in study.models[model].layers],
             "batch_size": train.batch_size, "optimizer": train.optimizer.to_config(),
             "dataset": study.data.dataset_name, "input": list(study.data.info.image_shape),
             "device": device,
             "threads": torch.get_num_threads(), "torch": torch.__version__,
             "archlab": __version__, "cpu": cpu_model()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def _write_cache(path: Path, key: str, timing: StepTiming) -> None:
    put_cache(path, key, {k: v for k, v in asdict(timing).items() if k != "cached"})


def _measure(study: Study, model: str, steps: int, device: str) -> StepTiming:
    from archlab.layout import prefer_channels_last
    from archlab.optim import make_optimizer

    load = load_per_core()
    train = study.train_for(model)
    # Shapes only, then cheap values: a step's time does not depend on the initial weights,
    # and Keras's truncated-normal init of m10's 38 M weights alone takes ~5 s.
    built = build_model(study, model, device="meta")
    built.module.to_empty(device=device)
    with torch.no_grad():
        for p in built.module.parameters():
            p.uniform_(-0.05, 0.05)
        for name, buf in built.module.named_buffers():
            buf.fill_(1 if name.endswith("running_var") else 0)
    prefer_channels_last(built.module, built.input_shape, train.batch_size)  # as fit() does
    opt, _ = make_optimizer(train.optimizer, built.module.parameters())
    full = train.batch_size
    small = timed_batch(built.macs_per_sample, full, device)
    h, w, c = built.input_shape
    gen = torch.Generator().manual_seed(0)
    xb = torch.rand(full, c, h, w, generator=gen).to(device)
    yb = torch.randint(0, built.output_shape[0], (full,), generator=gen).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step(bs: int) -> float:
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(built.module(xb[:bs]), yb[:bs])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        return time.perf_counter() - t0

    if small < full:
        return _two_batch_timing(step, small, min(full, 4 * small), full, load)
    warm = step(full)  # the first steps pay one-off costs (allocation, kernel selection)
    if warm < 0.5:
        step(full)
    # Small models take milliseconds a step, where one scheduler hiccup doubles a step: they
    # get more steps (a quarter second's worth, up to 50), and a spread that ignores outliers.
    times: list[float] = []
    clock = cpu_clock()
    started = time.perf_counter()
    while True:
        times.append(step(full))
        elapsed = time.perf_counter() - started
        if len(times) >= 2 and elapsed > STEP_BUDGET_S:
            break
        if len(times) >= max(2, steps) and (elapsed > 0.25 or len(times) >= 50):
            break
    median = statistics.median(times)
    if len(times) >= 8:
        q1, _, q3 = statistics.quantiles(times, n=4)
        spread = (q3 - q1) / median
    else:
        spread = (max(times) - min(times)) / median
    return StepTiming(median / full, spread, load, time.time(), _share(clock, cpu_clock()))


def _two_batch_timing(step: Any, b1: int, b2: int, full: int,
                      load: float | None) -> StepTiming:
    """A heavy model's step at batch ``full`` from steps at two smaller batches: a step costs
    ``a + c·batch``, where ``a`` (the optimizer step, reading a Dense layer's weights) does not
    shrink with the batch. m10 at batch 3 cost 2.7x its full-batch time per sample: scaling one
    small batch up would project 82 h instead of 30 h."""
    step(b1)  # warm-up
    # The small batch on both sides of the big one: a burst of load that hits one of them
    # shows in the spread between the two (each step of m10 here takes about a second).
    clock = cpu_clock()
    t1 = [step(b1)]
    m2 = step(b2)
    t1.append(step(b1))
    m1 = statistics.mean(t1)
    per_sample = max(0.0, (m2 - m1) / (b2 - b1)) if b2 > b1 else m1 / b1
    seconds = max(m1, m1 + per_sample * (full - b1))  # never below the smaller batch's step
    spread = (max(t1) - min(t1)) / m1
    return StepTiming(seconds / full, spread, load, time.time(), _share(clock, cpu_clock()))


def timed_batch(macs_per_sample: int, batch_size: int, device: str) -> int:
    """The batch a projection times: the model's own, or on the CPU a smaller one when a step
    would take over 4x :data:`TIMED_STEP_S` (forward and backward about 3x the forward MACs):
    a quarter of the batch at most, so that the second timed batch (4x it) spans enough of the
    range to extrapolate from."""
    if not device.startswith("cpu"):
        return batch_size
    step_s = 3 * macs_per_sample * batch_size / ASSUMED_MACS_PER_S
    if step_s <= 4 * TIMED_STEP_S:
        return batch_size
    small = round(batch_size * TIMED_STEP_S / step_s)
    return max(min(2, batch_size), small)  # 2 at least: BatchNormalization needs two


def step_timing(study: Study, model: str, *, steps: int = 3, device: str = "cpu",
                use_cache: bool = True, retime: bool = False) -> StepTiming:
    """One training step of ``model``, per sample: from the cache, else timed (and cached
    unless starved: see the module doc). ``retime`` times it again whatever the cache holds
    (and caches the new timing)."""
    path = timings_cache_path()
    key = _key(study, model, device)
    cached: StepTiming | None = None
    if use_cache and not retime:
        entry = read_cache(path).get(key)
        if isinstance(entry, dict):
            try:
                cached = StepTiming(**entry, cached=True)
            except TypeError:  # written by another version: measure again
                cached = None
            if cached is not None:
                now = load_per_core()
                quiet_now = now is not None and now <= BUSY_LOAD_PER_CORE
                # Steps that vary on a quiet machine vary anyway (a tiny model, say): only a
                # timing taken while the machine was busy is worth taking again.
                if not cached.busy or not quiet_now:
                    _seen.append((model, cached))
                    return cached
    timing = _measure(study, model, steps, device)
    # A starved timing says how loaded the machine was, not how fast the model trains: never
    # kept for later (where the kernel does not tell the share, a busy machine's timing is
    # kept only when nothing better is cached).
    unknown_and_busy = timing.cpu_share is None and timing.busy and cached is not None
    if use_cache and not timing.starved and not unknown_and_busy:
        _write_cache(path, key, timing)
    _seen.append((model, timing))
    return timing


def _sample_steps(study: Study, model: str) -> float:
    """The whole training of ``model`` in training-step samples: every epoch's steps plus the
    evaluation passes (validation each epoch, train/val/test at the end; a forward pass costs
    about a third of a training step)."""
    train = study.train_for(model)
    info = study.data.info
    n_train, n_test = info.train_size, info.test_size
    split = study.data.validation
    n_val = n_test if split == "test" else round(n_train * split.split)  # type: ignore[union-attr]
    n_train -= 0 if split == "test" else n_val
    forward_samples = n_val * train.epochs + n_train + n_val + n_test
    return n_train * train.epochs + forward_samples / 3


def projected_range(study: Study, model: str, *, steps: int = 3, device: str = "cpu",
                    use_cache: bool = True, retime: bool = False) -> tuple[float, float]:
    """How long ``model``'s whole training should take, as (shortest, longest) seconds.

    The shortest: the step timing scaled to the CPU share of a quiet machine, less the
    projection's error; the longest: the step as timed (at the load of that moment), plus the
    steps' spread and the projection's error (see the module doc)."""
    timing = step_timing(study, model, steps=steps, device=device, use_cache=use_cache,
                         retime=retime)
    samples = _sample_steps(study, model)
    error = 1.0 + max(MODEL_ERROR, timing.spread / 2)
    return (timing.quiet_seconds_per_sample * samples / error,
            timing.seconds_per_sample * samples * error)


def projected_seconds(study: Study, model: str, *, steps: int = 3,
                      device: str = "cpu", use_cache: bool = True) -> float:
    """The model's whole training from its step time as timed (see :func:`step_timing`), one
    number: what the packing and search decisions use. Users see :func:`projected_range`."""
    per_sample = step_timing(study, model, steps=steps, device=device,
                             use_cache=use_cache).seconds_per_sample
    return per_sample * _sample_steps(study, model)


# The timings used since the last projection_note(): the CLI prints the table first (row by
# row, through projected_seconds) and says afterwards whether to trust it.
_seen: list[tuple[str, StepTiming]] = []


def projection_note() -> str | None:
    """Why the projections made since the last call are unreliable, or None; then forget them."""
    seen = list(_seen)
    _seen.clear()
    reasons = []
    starved = [t for _, t in seen if t.starved]
    if starved:
        share = min(t.cpu_share or 1.0 for t in starved)
        load = max((t.load_per_core or 0.0) for t in starved) * (os.cpu_count() or 1)
        reasons.append(f"archlab got only {share:.0%} of the CPU time it asked for while timing "
                       f"(load average {load:.1f} on {os.cpu_count() or 1} cores): the range "
                       "runs from a quiet machine's time to this load's, and these timings "
                       "are not cached")
    busy = [t.load_per_core for _, t in seen
            if t.busy and not t.starved and t.load_per_core is not None and not t.cached]
    if busy and not starved:  # (a starved timing's reason names the load already)
        cores = os.cpu_count() or 1
        reasons.append(f"the machine was busy while timing (load average {max(busy) * cores:.1f}"
                       f" on {cores} cores)")
    noisy = sorted({m for m, t in seen if t.spread > SPREAD_LIMIT})
    if noisy:
        reasons.append(f"the timed steps of {', '.join(noisy)} varied by more than "
                       f"{SPREAD_LIMIT:.0%}")
    if not reasons:
        return None
    return ("the projection is unsure: " + "; ".join(reasons) + ". Timings are cached per "
            "machine when archlab got its CPU share; `--retime` measures them again")
