"""The example notebooks, executed by a real Jupyter kernel (nbclient + ipykernel) as a user's
Jupyter would, and a kernel interrupt during a study (jupyter_client)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("pandas")

from nbclient import NotebookClient  # noqa: E402

from archlab.analysis.results import open_store  # noqa: E402
from archlab.store import CHECKPOINT_FILE  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 300
ANSI = re.compile(r"\x1b\[")


def execute(name: str, cwd: Path) -> Any:
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def cell(nb: Any, tag: str) -> Any:
    (found,) = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    return found


def texts(output: Any) -> list[str]:
    data = output.get("data", {})
    return [output.get("text", ""), *(v for v in data.values() if isinstance(v, str))]


def check_clean(nb: Any) -> None:
    """No error output, nothing on stderr, no terminal escape code anywhere."""
    for c in nb.cells:
        for o in c.get("outputs", []):
            assert o.output_type != "error", f"{o.get('ename')}: {o.get('evalue')}"
            assert not (o.output_type == "stream" and o.name == "stderr"), o.text
            assert not any(ANSI.search(t) for t in texts(o)), texts(o)


def check_progress(run_cell: Any, runs: int) -> None:
    """The run cell shows the notebook progress view (HTML), ending with every run done."""
    (view,) = [o for o in run_cell.outputs if o.output_type == "display_data"]
    html = view.data["text/html"]
    assert "archlab-progress" in html
    assert f"{runs}/{runs}" in html and html.count(" finished test_accuracy ") == runs


def columns(output: Any) -> list[str]:
    """The column headers of a DataFrame's HTML output."""
    head = output.data["text/html"].split("<tbody>")[0]
    return [h for h in re.findall(r"<th>([^<]*)</th>", head) if h]


def check_png(output: Any) -> None:
    assert output.output_type == "execute_result"
    png = output.data["image/png"]
    assert isinstance(png, str) and len(png) > 1000  # base64 of a real image


def test_quickstart(tmp_path: Path) -> None:
    nb = execute("quickstart.ipynb", tmp_path)
    check_clean(nb)
    check_progress(cell(nb, "run"), runs=4)
    (table,) = cell(nb, "table").outputs
    assert columns(table) == ["model", "n", "total_params", "test_accuracy_mean",
                              "test_accuracy_ci_low", "test_accuracy_ci_high"]
    assert "<td>mlp</td>" in table.data["text/html"] and "<td>cnn</td>" in \
        table.data["text/html"]
    (plot,) = cell(nb, "plot").outputs
    check_png(plot)
    (ranking,) = cell(nb, "ranking").outputs
    check_png(ranking)
    (epochs,) = cell(nb, "epochs").outputs
    assert {"loss", "val_accuracy"} <= set(columns(epochs))
    assert (tmp_path / "archlab-runs" / "quickstart-notebook" / "study.yaml").is_file()


def test_search(tmp_path: Path) -> None:
    nb = execute("search.ipynb", tmp_path)
    check_clean(nb)
    check_progress(cell(nb, "run"), runs=1 + 4 + 1)  # base model, trials, confirmation
    (table,) = cell(nb, "table").outputs
    assert columns(table) == ["model", "seed", "status", "layers.1.Dense.units",
                              "train.optimizer.learning_rate", "val_accuracy",
                              "test_accuracy"]
    assert table.data["text/html"].count("mlp.trial") >= 4
    (plot,) = cell(nb, "plot").outputs
    check_png(plot)
    (best,) = cell(nb, "best").outputs
    assert best.text.startswith("best by test accuracy: mlp")


def _folder_sources() -> bool:
    """Whether this archlab reads a folder of images as a dataset (the data layer's)."""
    import archlab
    from archlab.errors import SpecError

    try:
        archlab.load_study({"name": "probe", "data": {"dataset": {
            "folder": ".", "image_size": [28, 28], "color_mode": "grayscale"}},
            "models": {"m": {"layers": ["Flatten", {"Dense": {"units": 2}}]}}})
    except SpecError:
        return False
    return True


def test_own_data(tmp_path: Path) -> None:
    if not _folder_sources():
        pytest.skip("this archlab does not read a folder of images as a dataset yet")
    nb = execute("own-data.ipynb", tmp_path)
    check_clean(nb)
    folders = sorted(p.name for p in (tmp_path / "my-digits").iterdir())
    assert folders == [f"digit-{d}" for d in range(10)]
    assert len(list((tmp_path / "my-digits" / "digit-3").glob("*.png"))) == 100
    check_progress(cell(nb, "run"), runs=1)
    (table,) = cell(nb, "table").outputs
    assert columns(table) == ["model", "status", "test_accuracy", "train_seconds"]
    assert "<td>finished</td>" in table.data["text/html"]
    (plot,) = cell(nb, "plot").outputs
    check_png(plot)


INTERRUPTED = """
import pathlib, archlab

class Marker:  # a progress receiver: marks the end of the first epoch for the test
    def start(self, plans, skipped): pass
    def add(self, plans): pass
    def stop(self): pass
    def event(self, run_id, event):
        if event["kind"] == "epoch":
            pathlib.Path(f"epoch{event['epoch']}").touch()

study = '''
name: interrupted
data: {dataset: mnist-sample, validation: {split: 0.1}}
train: {optimizer: {name: sgd}, batch_size: 8, epochs: 3}
models:
  mlp:
    layers: [Flatten, {Dense: {units: 64, activation: relu}},
             {Dense: {units: 10, activation: softmax}}]
'''
outcome = archlab.run_study(study, "runs", progress=Marker(), threads=1)
"""


def _reply(kc: Any, msg_id: str) -> dict[str, Any]:
    while True:
        msg = kc.get_shell_msg(timeout=TIMEOUT)
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg["content"]  # type: ignore[no-any-return]


def test_kernel_interrupt_stops_at_the_next_batch_and_keeps_the_checkpoint(
        tmp_path: Path) -> None:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        # stop_on_error=False: an interrupted cell must not make the kernel abort the next
        # request (ipykernel aborts what arrives while it unwinds an error otherwise)
        msg_id = kc.execute(INTERRUPTED, stop_on_error=False)
        deadline = time.monotonic() + TIMEOUT
        while not (tmp_path / "epoch1").exists():
            assert time.monotonic() < deadline, "no epoch ended"
            time.sleep(0.05)
        km.interrupt_kernel()  # SIGINT, as Jupyter's interrupt button sends it
        reply = _reply(kc, msg_id)
        assert reply["status"] == "error" and reply["ename"] == "StudyInterrupted"
        assert "checkpoints are kept" in reply["evalue"]
        assert not (tmp_path / "epoch3").exists()
        with open_store(tmp_path / "runs") as store:
            (run,) = store.runs()
            assert run.status.value == "interrupted" and run.epochs_done in (1, 2)
            assert (store.run_dir(run.run_id) / CHECKPOINT_FILE).is_file()
            kept = run.epochs_done
        # Running the cell again resumes from the checkpoint and finishes.
        for f in tmp_path.glob("epoch*"):
            f.unlink()
        reply = _reply(kc, kc.execute(INTERRUPTED))
        assert reply["status"] == "ok", reply
        assert not (tmp_path / f"epoch{kept}").exists()  # not trained again
        assert (tmp_path / "epoch3").exists()
        with open_store(tmp_path / "runs") as store:
            (run,) = store.runs()
            assert run.status.value == "finished" and run.epochs_done == 3
            assert len(store.history(run.run_id)) == 3
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
