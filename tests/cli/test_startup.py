"""Start-up: `archlab --help`, `archlab zoo list` and a validate refused by a schema error
import no torch, optuna or scipy (each a second or more); only the commands that use them do.
Checked in a fresh interpreter through sys.modules; the times are benchmarks/startup.py's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "optuna", "scipy", "matplotlib")

PROBE = """
import contextlib, io, json, sys
from archlab.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:  # argparse's --help
        code = exc.code
heavy = [m for m in HEAVY if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy, "out": out.getvalue(), "err": err.getvalue()}))
""".replace("HEAVY", repr(HEAVY))


def probe(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["zoo", "list"],
                                  ["zoo", "list", "--format", "json"], ["run", "--help"],
                                  ["zoo", "show", "quickstart"]])
def test_light_commands_import_nothing_heavy(argv: list[str]) -> None:
    result = probe(*argv)
    assert result["code"] == 0, result["err"]
    assert result["heavy"] == [], f"{argv} imported {result['heavy']}"


def test_zoo_list_from_the_index_still_lists_the_counts() -> None:
    result = probe("zoo", "list", "--format", "json")
    rows = {(r["study"], r["model"]): r for r in json.loads(result["out"])}
    assert rows["kernels-padding", "m10"]["total_params"] == 37_987_722
    assert result["heavy"] == []


def test_a_refused_validate_imports_no_torch(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndata: {dataset: mnist-sample}\nmodels:\n  m:\n    layers:\n"
                   "      - Dense: {units: 0}\n")
    result = probe("validate", str(bad))
    assert result["code"] == 2
    assert "field 'units'" in result["err"]
    assert result["heavy"] == []
    result = probe("run", str(bad))  # run refuses the same study before importing torch
    assert result["code"] == 2 and result["heavy"] == []


def test_a_valid_validate_imports_torch_where_it_builds() -> None:
    # The check above is meaningful: the same probe sees torch once a command needs it.
    result = probe("validate", "zoo:quickstart", "--no-timing")
    assert result["code"] == 0, result["err"]
    assert "torch" in result["heavy"]
