"""Where a study's files live: the study directory and each run's directory inside it.

    <study dir>/store.sqlite                      the run store (archlab.store)
    <study dir>/study.yaml                        the study as last run
    <study dir>/runs/<run id>/checkpoint.safetensors   while the run trains
    <study dir>/runs/<run id>/weights.safetensors      when it finished
    <study dir>/runs/<run id>/predictions.safetensors  when it finished

The store records a SHA-256 of every file under ``runs/``; load them through
:meth:`archlab.store.Store.verify_file` (or ``read_verified``), never directly.
"""

from __future__ import annotations

from pathlib import Path

from archlab.spec import Study
from archlab.store import RUNS_DIR

__all__ = ["DEFAULT_ROOT", "STUDY_FILE", "run_dir", "study_dir"]

DEFAULT_ROOT = Path("archlab-runs")
STUDY_FILE = "study.yaml"


def study_dir(study: Study, out: str | Path | None = None) -> Path:
    return Path(out) if out is not None else DEFAULT_ROOT / study.name


def run_dir(directory: str | Path, run_id: str) -> Path:
    """The directory of one run's files inside the study directory."""
    return Path(directory) / RUNS_DIR / run_id
