"""The store's on-disk format: file names, the SQL schema and its migrations, checksums."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

__all__ = [
    "CHECKPOINT_FILE",
    "MIGRATIONS",
    "PREDICTIONS_FILE",
    "RUNS_DIR",
    "RUN_FILES",
    "SCHEMA_V1",
    "SCHEMA_VERSION",
    "STORE_FILE",
    "TABLES",
    "WEIGHTS_FILE",
    "file_digest",
    "sqlite_error_name",
]

SCHEMA_VERSION = 4
STORE_FILE = "store.sqlite"
RUNS_DIR = "runs"
CHECKPOINT_FILE = "checkpoint.safetensors"
WEIGHTS_FILE = "weights.safetensors"
PREDICTIONS_FILE = "predictions.safetensors"
#: The files a run may keep in its directory; the store holds a checksum for each one.
RUN_FILES = (CHECKPOINT_FILE, WEIGHTS_FILE, PREDICTIONS_FILE)

# Version 1: the three tables as archlab 0.1 wrote them. Each later version is a migration
# below, so a new store and an upgraded one go through the same statements.
SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,          -- a RunStatus value
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
CREATE TABLE epochs (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    loss REAL, accuracy REAL, val_loss REAL, val_accuracy REAL, seconds REAL,
    PRIMARY KEY (run_id, epoch)
)
"""
MIGRATIONS = {
    # v1 -> v2: file checksums, the run's peak RSS, warnings (e.g. a discarded checkpoint).
    2: """
ALTER TABLE runs ADD COLUMN peak_rss_bytes INTEGER;
ALTER TABLE runs ADD COLUMN warnings TEXT;     -- JSON list of one-line warnings
CREATE TABLE files (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    written_at REAL NOT NULL,
    PRIMARY KEY (run_id, name)
)
""",
    # v2 -> v3: the learning rate per epoch (NULL where it is constant: no schedule, no plateau).
    3: """
ALTER TABLE epochs ADD COLUMN lr REAL;
""",
    # v3 -> v4: no table changes; new numbers. Dropout draws its masks with archlab's cheaper
    # multiplier (a new random stream from the same seed), so runs of models with Dropout
    # get new run ids (RunConfig.identity) and an older archlab, which would add runs with
    # the old masks, refuses a v4 store. docs/reproduction.md, "Store format 4".
    4: "",
}
TABLES = {1: {"meta", "runs", "epochs"}, 2: {"meta", "runs", "epochs", "files"},
          3: {"meta", "runs", "epochs", "files"}, 4: {"meta", "runs", "epochs", "files"}}


def file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of ``path``."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def sqlite_error_name(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)  # Python >= 3.11
    if name:
        return str(name)
    text = str(exc)  # Python 3.10: the message is all there is
    for needle, code in (("disk is full", "SQLITE_FULL"), ("unable to open", "SQLITE_CANTOPEN"),
                         ("readonly", "SQLITE_READONLY"), ("not a database", "SQLITE_NOTADB")):
        if needle in text:
            return code
    return ""
