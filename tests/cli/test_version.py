"""One version, numbered in one place (archlab/version.py), seen everywhere."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import tomllib

import archlab
from archlab.version import __version__

ROOT = Path(__file__).resolve().parents[2]


def test_this_release_is_0_3_0() -> None:
    assert __version__ == archlab.__version__ == "0.3.0"


def test_pyproject_reads_the_version_from_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]  # no second copy to forget
    assert project["project"]["dynamic"] == ["version"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "archlab.version.__version__"


def test_installed_metadata_and_cli_agree() -> None:
    assert importlib.metadata.version("archlab") == __version__
    done = subprocess.run([sys.executable, "-m", "archlab", "--version"], capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout == f"archlab {__version__}\n"

