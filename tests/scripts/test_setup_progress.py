"""scripts/setup.sh says what each step does before it starts and how long it took, so a
minutes-long apt install is never silent. pip and apt-get are stand-ins here: nothing installs."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stand_in(path: Path, body: str) -> Path:
    path.write_text(f"#!/usr/bin/env bash\necho \"$0 $*\" >> \"{path.parent}/calls\"\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def run_setup(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    python = stand_in(bin_dir / "python", "exit 0")
    stand_in(bin_dir / "apt-get", "sleep 1")
    stand_in(bin_dir / "id", "echo 0")  # as root, where apt runs
    return subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                               "PYTHON": str(python), **env})


def test_every_step_is_announced_then_timed(tmp_path: Path) -> None:
    done = run_setup(tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    starts = [line for line in lines if re.fullmatch(r"setup \[\d/3\] .+ \.\.\.", line)]
    ends = [line for line in lines if re.fullmatch(r"setup \[\d/3\] done in \d+ s", line)]
    assert len(starts) == len(ends) == 3
    assert "torch==2.13.0" in starts[0] and "-e .[" in starts[1]
    assert "Chromium" in starts[2]
    assert any("apt-get install chromium" in line for line in lines)  # the slow part, named
    # The apt step's own time is measured (the stand-in apt-get sleeps 1 s twice).
    assert int(ends[2].split()[-2]) >= 2
    assert re.fullmatch(r"archlab is set up in \d+ s: .*", lines[-1])
    calls = (tmp_path / "bin" / "calls").read_text()
    assert "pip install --quiet torch==2.13.0" in calls and "apt-get update -qq" in calls


def test_skipped_steps_say_so(tmp_path: Path) -> None:
    done = run_setup(tmp_path, ARCHLAB_SKIP_TORCH="1", ARCHLAB_SKIP_APT="1")
    assert done.returncode == 0, done.stderr
    assert "setup [1/3] skipped: torch" in done.stdout
    assert "setup [3/3] skipped: apt packages" in done.stdout
    assert "torch==" not in (tmp_path / "bin" / "calls").read_text()
