"""The run store: schema, read-only stores, corruption, statuses."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from archlab.errors import StoreError
from archlab.store import STORE_FILE, RunStatus, Store

METRICS = {"train_loss": 0.3, "train_accuracy": 0.9, "val_loss": 0.35, "val_accuracy": 0.88,
           "test_loss": 0.4, "test_accuracy": 0.87}
COUNTS = {"total_params": 100, "trainable_params": 90, "non_trainable_params": 10,
          "macs_per_sample": 1000}


def epoch_row(epoch: int) -> dict[str, float]:
    return {"epoch": epoch, "loss": 1.0 / epoch, "accuracy": 0.5, "val_loss": 0.9,
            "val_accuracy": 0.6, "seconds": 0.1}


def make_store(directory: Path, runs: int = 3) -> list[str]:
    """A store with ``runs`` finished runs of two epochs each (no training needed)."""
    ids = [f"run{i}" for i in range(runs)]
    with Store(directory) as store:
        store.set_meta(study="s", plan=ids)
        for i, rid in enumerate(ids):
            store.start_run(rid, f"m{i % 2}", i, 10 + i, {"model": f"m{i % 2}"}, {"torch": "x"})
            store.record_epoch(rid, epoch_row(1))
            store.finish_run(rid, status=RunStatus.FINISHED, metrics=METRICS, counts=COUNTS,
                             best_epoch=2, diverged_epoch=None, train_seconds=1.0,
                             wall_seconds=2.0, samples_per_second=100.0,
                             history=[epoch_row(1), epoch_row(2)])
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
