"""The run store: schema, read-only stores, corruption, statuses."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from archlab.errors import StoreError
from archlab.store import (
    CHECKPOINT_FILE,
    PREDICTIONS_FILE,
    RUNS_DIR,
    SCHEMA_VERSION,
    STORE_FILE,
    WEIGHTS_FILE,
    RunStatus,
    Store,
)

METRICS = {"train_loss": 0.3, "train_accuracy": 0.9, "val_loss": 0.35, "val_accuracy": 0.88,
           "test_loss": 0.4, "test_accuracy": 0.87}
COUNTS = {"total_params": 100, "trainable_params": 90, "non_trainable_params": 10,
          "macs_per_sample": 1000}


def epoch_row(epoch: int) -> dict[str, float]:
    return {"epoch": epoch, "loss": 1.0 / epoch, "accuracy": 0.5, "val_loss": 0.9,
            "val_accuracy": 0.6, "seconds": 0.1}


def make_store(directory: Path, runs: int = 3, epochs: int = 2) -> list[str]:
    """A store with ``runs`` finished runs of ``epochs`` epochs each (no training needed)."""
    ids = [f"run{i}" for i in range(runs)]
    layers = [{"Dense": {"units": 16 * j, "activation": "relu"}} for j in range(1, 12)]
    with Store(directory) as store:
        store.set_meta(study="s", plan=ids)
        for i, rid in enumerate(ids):
            store.start_run(rid, f"m{i % 2}", i, 10 + i, {"model": f"m{i % 2}", "layers": layers},
                            {"torch": "x"})
            store.record_epoch(rid, epoch_row(1))
            store.finish_run(rid, status=RunStatus.FINISHED, metrics=METRICS, counts=COUNTS,
                             best_epoch=2, diverged_epoch=None, train_seconds=1.0,
                             wall_seconds=2.0, samples_per_second=100.0,
                             history=[epoch_row(e) for e in range(1, epochs + 1)])
    return ids


@contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make ``directory`` and its files really read-only, even for root.

    As root, chmod stops nothing, so the files and the directory are made immutable with
    ``chattr +i`` (which root obeys); the test skips where the filesystem lacks it. A probe
    write checks that the directory is read-only before the test relies on it.
    """
    paths = [*sorted(directory.iterdir()), directory]
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True)
        if done.returncode != 0:
            subprocess.run(["chattr", "-i", *map(str, paths)], capture_output=True)
            pytest.skip(f"chattr +i unsupported here: {done.stderr.decode().strip()}")
        undo = ["chattr", "-i", *map(str, paths)]
    else:
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        undo = []
    try:
        with pytest.raises(OSError):
            (directory / "probe").touch()
        with pytest.raises(OSError), open(directory / STORE_FILE, "ab"):
            pass
        yield
    finally:
        if undo:
            subprocess.run(undo, check=True)
        else:
            for p, mode in modes.items():
                p.chmod(mode)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# -- read-only stores ------------------------------------------------------------------------


def test_readonly_store_reads_a_read_only_directory(tmp_path: Path) -> None:
    ids = make_store(tmp_path / "s")
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "s", copy)
    assert sorted(p.name for p in copy.iterdir()) == [STORE_FILE]  # closed cleanly: no WAL
    before = snapshot(copy)
    with read_only(copy):
        with pytest.raises(StoreError, match="cannot open store"):
            Store(copy)  # what `archlab results` did before: "attempt to write ..."
        with Store(copy, readonly=True) as store:
            runs = store.runs()
            assert [r.run_id for r in runs] == ids
            assert all(r.status is RunStatus.FINISHED for r in runs)
            assert runs[0].metrics == METRICS
            assert [h["epoch"] for h in store.history(ids[0])] == [1, 2]
            assert store.meta()["plan"] == ids
            assert store.status(ids[1]) is RunStatus.FINISHED
            with pytest.raises(StoreError, match="read-only"):
                store.set_meta(x=1)
    assert snapshot(copy) == before


def test_readonly_store_refuses_a_wal_it_cannot_read(tmp_path: Path) -> None:
    make_store(tmp_path)
    # A copy taken while a writer held the store: committed rows still in the -wal file.
    (tmp_path / f"{STORE_FILE}-wal").write_bytes(b"\0" * 64)
    with read_only(tmp_path), pytest.raises(StoreError) as info:
        Store(tmp_path, readonly=True)
    assert str(tmp_path / STORE_FILE) in str(info.value) and "\n" not in str(info.value)


def test_readonly_store_writes_nothing_in_a_writable_directory(tmp_path: Path) -> None:
    make_store(tmp_path)
    before = (tmp_path / STORE_FILE).read_bytes()
    with Store(tmp_path, readonly=True) as store:
        assert len(store.runs()) == 3
        for write in (lambda: store.set_meta(a=1), lambda: store.fail_run("run0", "x"),
                      lambda: store.start_run("new", "m", 0, 1, {}, {})):
            with pytest.raises(StoreError, match="read-only"):
                write()
    assert (tmp_path / STORE_FILE).read_bytes() == before


def test_readonly_store_never_creates_the_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nothing" / "here"
    with pytest.raises(StoreError, match="no archlab store here"):
        Store(missing, readonly=True)
    assert not (tmp_path / "nothing").exists()


def test_readonly_store_of_schema_v1_reads_without_upgrading(tmp_path: Path) -> None:
    make_v1_store(tmp_path)
    with Store(tmp_path, readonly=True) as store:
        (run,) = store.runs()
        assert run.status is RunStatus.FINISHED and run.peak_rss_bytes is None
        with pytest.raises(StoreError, match="not verifiable"):
            store.verify_file("old", WEIGHTS_FILE)
    assert user_version(tmp_path) == 1


# -- schema and migration --------------------------------------------------------------------

#: Schema v1 exactly as archlab 0.1 wrote it (frozen here: it is what old stores hold).
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (run_id TEXT PRIMARY KEY, model TEXT NOT NULL, repeat INTEGER NOT NULL,
    seed INTEGER NOT NULL, status TEXT NOT NULL, config TEXT NOT NULL,
    epochs_done INTEGER NOT NULL DEFAULT 0, best_epoch INTEGER, diverged_epoch INTEGER,
    error TEXT, train_loss REAL, train_accuracy REAL, val_loss REAL, val_accuracy REAL,
    test_loss REAL, test_accuracy REAL, total_params INTEGER, trainable_params INTEGER,
    non_trainable_params INTEGER, macs_per_sample INTEGER, train_seconds REAL,
    wall_seconds REAL, samples_per_second REAL, environment TEXT, created_at REAL NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE epochs (run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL, loss REAL, accuracy REAL, val_loss REAL, val_accuracy REAL,
    seconds REAL, PRIMARY KEY (run_id, epoch));
INSERT INTO runs (run_id, model, repeat, seed, status, config, epochs_done, test_accuracy,
    environment, created_at, updated_at)
    VALUES ('old', 'mlp', 0, 1, 'finished', '{"model": "mlp"}', 1, 0.9, '{}', 1.0, 1.0);
INSERT INTO epochs VALUES ('old', 1, 0.5, 0.8, 0.6, 0.7, 1.0);
PRAGMA user_version = 1;
"""


def make_v1_store(directory: Path) -> None:
    """A store as archlab 0.1 left it: schema v1, one finished run with weights on disk."""
    db = sqlite3.connect(directory / STORE_FILE)
    db.executescript(V1_SCHEMA)
    db.close()
    (directory / RUNS_DIR / "old").mkdir(parents=True)
    (directory / RUNS_DIR / "old" / WEIGHTS_FILE).write_bytes(b"old weights")


def user_version(directory: Path) -> int:
    db = sqlite3.connect(f"file:{directory / STORE_FILE}?mode=ro", uri=True)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def columns(directory: Path, table: str) -> set[str]:
    db = sqlite3.connect(directory / STORE_FILE)
    try:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    finally:
        db.close()


def test_new_store_has_the_current_schema(tmp_path: Path) -> None:
    make_store(tmp_path, runs=1)
    assert user_version(tmp_path) == SCHEMA_VERSION == 4  # 4: Dropout's new masks
    assert "lr" in columns(tmp_path, "epochs")
    assert {"peak_rss_bytes", "warnings"} <= columns(tmp_path, "runs")
    assert columns(tmp_path, "files") == {"run_id", "name", "sha256", "size", "written_at"}


def test_v1_store_is_migrated_in_place_and_keeps_its_runs(tmp_path: Path) -> None:
    make_v1_store(tmp_path)
    with Store(tmp_path) as store:
        (run,) = store.runs()
        assert (run.run_id, run.status, run.metrics) == ("old", RunStatus.FINISHED,
                                                          {"test_accuracy": 0.9})
        assert store.history("old")[0]["val_accuracy"] == 0.7
        # Files already there are adopted at upgrade, so old studies keep their weights.
        assert store.verify_file("old", WEIGHTS_FILE) == tmp_path / RUNS_DIR / "old" / WEIGHTS_FILE
        store.finish_run("old", status=RunStatus.FINISHED, metrics=METRICS, counts=COUNTS,
                         best_epoch=1, diverged_epoch=None, train_seconds=1.0, wall_seconds=1.0,
                         samples_per_second=1.0, history=[epoch_row(1)], peak_rss_bytes=5)
        assert store.runs()[0].peak_rss_bytes == 5
    assert user_version(tmp_path) == SCHEMA_VERSION
    assert "peak_rss_bytes" in columns(tmp_path, "runs")
    with Store(tmp_path) as store:  # a second open finds the current version, changes nothing
        assert store.runs()[0].metrics == METRICS


def test_newer_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    make_store(tmp_path, runs=1)
    db = sqlite3.connect(tmp_path / STORE_FILE)
    db.execute("PRAGMA user_version = 99")
    db.close()
    for readonly in (False, True):
        with pytest.raises(StoreError, match="v99 is newer than this archlab") as info:
            Store(tmp_path, readonly=readonly)
        assert "\n" not in str(info.value)


# -- statuses, warnings, peak memory ---------------------------------------------------------


def test_statuses_round_trip_and_finished_runs_stay_finished(tmp_path: Path) -> None:
    assert [s for s in RunStatus if s.is_finished()] == [RunStatus.FINISHED, RunStatus.DIVERGED,
                                                         RunStatus.PRUNED]
    make_store(tmp_path, runs=1)
    with Store(tmp_path) as store:
        store.fail_run("run0", "late failure")  # a finished run is never un-finished
        assert store.status("run0") is RunStatus.FINISHED
        store.start_run("r", "m", 0, 1, {}, {})
        assert store.status("r") is RunStatus.RUNNING
        store.fail_run("r", "stopped", status=RunStatus.INTERRUPTED, peak_rss_bytes=7)
        (run,) = store.runs(run_ids=["r"])
        assert (run.status, run.error, run.peak_rss_bytes) == (RunStatus.INTERRUPTED,
                                                               "stopped", 7)
        store.start_run("r", "m", 0, 1, {}, {})  # a retry clears the error
        (run,) = store.runs(run_ids=["r"])
        assert (run.status, run.error) == (RunStatus.RUNNING, None)
        assert store.status("absent") is None


def test_warnings_accumulate_and_survive_finishing(tmp_path: Path) -> None:
    make_store(tmp_path, runs=1)
    with Store(tmp_path) as store:
        store.add_warning("run0", "checkpoint discarded: bad")
        store.add_warning("run0", "second")
        store.finish_run("run0", status=RunStatus.FINISHED, metrics=METRICS, counts=COUNTS,
                         best_epoch=1, diverged_epoch=None, train_seconds=1.0, wall_seconds=1.0,
                         samples_per_second=1.0, history=[epoch_row(1)],
                         peak_rss_bytes=123_456_789)
        (run,) = store.runs()
    assert run.warnings == ("checkpoint discarded: bad", "second")
    assert run.peak_rss_bytes == 123_456_789


# -- checksums -------------------------------------------------------------------------------


def test_verify_file_accepts_only_the_recorded_bytes(tmp_path: Path) -> None:
    make_store(tmp_path, runs=1)
    run_dir = tmp_path / RUNS_DIR / "run0"
    run_dir.mkdir(parents=True)
    weights = run_dir / WEIGHTS_FILE
    weights.write_bytes(bytes(range(256)) * 16)
    (run_dir / PREDICTIONS_FILE).write_bytes(b"p" * 100)
    with Store(tmp_path) as store:
        with pytest.raises(StoreError, match="no checksum in the store"):
            store.verify_file("run0", WEIGHTS_FILE)  # written but never recorded: not trusted
        store.finish_run("run0", status=RunStatus.FINISHED, metrics=METRICS, counts=COUNTS,
                         best_epoch=1, diverged_epoch=None, train_seconds=1.0, wall_seconds=1.0,
                         samples_per_second=1.0, history=[epoch_row(1)],
                         files=[WEIGHTS_FILE, PREDICTIONS_FILE])
        assert store.verify_file("run0", WEIGHTS_FILE) == weights
        assert store.read_verified("run0", PREDICTIONS_FILE) == b"p" * 100
        good = weights.read_bytes()
        flipped = bytearray(good)
        flipped[1000] ^= 0xFF
        weights.write_bytes(bytes(flipped))
        with pytest.raises(StoreError, match="SHA-256 differs") as info:
            store.verify_file("run0", WEIGHTS_FILE)
        assert str(weights) in str(info.value) and "\n" not in str(info.value)
        weights.write_bytes(good[:-4])
        with pytest.raises(StoreError, match="truncated or replaced"):
            store.verify_file("run0", WEIGHTS_FILE)
        weights.unlink()
        with pytest.raises(StoreError, match="missing"):
            store.verify_file("run0", WEIGHTS_FILE)
        weights.write_bytes(good)
        assert store.verify_file("run0", WEIGHTS_FILE) == weights
        store.forget_file("run0", WEIGHTS_FILE)
        with pytest.raises(StoreError, match="no checksum"):
            store.verify_file("run0", WEIGHTS_FILE)


def test_record_epoch_records_the_checkpoint_checksum(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.start_run("r", "m", 0, 1, {}, {})
        (tmp_path / RUNS_DIR / "r").mkdir(parents=True)
        ckpt = tmp_path / RUNS_DIR / "r" / CHECKPOINT_FILE
        ckpt.write_bytes(b"epoch 1")
        store.record_epoch("r", epoch_row(1), files=[CHECKPOINT_FILE])
        assert store.read_verified("r", CHECKPOINT_FILE) == b"epoch 1"
        ckpt.write_bytes(b"epoch 2")
        with pytest.raises(StoreError, match="SHA-256"):
            store.verify_file("r", CHECKPOINT_FILE)
        store.record_epoch("r", epoch_row(2), files=[CHECKPOINT_FILE])
        assert store.read_verified("r", CHECKPOINT_FILE) == b"epoch 2"
        # Finishing replaces the run's file list: the checkpoint is no longer pointed to.
        store.finish_run("r", status=RunStatus.DIVERGED, metrics={}, counts=COUNTS,
                         best_epoch=0, diverged_epoch=2, train_seconds=1.0, wall_seconds=1.0,
                         samples_per_second=0.0, history=[epoch_row(1), epoch_row(2)])
        with pytest.raises(StoreError, match="no checksum"):
            store.verify_file("r", CHECKPOINT_FILE)


# -- files that are not archlab stores, and damaged stores ----------------------------------


def foreign_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);"
                     "INSERT INTO users VALUES (1, 'ada');")
    db.close()


@pytest.mark.parametrize("content", ["another app's database", "random bytes", "a text file",
                                     "v1 tables missing"])
def test_a_file_that_is_not_an_archlab_store_is_refused_in_one_line(tmp_path: Path,
                                                                    content: str) -> None:
    path = tmp_path / STORE_FILE
    if content == "another app's database":
        foreign_database(path)
    elif content == "random bytes":
        path.write_bytes(random.Random(1).randbytes(20_000))
    elif content == "a text file":
        path.write_text("run_id,model\nabc,mlp\n" * 200)
    else:
        foreign_database(path)
        db = sqlite3.connect(path)
        db.execute("PRAGMA user_version = 1")  # claims to be ours
        db.close()
    before = path.read_bytes()
    for readonly in (False, True):
        with pytest.raises(StoreError) as info:
            Store(tmp_path, readonly=readonly)
        message = str(info.value)
        assert message.startswith(str(path)) and "\n" not in message
        assert "not an archlab store" in message or "damaged" in message
    assert path.read_bytes() == before  # our tables were never added to someone else's file


def every_operation(directory: Path, ids: list[str], readonly: bool) -> list[str]:
    """Run every Store operation on ``directory``; return the outcome of each. Anything but
    success or a one-line StoreError naming the store fails the test."""
    outcomes = []

    def attempt(name: str, call: Callable[[], object]) -> None:
        try:
            call()
            outcomes.append(f"{name}: ok")
        except StoreError as exc:
            assert "\n" not in str(exc) and str(directory) in str(exc), (name, str(exc))
            outcomes.append(f"{name}: StoreError")

    stores: list[Store] = []
    attempt("open", lambda: stores.append(Store(directory, readonly=readonly)))
    if not stores:
        return outcomes
    with stores[0] as store:
        attempt("runs", store.runs)
        attempt("meta", store.meta)
        attempt("status", lambda: store.status(ids[5]))
        attempt("integrity_check", store.integrity_check)
        for rid in ids:
            attempt("history", lambda rid=rid: store.history(rid))
        attempt("verify_file", lambda: store.verify_file(ids[0], WEIGHTS_FILE))
        attempt("set_meta", lambda: store.set_meta(touched=True))
        attempt("start_run", lambda: store.start_run("new", "m", 0, 1, {}, {}))
        attempt("record_epoch", lambda: store.record_epoch(ids[1], epoch_row(3)))
        attempt("finish_run", lambda: store.finish_run(
            ids[2], status=RunStatus.FINISHED, metrics=METRICS, counts=COUNTS, best_epoch=1,
            diverged_epoch=None, train_seconds=1.0, wall_seconds=1.0, samples_per_second=1.0,
            history=[epoch_row(1)]))
        attempt("fail_run", lambda: store.fail_run(ids[3], "x"))
        attempt("add_warning", lambda: store.add_warning(ids[4], "w"))
        attempt("runs again", store.runs)
    return outcomes


def test_every_single_page_flip_gives_a_result_or_one_store_error(tmp_path: Path) -> None:
    original = tmp_path / "original"
    ids = make_store(original, runs=40, epochs=12)
    data = (original / STORE_FILE).read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    pages = len(data) // page_size
    assert pages >= 27, pages  # enough runs that every kind of page is hit
    rng = random.Random(7)
    failures_seen = 0
    for k in range(1, 28):
        damaged = bytearray(data)
        damaged[(k - 1) * page_size:k * page_size] = rng.randbytes(page_size)
        for readonly in (False, True):
            copy = tmp_path / f"flip{k}-{'ro' if readonly else 'rw'}"
            copy.mkdir()
            (copy / STORE_FILE).write_bytes(bytes(damaged))
            outcomes = every_operation(copy, ids, readonly=readonly)
            failures_seen += sum("StoreError" in o for o in outcomes)
    assert failures_seen > 0  # the flips did damage something: the test exercised errors


def test_results_command_on_a_foreign_database_exits_2_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from archlab.cli import main

    foreign_database(tmp_path / STORE_FILE)
    assert main(["results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert str(tmp_path / STORE_FILE) in err
