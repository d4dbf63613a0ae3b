"""The run store: one SQLite file per study directory (WAL, safe for concurrent writers).

Small on purpose: a ``runs`` table (identity, resolved config, status, final metrics, timings)
and an ``epochs`` table (per-epoch history). Every write is one short transaction, so a process
killed at any moment leaves either the old row or the new one, never half of one.
"""

from __future__ import annotations

import enum
import json
import math
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archlab.errors import StoreError

if TYPE_CHECKING:
    from archlab.run.config import RunConfig

SCHEMA_VERSION = 1
STORE_FILE = "store.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,          -- running | finished | diverged | failed | interrupted
    config TEXT NOT NULL,          -- JSON: resolved model spec, train, data, seed
    epochs_done INTEGER NOT NULL DEFAULT 0,
    best_epoch INTEGER,
    diverged_epoch INTEGER,
    error TEXT,
    train_loss REAL, train_accuracy REAL,
    val_loss REAL, val_accuracy REAL,
    test_loss REAL, test_accuracy REAL,
    total_params INTEGER, trainable_params INTEGER, non_trainable_params INTEGER,
    macs_per_sample INTEGER,
    train_seconds REAL, wall_seconds REAL, samples_per_second REAL,
    environment TEXT,              -- JSON: versions, threads, hardware
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    loss REAL, accuracy REAL, val_loss REAL, val_accuracy REAL, seconds REAL,
    PRIMARY KEY (run_id, epoch)
);
"""

FINAL_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                 "test_accuracy")


class RunStatus(str, enum.Enum):
    """A run's state in the store. ``finished`` and ``diverged`` are final: a rerun skips them;
    the others are retried (resuming from the last epoch checkpoint)."""

    RUNNING = "running"
    FINISHED = "finished"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def is_finished(self) -> bool:
        """True for the final states a rerun keeps (finished or diverged)."""
        return self in (RunStatus.FINISHED, RunStatus.DIVERGED)

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

    @cached_property
    def config(self) -> RunConfig:
        """The run's typed config (parsed from the stored JSON on first use)."""
        from archlab.run.config import RunConfig

        return RunConfig.from_json(self.config_json)


def _nan_to_none(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


class Store:
    """Open (creating if needed) the store in ``directory``.

    ``readonly=True`` writes nothing at all (no directory, no schema, no WAL switch): for
    ``results``/``report`` on a finished study, possibly on a read-only or archived mount.
    """

    def __init__(self, directory: str | Path, *, create: bool = True,
                 readonly: bool = False) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STORE_FILE
        self.readonly = readonly
        if (readonly or not create) and not self.path.is_file():
            raise StoreError(f"{self.directory}: no archlab store here (expected {STORE_FILE}); "
                             "run a study first with `archlab run`")
        try:
            if readonly:
                self._db = self._connect_readonly()
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                self._check_version(version)
                return
            self.directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 60000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            with self._tx() as db:
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                self._check_version(version)
                if version == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot open store ({exc})") from None

    def _connect_readonly(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60.0, isolation_level=None)
        try:
            # The first read opens the WAL index (-shm); SQLite must create it when absent,
            # which a read-only directory forbids (SQLITE_CANTOPEN).
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            db.close()
            wal = Path(f"{self.path}-wal")
            if wal.exists() and wal.stat().st_size > 0:
                # immutable=1 would silently ignore the committed rows still in the WAL.
                raise StoreError(f"{self.path}: read-only store with an un-checkpointed "
                                 f"write-ahead log ({wal.name}); open it once where it is "
                                 "writable (e.g. `archlab results` on a writable copy)") from None
            # Nothing can change a file nobody may write: read it without locks or a WAL index.
            db = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
        db.execute("PRAGMA query_only = ON")  # defence in depth: a stray write fails loudly
        return db

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema v{version} is newer than this "
                             f"archlab (v{SCHEMA_VERSION}); upgrade archlab")
        if self.readonly and version == 0:
            raise StoreError(f"{self.path}: not an archlab store (no schema version)")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise StoreError(f"{self.path}: store opened read-only; cannot write")
        # BEGIN IMMEDIATE takes the write lock up front, so concurrent writers queue on
        # busy_timeout instead of failing mid-transaction; retry if even that times out.
        for attempt in range(20):
            try:
                self._db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(0.05 * (attempt + 1))
        else:  # pragma: no cover - needs a writer holding the lock for minutes
            raise StoreError(f"{self.path}: store stayed locked; is another archlab hung?")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    # -- study-level metadata -------------------------------------------------------------

    def set_meta(self, **values: Any) -> None:
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in values.items()])

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    # -- runs -------------------------------------------------------------------------------

    def start_run(self, run_id: str, model: str, repeat: int, seed: int,
                  config: dict[str, Any], environment: dict[str, Any]) -> None:
        """Insert the run as `running`, or mark an existing unfinished one running again."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (run_id, model, repeat, seed, status, config, environment, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?) "
                "ON CONFLICT(run_id) DO UPDATE SET status='running', error=NULL, "
                "environment=excluded.environment, updated_at=excluded.updated_at",
                (run_id, model, repeat, seed, json.dumps(config, sort_keys=True),
                 json.dumps(environment), now, now))

    def record_epoch(self, run_id: str, row: dict[str, float]) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (run_id, row["epoch"], _nan_to_none(row["loss"]),
                        _nan_to_none(row["accuracy"]), _nan_to_none(row["val_loss"]),
                        _nan_to_none(row["val_accuracy"]), row["seconds"]))
            db.execute("UPDATE runs SET epochs_done=?, updated_at=? WHERE run_id=?",
                       (row["epoch"], time.time(), run_id))

    def truncate_epochs(self, run_id: str, keep: int) -> None:
        """Forget epochs after ``keep`` (a resumed run restarts from its checkpoint)."""
        with self._tx() as db:
            db.execute("DELETE FROM epochs WHERE run_id=? AND epoch>?", (run_id, keep))
            db.execute("UPDATE runs SET epochs_done=? WHERE run_id=?", (keep, run_id))

    def finish_run(self, run_id: str, *, status: RunStatus | str, metrics: dict[str, float],
                   counts: dict[str, int], best_epoch: int | None, diverged_epoch: int | None,
                   train_seconds: float, wall_seconds: float, samples_per_second: float,
                   history: Sequence[dict[str, float]]) -> None:
        """Write the final state of a run (and its whole history) in one transaction."""
        with self._tx() as db:
            db.execute("DELETE FROM epochs WHERE run_id=?", (run_id,))
            db.executemany("INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?)", [
                (run_id, r["epoch"], _nan_to_none(r["loss"]), _nan_to_none(r["accuracy"]),
                 _nan_to_none(r["val_loss"]), _nan_to_none(r["val_accuracy"]), r["seconds"])
                for r in history])
            db.execute(
                "UPDATE runs SET status=?, epochs_done=?, best_epoch=?, diverged_epoch=?, "
                "error=NULL, train_loss=?, train_accuracy=?, val_loss=?, val_accuracy=?, "
                "test_loss=?, test_accuracy=?, total_params=?, trainable_params=?, "
                "non_trainable_params=?, macs_per_sample=?, train_seconds=?, wall_seconds=?, "
                "samples_per_second=?, updated_at=? WHERE run_id=?",
                (RunStatus(status).value, len(history), best_epoch, diverged_epoch,
                 *[_nan_to_none(metrics.get(k)) for k in FINAL_METRICS],
                 counts["total_params"], counts["trainable_params"],
                 counts["non_trainable_params"], counts["macs_per_sample"], train_seconds,
                 wall_seconds, samples_per_second, time.time(), run_id))

    def fail_run(self, run_id: str, error: str,
                 status: RunStatus | str = RunStatus.FAILED) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET status=?, error=?, updated_at=? WHERE run_id=? "
                       "AND status NOT IN ('finished', 'diverged')",
                       (RunStatus(status).value, error, time.time(), run_id))

    def status(self, run_id: str) -> RunStatus | None:
        row = self._db.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return RunStatus(row[0]) if row else None

    def runs(self, *, models: Sequence[str] | None = None,
             run_ids: Sequence[str] | None = None) -> list[RunRecord]:
        """Runs in insertion order, optionally only some models or ids."""
        rows = self._db.execute("SELECT * FROM runs ORDER BY created_at, model, repeat")
        names = [d[0] for d in rows.description]
        out = []
        for values in rows.fetchall():
            r = dict(zip(names, values, strict=True))
            if models is not None and r["model"] not in models:
                continue
            if run_ids is not None and r["run_id"] not in run_ids:
                continue
            out.append(RunRecord(
                run_id=r["run_id"], model=r["model"], repeat=r["repeat"], seed=r["seed"],
                status=RunStatus(r["status"]), config_json=json.loads(r["config"]),
                epochs_done=r["epochs_done"],
                best_epoch=r["best_epoch"], diverged_epoch=r["diverged_epoch"], error=r["error"],
                metrics={k: r[k] for k in FINAL_METRICS if r[k] is not None},
                total_params=r["total_params"], trainable_params=r["trainable_params"],
                non_trainable_params=r["non_trainable_params"],
                macs_per_sample=r["macs_per_sample"], train_seconds=r["train_seconds"],
                wall_seconds=r["wall_seconds"], samples_per_second=r["samples_per_second"],
                environment=json.loads(r["environment"] or "{}")))
        return out

    def history(self, run_id: str) -> list[dict[str, float]]:
        rows = self._db.execute(
            "SELECT epoch, loss, accuracy, val_loss, val_accuracy, seconds FROM epochs "
            "WHERE run_id=? ORDER BY epoch", (run_id,))
        keys = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
        return [{k: (math.nan if v is None else v) for k, v in zip(keys, row, strict=True)}
                for row in rows]

    def integrity_check(self) -> str:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]
