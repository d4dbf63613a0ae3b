"""A read-only look into a study's store while `archlab run` may still be writing it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def query(out: Path, sql: str) -> list[tuple[Any, ...]]:
    """``sql``'s rows from ``out``'s store; none while the store or its schema is not there
    yet."""
    path = out / "store.sqlite"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        return []
