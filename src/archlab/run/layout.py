"""Where a study's files live: the study directory and each run's directory inside it."""

from __future__ import annotations

from pathlib import Path

from archlab.spec import Study

DEFAULT_ROOT = Path("archlab-runs")


def study_dir(study: Study, out: str | Path | None = None) -> Path:
    return Path(out) if out is not None else DEFAULT_ROOT / study.name


