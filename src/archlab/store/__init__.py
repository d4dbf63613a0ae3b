"""The run store: one SQLite file per study directory (WAL, safe for concurrent writers).

Small on purpose: a ``runs`` table (identity, resolved config, status, final metrics, timings,
peak memory), an ``epochs`` table (per-epoch history) and a ``files`` table (the SHA-256 and
size of every file a run keeps: checkpoint, weights, predictions; verified before anything
loads them). Every write is one short transaction, so a process killed at any moment leaves
either the old row or the new one, never half of one. Every failure, whatever the file holds
(another application's database, random bytes, flipped pages), surfaces as one
:class:`~archlab.errors.StoreError` line naming the file.

- ``schema``: file names, the SQL schema and its migrations, checksums
- ``records``: :class:`RunStatus` and :class:`RunRecord` (rows decoded and type-checked)
- ``database``: :class:`Store`
- ``layout``: the study directory (``study_dir``) and atomic writes of a run's files
"""

from archlab.store.database import Store
from archlab.store.layout import DEFAULT_ROOT, STUDY_FILE, atomic_save, study_dir
from archlab.store.records import DONE, FINAL_METRICS, RunRecord, RunStatus
from archlab.store.schema import (
    CHECKPOINT_FILE,
    PREDICTIONS_FILE,
    RUN_FILES,
    RUNS_DIR,
    SCHEMA_VERSION,
    STORE_FILE,
    WEIGHTS_FILE,
    file_digest,
)

__all__ = [
    "CHECKPOINT_FILE",
    "DEFAULT_ROOT",
    "DONE",
    "FINAL_METRICS",
    "PREDICTIONS_FILE",
    "RUNS_DIR",
    "RUN_FILES",
    "SCHEMA_VERSION",
    "STORE_FILE",
    "STUDY_FILE",
    "WEIGHTS_FILE",
    "RunRecord",
    "RunStatus",
    "Store",
    "atomic_save",
    "file_digest",
    "study_dir",
]
