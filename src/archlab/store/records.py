"""What the store holds, decoded: run statuses and run records."""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archlab.plan import RunConfig

__all__ = ["DONE", "FINAL_METRICS", "RunRecord", "RunStatus", "decode_run", "nan_to_none", "number"]

FINAL_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                 "test_accuracy")


class RunStatus(str, enum.Enum):
    """A run's state in the store. ``finished``, ``diverged`` and ``pruned`` (a search trial
    stopped by its pruner; ``epochs_done`` is the epoch it was pruned at) are final: a rerun
    skips them; the others are retried (resuming from the last epoch checkpoint)."""

    RUNNING = "running"
    FINISHED = "finished"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    PRUNED = "pruned"

    def is_finished(self) -> bool:
        """True for the final states a rerun keeps (finished, diverged or pruned)."""
        return self in (RunStatus.FINISHED, RunStatus.DIVERGED, RunStatus.PRUNED)

    def __str__(self) -> str:
        return self.value


DONE = tuple(s for s in RunStatus if s.is_finished())


@dataclass(frozen=True)
class RunRecord:
    """One row of the ``runs`` table, decoded."""

    run_id: str
    model: str
    repeat: int
    seed: int
    status: RunStatus
    config_json: dict[str, Any]
    epochs_done: int
    best_epoch: int | None
    diverged_epoch: int | None
    error: str | None
    metrics: dict[str, float]
    total_params: int | None
    trainable_params: int | None
    non_trainable_params: int | None
    macs_per_sample: int | None
    train_seconds: float | None
    wall_seconds: float | None
    samples_per_second: float | None
    environment: dict[str, Any]
    #: The process's peak resident memory when the run ended (a lifetime peak: with
    #: ``--jobs 1`` every run shares one process; in the pool each run has its own).
    peak_rss_bytes: int | None = None
    warnings: tuple[str, ...] = ()

    @property
    def pruned_epoch(self) -> int | None:
        """The epoch a pruned run was stopped at (its last recorded epoch); None otherwise."""
        return self.epochs_done if self.status is RunStatus.PRUNED else None

    @cached_property
    def config(self) -> RunConfig:
        """The run's typed config (parsed from the stored JSON on first use)."""
        from archlab.plan import RunConfig

        return RunConfig.from_json(self.config_json)


def nan_to_none(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"expected a number, found {v!r:.40}")
    return v


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, found {v!r:.40}")
    return v


def _opt_int(v: Any) -> int | None:
    return None if v is None else _int(v)


def _opt_number(v: Any) -> float | None:
    return None if v is None else number(v)


def _json_object(text: Any) -> dict[str, Any]:
    value = json.loads(text or "{}")
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, found {text!r:.40}")
    return value


def decode_run(r: dict[str, Any]) -> RunRecord:
    """A ``runs`` row as a RunRecord, checking every type (a damaged page can change them)."""
    if not all(isinstance(r[k], str) for k in ("run_id", "model", "status", "config")):
        raise TypeError("text column holds another type")
    warnings = json.loads(r.get("warnings") or "[]")
    if not isinstance(warnings, list):
        raise TypeError("warnings is not a list")
    return RunRecord(
        run_id=r["run_id"], model=r["model"], repeat=_int(r["repeat"]),
        seed=_int(r["seed"]), status=RunStatus(r["status"]),
        config_json=_json_object(r["config"]), epochs_done=_int(r["epochs_done"]),
        best_epoch=_opt_int(r["best_epoch"]), diverged_epoch=_opt_int(r["diverged_epoch"]),
        error=None if r["error"] is None else str(r["error"]),
        metrics={k: number(r[k]) for k in FINAL_METRICS if r[k] is not None},
        total_params=_opt_int(r["total_params"]),
        trainable_params=_opt_int(r["trainable_params"]),
        non_trainable_params=_opt_int(r["non_trainable_params"]),
        macs_per_sample=_opt_int(r["macs_per_sample"]),
        train_seconds=_opt_number(r["train_seconds"]),
        wall_seconds=_opt_number(r["wall_seconds"]),
        samples_per_second=_opt_number(r["samples_per_second"]),
        environment=_json_object(r["environment"]),
        peak_rss_bytes=_opt_int(r.get("peak_rss_bytes")),  # absent from v1 stores
        warnings=tuple(str(w) for w in warnings))
