"""The CLI as a user meets it: start-up (--version, Ctrl-C), dry-run compute projections, errors.

`zoo` and `summary` are in test_zoo_cli.py.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

import archlab
from archlab import build_model, load_study
from archlab.cli import main

SRC = str(Path(archlab.__file__).resolve().parents[1])


def python(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run this interpreter on this checkout's archlab (as the console script would)."""
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False, **kwargs)  # type: ignore[call-overload]


def test_version_answers_fast_without_importing_torch() -> None:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        done = python("-m", "archlab", "--version")
        times.append(time.perf_counter() - start)
        assert done.returncode == 0 and done.stdout == f"archlab {archlab.__version__}\n"
    # Under 1 s on an idle machine (~0.1 s); the bound is generous for a loaded CI box, and
    # importing torch alone takes longer.
    assert statistics.median(times) < 2.0, times
    probe = python("-c", "import sys, archlab, archlab.cli; "
                   "print(archlab.__version__, 'torch' in sys.modules)")
    assert probe.stdout == f"{archlab.__version__} False\n", probe.stderr


def test_version_is_the_installed_distributions() -> None:
    assert archlab.__version__ == metadata.version("archlab")


def test_public_api_resolves_lazily() -> None:
    for name in archlab.__all__:
        assert getattr(archlab, name) is not None, name
    # The notebook-aware wrapper (archlab.notebook) over analysis.results.collect
    assert archlab.collect_results.__module__ == "archlab.notebook.results"
    assert "load_study" in dir(archlab)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        archlab.nope  # noqa: B018


@pytest.mark.parametrize("during", ["numpy", "torch"])
def test_ctrl_c_during_start_up_imports_is_quiet(during: str) -> None:
    """SIGINT while a command imports numpy or torch (seconds): exit 130, one line. (`zoo
    list` imports neither: validate does, numpy to read the study, torch to build it.)"""
    env = {**os.environ, "PYTHONPATH": SRC}
    # -X importtime reports each import as it completes: a submodule of `during` done means
    # `during` itself is still loading.
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "archlab", "validate",
                             "zoo:quickstart", "--no-timing"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        if line.startswith("import time:") and line.rsplit("|", 1)[1].strip().startswith(
                f"{during}."):
            proc.send_signal(signal.SIGINT)
            break
    else:
        pytest.fail(f"{during} was never imported")
    rest = proc.stderr.read()
    out = proc.stdout.read()
    assert proc.wait(timeout=120) == 130
    messages = [ln for ln in rest.splitlines() if not ln.startswith("import time:")]
    assert messages == ["interrupted"], rest[-2000:]
    assert out == ""


def test_dry_run_prints_compute_and_trains_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    assert main(["run", "zoo:quickstart", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "MACs/sample" in text and "MACs/epoch" in text and "projected" in text
    assert not out.exists()


def test_heavy_models_are_visible_before_training() -> None:
    # Notebook 003's m6 and m10 cost ~14x and ~90x the Keras mnist-cnn per sample.
    cnn = build_model(load_study("zoo:keras-mnist-cnn"), "cnn", device="meta").macs_per_sample
    kp = load_study("zoo:kernels-padding")
    m6 = build_model(kp, "m6", device="meta").macs_per_sample
    m10 = build_model(kp, "m10", device="meta").macs_per_sample
    assert m6 / cnn == pytest.approx(14, rel=0.1)
    assert m10 / cnn == pytest.approx(90, rel=0.05)
    # Hand-computed: conv 3x3x1x32 on 26x26 + 3x3x32x64 on 24x24 + dense 9216x128 + 128x10.
    assert cnn == 26 * 26 * 32 * 9 + 24 * 24 * 64 * 9 * 32 + 9216 * 128 + 128 * 10


def test_results_on_a_directory_without_store_is_a_one_line_error(tmp_path: Path,
                                                                   capsys) -> None:
    assert main(["results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("device,expected", [
    ("tpu", "Expected cpu, cuda, cuda:N or auto, received 'tpu'"),
    ("cuda", "sees no CUDA device"),
])
def test_bad_or_missing_device_is_a_one_line_error(device: str, expected: str, tmp_path: Path,
                                                   capsys) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["run", "zoo:quickstart", "--device", device, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_auto_device_is_cpu_without_cuda() -> None:
    import torch

    from archlab.run import resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


MNIST_STUDY = ("name: m\ndata: {dataset: mnist}\nmodels:\n  a:\n    layers: [Flatten, {Dense: "
               "{units: 10, activation: softmax}}]\n")


def test_validate_finds_a_missing_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ARCHLAB_DATA_DIR", raising=False)
    study = tmp_path / "m.yaml"
    study.write_text(MNIST_STUDY)
    (tmp_path / "empty").mkdir()
    for data_dir, expected in ((tmp_path / "nowhere", "does not exist"),
                               (tmp_path / "empty", "lacks train-images-idx3-ubyte")):
        code = main(["validate", str(study), "--no-timing", "--data-dir", str(data_dir)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: mnist: data directory {data_dir} ") and expected in err


def test_validate_names_where_the_data_comes_from(mnist_dir: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    study = tmp_path / "m.yaml"
    study.write_text(MNIST_STUDY)
    assert main(["validate", str(study), "--no-timing", "--data-dir", str(mnist_dir)]) == 0
    assert f"data: mnist: {mnist_dir}" in capsys.readouterr().out


def test_run_with_a_missing_data_dir_stops_before_any_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    code = main(["run", "zoo:quickstart", "--data-dir", str(tmp_path / "nope"), "--out",
                 str(out)])
    captured = capsys.readouterr()
    assert code == 2 and not out.exists()
    assert captured.err == (f"error: mnist-sample: data directory {tmp_path / 'nope'} does "
                            "not exist\n")
    assert "projected" not in captured.out  # refused before the timing


def test_an_empty_validation_split_is_refused_by_validate(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    study = tmp_path / "s.yaml"
    study.write_text("name: s\ndata: {dataset: mnist-sample, validation: {split: 0.0001}}\n"
                     "models:\n  a:\n    layers: [Flatten, {Dense: {units: 10, activation: "
                     "softmax}}]\n")
    assert main(["validate", str(study), "--no-timing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {study}: field 'data.validation.split': Expected a fraction "
                          "above 0.001") and err.count("\n") == 1


def test_the_entry_point_stays_a_function_after_the_commands_are_imported() -> None:
    """`archlab.cli.main` is the console-script entry point. A submodule of the same name would
    replace it on the package as soon as it was imported (the commands are imported lazily, on
    the first call), so a second `from archlab.cli import main` would get a module."""
    import archlab.cli
    import archlab.cli.commands  # noqa: F401 - what the first call of main() imports
    from archlab.cli import main as entry_point

    assert callable(entry_point) and entry_point is archlab.cli.main
    assert entry_point(["--version"]) == 0
