"""The user's cache (header scans, decoded images) in a temporary folder for every test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    cache = tmp_path / "archlab-cache"
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(cache))
    return cache
