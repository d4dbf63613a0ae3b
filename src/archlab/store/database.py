"""The Store: one SQLite file per study directory (WAL, safe for concurrent writers)."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from archlab.errors import StoreError
from archlab.store.records import (
    DONE,
    FINAL_METRICS,
    RunRecord,
    RunStatus,
    decode_run,
    nan_to_none,
    number,
)
from archlab.store.schema import (
    MIGRATIONS,
    RUN_FILES,
    RUNS_DIR,
    SCHEMA_V1,
    SCHEMA_VERSION,
    STORE_FILE,
    TABLES,
    file_digest,
    sqlite_error_name,
)

__all__ = ["Store"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(method: Callable[Concatenate[Store, _P], _R]) -> Callable[Concatenate[Store, _P], _R]:
    """Turn any SQLite failure inside a Store method into one StoreError line naming the file."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    return wrapper


class Store:
    """Open (creating if needed) the store in ``directory``.

    ``readonly=True`` writes nothing at all (no directory, no schema, no migration): for
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
            self._open()
        except BaseException:
            if hasattr(self, "_db"):
                self._db.close()
            raise

    def _open(self) -> None:
        try:
            if self.readonly:
                self._db = self._connect_readonly()
                self.version = self._check_schema()
                return
            self.directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 60000")
            self._check_schema()  # before the WAL switch, which rewrites a foreign file's header
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            with self._tx() as db:
                self.version = self._check_schema()  # again: another process may have created it
                if self.version == 0:
                    self._script(db, SCHEMA_V1)
                for version in range(max(self.version, 1) + 1, SCHEMA_VERSION + 1):
                    self._script(db, MIGRATIONS[version])
                if self.version == 1:
                    self._adopt_files(db)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.version = SCHEMA_VERSION
        except sqlite3.Error as exc:
            raise self._error(exc, "cannot open store") from None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open store ({exc.strerror or exc})") from None

    def _connect_readonly(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60.0, isolation_level=None)
        try:
            # The first read opens the WAL index (-shm); SQLite must create it when absent,
            # which a read-only directory forbids (SQLITE_CANTOPEN).
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            db.close()
            if sqlite_error_name(exc) != "SQLITE_CANTOPEN":
                raise
            wal = Path(f"{self.path}-wal")
            if wal.exists() and wal.stat().st_size > 0:
                # immutable=1 would silently ignore the committed rows still in the WAL.
                raise StoreError(f"{self.path}: read-only store with an un-checkpointed "
                                 f"write-ahead log ({wal.name}); copy the study directory "
                                 "somewhere writable and read it there") from None
            # Nothing can change a file nobody may write: read it without locks or a WAL index.
            db = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
        db.execute("PRAGMA query_only = ON")  # defence in depth: a stray write fails loudly
        return db

    def _check_schema(self) -> int:
        """The store's schema version, after checking the file is an archlab store at all."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = {name for (name,) in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema v{version} is newer than this "
                             f"archlab (v{SCHEMA_VERSION}); upgrade archlab")
        expected = TABLES.get(version, set())
        if (version == 0 and (tables or self.readonly)) or not expected <= tables:
            # Someone else's database (or ours, damaged): never add our tables to it.
            raise StoreError(f"{self.path}: not an archlab store (schema v{version}, tables: "
                             f"{', '.join(sorted(tables)) or 'none'})")
        return version

    @staticmethod
    def _script(db: sqlite3.Connection, script: str) -> None:
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)

    def _adopt_files(self, db: sqlite3.Connection) -> None:
        # A v1 store recorded no checksums: trust the files it already has, once, at upgrade
        # (loading still checks their structure), so old studies keep their weights.
        now = time.time()
        for (run_id,) in db.execute("SELECT run_id FROM runs").fetchall():
            for name in RUN_FILES:
                path = self.run_dir(run_id) / name
                if path.is_file():
                    db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                               (run_id, name, *file_digest(path), now))

    def _error(self, exc: sqlite3.Error, doing: str = "store error") -> StoreError:
        code = sqlite_error_name(exc)
        if code == "SQLITE_FULL":
            return StoreError(f"{self.path}: disk full, cannot write the store ({exc})")
        if code in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in str(exc):
            return StoreError(f"{self.path}: damaged or not an archlab store ({exc})")
        return StoreError(f"{self.path}: {doing} ({exc})")

    def _damaged(self, what: str, exc: Exception) -> StoreError:
        return StoreError(f"{self.path}: damaged store: unreadable {what} "
                          f"({exc.__class__.__name__}: {exc})")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_dir(self, run_id: str) -> Path:
        """The directory holding a run's files (checkpoint, weights, predictions)."""
        return self.directory / RUNS_DIR / run_id

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise StoreError(f"{self.path}: store opened read-only; cannot write")
        # BEGIN IMMEDIATE takes the write lock up front, so concurrent writers queue on
        # busy_timeout (60 s) instead of failing mid-transaction.
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(f"{self.path}: store stayed locked for 60 s; is another "
                                 "archlab hung?") from None
            raise
        try:
            yield self._db
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back itself (disk full)
                self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    # -- study-level metadata -------------------------------------------------------------

    @_guarded
    def set_meta(self, **values: Any) -> None:
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in values.items()])

    @_guarded
    def meta(self) -> dict[str, Any]:
        rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        try:
            return {str(k): json.loads(v) for k, v in rows}
        except (TypeError, ValueError) as exc:
            raise self._damaged("study metadata", exc) from None

    # -- runs -------------------------------------------------------------------------------

    @_guarded
    def start_run(self, run_id: str, model: str, repeat: int, seed: int,
                  config: dict[str, Any], environment: dict[str, Any]) -> None:
        """Insert the run as `running`, or mark an existing unfinished one running again."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (run_id, model, repeat, seed, status, config, environment, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(run_id) DO UPDATE SET status=excluded.status, error=NULL, "
                "environment=excluded.environment, updated_at=excluded.updated_at",
                (run_id, model, repeat, seed, RunStatus.RUNNING.value,
                 json.dumps(config, sort_keys=True), json.dumps(environment), now, now))

    def _digests(self, run_id: str, files: Sequence[str]) -> list[tuple[Any, ...]]:
        # Hashed before the transaction, so other writers do not wait on the disk read.
        now = time.time()
        return [(run_id, name, *file_digest(self.run_dir(run_id) / name), now)
                for name in files]

    @_guarded
    def record_epoch(self, run_id: str, row: dict[str, float], *,
                     files: Sequence[str] = ()) -> None:
        """Record an epoch, and the checksums of ``files`` (names in the run's directory)
        just written for it, in one transaction."""
        digests = self._digests(run_id, files)
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (run_id, row["epoch"], nan_to_none(row["loss"]),
                        nan_to_none(row["accuracy"]), nan_to_none(row["val_loss"]),
                        nan_to_none(row["val_accuracy"]), row["seconds"], row.get("lr")))
            db.execute("UPDATE runs SET epochs_done=?, updated_at=? WHERE run_id=?",
                       (row["epoch"], time.time(), run_id))
            db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", digests)

    @_guarded
    def truncate_epochs(self, run_id: str, keep: int) -> None:
        """Forget epochs after ``keep`` (a resumed run restarts from its checkpoint)."""
        with self._tx() as db:
            db.execute("DELETE FROM epochs WHERE run_id=? AND epoch>?", (run_id, keep))
            db.execute("UPDATE runs SET epochs_done=? WHERE run_id=?", (keep, run_id))

    @_guarded
    def finish_run(self, run_id: str, *, status: RunStatus | str, metrics: dict[str, float],
                   counts: dict[str, int], best_epoch: int | None, diverged_epoch: int | None,
                   train_seconds: float, wall_seconds: float, samples_per_second: float,
                   history: Sequence[dict[str, float]], peak_rss_bytes: int | None = None,
                   files: Sequence[str] = ()) -> None:
        """Write the final state of a run (and its whole history) in one transaction.

        ``files`` are all the files the finished run keeps (their checksums replace every
        earlier record: the checkpoint is no longer pointed to)."""
        digests = self._digests(run_id, files)
        with self._tx() as db:
            db.execute("DELETE FROM epochs WHERE run_id=?", (run_id,))
            db.executemany("INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
                (run_id, r["epoch"], nan_to_none(r["loss"]), nan_to_none(r["accuracy"]),
                 nan_to_none(r["val_loss"]), nan_to_none(r["val_accuracy"]), r["seconds"],
                 r.get("lr")) for r in history])
            db.execute("DELETE FROM files WHERE run_id=?", (run_id,))
            db.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?)", digests)
            db.execute(
                "UPDATE runs SET status=?, epochs_done=?, best_epoch=?, diverged_epoch=?, "
                "error=NULL, train_loss=?, train_accuracy=?, val_loss=?, val_accuracy=?, "
                "test_loss=?, test_accuracy=?, total_params=?, trainable_params=?, "
                "non_trainable_params=?, macs_per_sample=?, train_seconds=?, wall_seconds=?, "
                "samples_per_second=?, peak_rss_bytes=?, updated_at=? WHERE run_id=?",
                (RunStatus(status).value, len(history), best_epoch, diverged_epoch,
                 *[nan_to_none(metrics.get(k)) for k in FINAL_METRICS],
                 counts["total_params"], counts["trainable_params"],
                 counts["non_trainable_params"], counts["macs_per_sample"], train_seconds,
                 wall_seconds, samples_per_second, peak_rss_bytes, time.time(), run_id))

    @_guarded
    def prune_run(self, run_id: str, *, epoch: int, counts: dict[str, int],
                  train_seconds: float, wall_seconds: float,
                  peak_rss_bytes: int | None = None) -> None:
        """Mark a run pruned after ``epoch`` (final: a rerun skips it). Its epochs up to
        ``epoch`` stay; its checkpoint is no longer pointed to (it never resumes)."""
        with self._tx() as db:
            db.execute("DELETE FROM epochs WHERE run_id=? AND epoch>?", (run_id, epoch))
            db.execute("DELETE FROM files WHERE run_id=?", (run_id,))
            db.execute(
                "UPDATE runs SET status=?, epochs_done=?, error=NULL, total_params=?, "
                "trainable_params=?, non_trainable_params=?, macs_per_sample=?, "
                "train_seconds=?, wall_seconds=?, peak_rss_bytes=?, updated_at=? "
                "WHERE run_id=?",
                (RunStatus.PRUNED.value, epoch, counts["total_params"],
                 counts["trainable_params"], counts["non_trainable_params"],
                 counts["macs_per_sample"], train_seconds, wall_seconds, peak_rss_bytes,
                 time.time(), run_id))

    @_guarded
    def fail_run(self, run_id: str, error: str, status: RunStatus | str = RunStatus.FAILED,
                 *, peak_rss_bytes: int | None = None) -> None:
        """Mark an unfinished run failed (or interrupted) with a one-line reason."""
        with self._tx() as db:
            db.execute("UPDATE runs SET status=?, error=?, "
                       "peak_rss_bytes=COALESCE(?, peak_rss_bytes), updated_at=? "
                       f"WHERE run_id=? AND status NOT IN ({', '.join('?' * len(DONE))})",
                       (RunStatus(status).value, error, peak_rss_bytes, time.time(), run_id,
                        *(s.value for s in DONE)))

    @_guarded
    def add_warning(self, run_id: str, warning: str) -> None:
        """Append a one-line warning to the run (kept when it finishes)."""
        with self._tx() as db:
            row = db.execute("SELECT warnings FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                return
            try:
                warnings = list(json.loads(row[0] or "[]"))
            except ValueError:
                warnings = []  # a damaged list is replaced rather than blocking the run
            db.execute("UPDATE runs SET warnings=? WHERE run_id=?",
                       (json.dumps([*warnings, warning]), run_id))

    @_guarded
    def status(self, run_id: str) -> RunStatus | None:
        row = self._db.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
        try:
            return RunStatus(row[0]) if row else None
        except ValueError as exc:
            raise self._damaged(f"status of run {run_id}", exc) from None

    @_guarded
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
            try:
                out.append(decode_run(r))
            except (TypeError, ValueError, KeyError) as exc:
                raise self._damaged(f"run {r.get('run_id')!r}", exc) from None
        return out

    @_guarded
    def history(self, run_id: str) -> list[dict[str, float]]:
        rows = self._db.execute(
            "SELECT epoch, loss, accuracy, val_loss, val_accuracy, seconds, lr FROM epochs "
            "WHERE run_id=? ORDER BY epoch", (run_id,)).fetchall()
        keys = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
        try:
            # `lr` only where the run recorded one (a schedule or ReduceLROnPlateau).
            return [{k: (math.nan if v is None else number(v)) for k, v in
                     zip(keys, row[:-1], strict=True)}
                    | ({} if row[-1] is None else {"lr": number(row[-1])}) for row in rows]
        except TypeError as exc:
            raise self._damaged(f"history of run {run_id}", exc) from None

    # -- files ------------------------------------------------------------------------------

    @_guarded
    def import_file(self, run_id: str, name: str, data: bytes) -> None:
        """Write a run's file from bytes made elsewhere (a Ray worker's checkpoint, weights,
        predictions) and record its checksum: written beside, synced, renamed into place, so
        a reader sees the old file or the new one, then hashed from disk as stored."""
        if name not in RUN_FILES:
            raise StoreError(f"run file name: Expected one of {', '.join(RUN_FILES)}, "
                             f"received {name!r}")
        path = self.run_dir(run_id) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        digests = self._digests(run_id, [name])
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", digests)

    @_guarded
    def forget_file(self, run_id: str, name: str) -> None:
        """Stop pointing to a run's file (deleted or discarded)."""
        with self._tx() as db:
            db.execute("DELETE FROM files WHERE run_id=? AND name=?", (run_id, name))

    @_guarded
    def read_verified(self, run_id: str, name: str) -> bytes:
        """The bytes of a run's file, after checking them against the store's SHA-256 and
        size (read once: what is checked is what the caller loads)."""
        path = self.run_dir(run_id) / name
        if self.version < 2:
            raise StoreError(f"{path}: not verifiable (store schema v{self.version} records no "
                             "checksums; open the store once where it is writable to upgrade)")
        row = self._db.execute("SELECT sha256, size FROM files WHERE run_id=? AND name=?",
                               (run_id, name)).fetchone()
        if row is None:
            raise StoreError(f"{path}: no checksum in the store for this file; not trusted")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{path}: missing (the store records it)") from None
        except OSError as exc:
            raise StoreError(f"{path}: unreadable ({exc.strerror or exc})") from None
        if len(data) != row[1]:
            raise StoreError(f"{path}: {len(data)} bytes where the store recorded {row[1]}; "
                             "truncated or replaced")
        if hashlib.sha256(data).hexdigest() != row[0]:
            raise StoreError(f"{path}: SHA-256 differs from the store's; damaged or replaced")
        return data

    def verify_file(self, run_id: str, name: str) -> Path:
        """The path of a run's file if it matches the store's checksum; StoreError otherwise."""
        self.read_verified(run_id, name)
        return self.run_dir(run_id) / name

    @_guarded
    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])
