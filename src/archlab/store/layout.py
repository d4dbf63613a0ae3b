"""Where a study's files live: the study directory and each run's directory inside it.

    <study dir>/store.sqlite                      the run store (archlab.store)
    <study dir>/study.yaml                        the study as last run
    <study dir>/runs/<run id>/checkpoint.safetensors   while the run trains
    <study dir>/runs/<run id>/weights.safetensors      when it finished
    <study dir>/runs/<run id>/predictions.safetensors  when it finished

The store records a SHA-256 of every file under ``runs/`` (:meth:`Store.run_dir` names a run's
directory); load them through :meth:`archlab.store.Store.verify_file` (or ``read_verified``),
never directly. Runs' safetensors files are written by :func:`atomic_save`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archlab.spec import Study

__all__ = ["DEFAULT_ROOT", "STUDY_FILE", "atomic_save", "study_dir"]

DEFAULT_ROOT = Path("archlab-runs")
STUDY_FILE = "study.yaml"


def study_dir(study: Study, out: str | Path | None = None) -> Path:
    """The study's directory: ``out``, else ``archlab-runs/<study name>``."""
    return Path(out) if out is not None else DEFAULT_ROOT / study.name


def atomic_save(tensors: dict[str, Any], path: Path, meta: dict[str, str]) -> None:
    """Write torch tensors as safetensors to ``path`` atomically: a reader sees the old file or
    the new one."""
    from safetensors.torch import save_file  # torch: only where a run's file is written

    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata=meta)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not also keep a half-written file
        raise
