"""TensorBoard event files, read back with tensorboard's own event reader and compared with the
store: exported afterwards (`archlab export-logs --tensorboard`) and written live (`archlab run
--tensorboard`)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from tensorboard.plugins.hparams import metadata  # noqa: E402

from archlab.analysis.results import open_store  # noqa: E402
from archlab.cli import main  # noqa: E402
from archlab.errors import ArchlabError  # noqa: E402
from archlab.store import FINAL_METRICS, RunRecord  # noqa: E402
from archlab.tracking import export_tensorboard  # noqa: E402

EPOCH_TAGS = {"loss": "loss", "accuracy": "accuracy", "val_loss": "val_loss",
              "val_accuracy": "val_accuracy", "seconds": "epoch_time"}


def _read(folder: Path) -> EventAccumulator:
    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return ea


def _store(directory: Path) -> list[tuple[RunRecord, list[dict[str, float]]]]:
    with open_store(directory) as store:
        plan = store.meta()["plan"]
        return [(r, store.history(r.run_id)) for r in store.runs(run_ids=plan)]


def _f32(x: float) -> float:
    return float(np.float32(x))  # a scalar summary holds a float32


def _session_hparams(ea: EventAccumulator) -> dict[str, Any]:
    content = ea.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG]
    info = metadata.parse_session_start_info_plugin_data(content)
    out: dict[str, Any] = {}
    for key, value in info.hparams.items():
        kind = value.WhichOneof("kind")
        out[key] = getattr(value, kind)
    return out


def check_run(folder: Path, record: RunRecord, history: list[dict[str, float]]) -> None:
    """Every per-epoch scalar, the final metrics and the HParams record equal the store's."""
    ea = _read(folder)
    epochs = [int(row["epoch"]) for row in history]
    for column, tag in EPOCH_TAGS.items():
        events = ea.Scalars(tag)
        assert [e.step for e in events] == epochs, tag
        assert [e.value for e in events] == [_f32(row[column]) for row in history], tag
    lr = record.config.train.optimizer.learning_rate
    assert [e.value for e in ea.Scalars("lr")] == [_f32(lr)] * len(history)
    for k in FINAL_METRICS:
        events = ea.Scalars(f"final/{k}")
        assert [(e.step, e.value) for e in events] == [(epochs[-1], _f32(record.metrics[k]))]
    hparams = _session_hparams(ea)
    assert hparams["model"] == record.model and hparams["seed"] == record.seed
    return None


def test_export_writes_one_run_per_archlab_run_with_the_stores_values(
        study_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tb"
    names = export_tensorboard(study_dir, out)
    runs = _store(study_dir)
    assert len(runs) == 2 + 1 + 1 + 2 + 1  # sweep points, cnn, base, trials, confirmation
    assert sorted(names) == sorted(f"{r.model}/{r.seed}" for r, _ in runs)
    for record, history in runs:
        check_run(out / record.model / str(record.seed), record, history)


def test_hparams_name_the_swept_and_searched_fields(study_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tb"
    export_tensorboard(study_dir, out)
    seen: dict[str, dict[str, Any]] = {}
    for record, _ in _store(study_dir):
        hp = _session_hparams(_read(out / record.model / str(record.seed)))
        seen[record.model] = hp
        if record.model == "cnn":
            assert set(hp) == {"model", "seed"}
        else:  # a sweep point, the search's base or a trial: the field it varies
            assert hp["layers.1.Dense.units"] == record.config_json["layers"][1]["Dense"][
                "units"]
    assert {"mlp[units=4]", "mlp[units=8]", "s"} <= set(seen)
    assert any(m.startswith("s.trial") for m in seen)
    # The experiment (in OUT itself): every hyperparameter and the final metrics as columns.
    root = _read(out).PluginTagToContent("hparams")[metadata.EXPERIMENT_TAG]
    experiment = metadata.parse_experiment_plugin_data(root)
    assert {h.name for h in experiment.hparam_infos} == {"model", "seed",
                                                         "layers.1.Dense.units"}
    assert {m.name.tag for m in experiment.metric_infos} == {f"final/{k}"
                                                             for k in FINAL_METRICS}


def test_exporting_again_writes_nothing_twice(study_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tb"
    export_tensorboard(study_dir, out)
    export_tensorboard(study_dir, out)
    for record, history in _store(study_dir):
        folder = out / record.model / str(record.seed)
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1
        check_run(folder, record, history)
    assert len(list(out.glob("events.out.tfevents.*"))) == 1


def test_cli_export_logs(study_dir: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tb"
    assert main(["export-logs", str(study_dir), "--tensorboard", str(out)]) == 0
    assert "7 run(s) written" in capsys.readouterr().out
    assert main(["export-logs", str(study_dir)]) == 2
    assert capsys.readouterr().err == ("error: export-logs: Expected --tensorboard OUT and/or "
                                       "--mlflow URI, received neither\n")
    assert main(["export-logs", str(tmp_path / "none"), "--tensorboard", str(out)]) == 2
    assert "no such study directory" in capsys.readouterr().err


def test_run_writes_the_event_files_live(tmp_path: Path) -> None:
    study = tmp_path / "live.yaml"
    study.write_text("""
name: live
seed: 2
data: {dataset: mnist-sample, validation: {split: 0.1}}
train: {optimizer: {name: sgd, learning_rate: 0.05}, batch_size: 256, epochs: 2, repeats: 2}
models:
  lin: {layers: [Flatten, {Dense: {units: 10, activation: softmax}}]}
""")
    tb, out = tmp_path / "tb", tmp_path / "runs"
    assert main(["run", str(study), "--out", str(out), "--tensorboard", str(tb), "--threads",
                 "1", "--no-timing", "--no-report", "--quiet"]) == 0
    runs = _store(out)
    assert len(runs) == 2
    for record, history in runs:
        check_run(tb / "lin" / str(record.seed), record, history)
    # The same values as an export of the store afterwards.
    exported = tmp_path / "exported"
    export_tensorboard(out, exported)
    for record, _ in runs:
        live = _read(tb / "lin" / str(record.seed))
        again = _read(exported / "lin" / str(record.seed))
        for tag in live.Tags()["scalars"]:
            assert [(e.step, e.value) for e in live.Scalars(tag)] == \
                [(e.step, e.value) for e in again.Scalars(tag)]


def test_a_resumed_run_gets_its_earlier_epochs_from_the_store(
        study_dir: Path, tmp_path: Path) -> None:
    """A run that resumes at epoch k under a live writer that never saw epochs 1..k."""
    from archlab.plan import plan_runs
    from archlab.spec import load_study
    from archlab.tracking import TensorBoardWriter

    directory = tmp_path / "copy"
    shutil.copytree(study_dir, directory)
    record, history = next((r, h) for r, h in _store(directory) if r.model == "cnn")
    study = load_study(str(directory / "study.yaml"))
    plan = next(p for p in plan_runs(study) if p.run_id == record.run_id)
    writer = TensorBoardWriter(tmp_path / "tb", study, directory)
    writer.start([plan], 0)
    writer.event(plan.run_id, {"kind": "resumed", "epoch": 1})
    writer.event(plan.run_id, {"kind": "epoch", "epoch": 2, "epochs": 2, **history[1]})
    writer.event(plan.run_id, {"kind": "done", "status": "finished", **record.metrics})
    writer.stop()
    check_run(tmp_path / "tb" / "cnn" / str(record.seed), record, history)


def test_without_tensorboard_one_line(monkeypatch: pytest.MonkeyPatch, study_dir: Path,
                                      tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ArchlabError, match=r"^tensorboard is not installed: pip install "
                                           r"'archlab\[tracking\]'$"):
        export_tensorboard(study_dir, tmp_path / "tb")
    assert main(["export-logs", str(study_dir), "--tensorboard", str(tmp_path / "tb")]) == 2
    assert capsys.readouterr().err == ("error: tensorboard is not installed: pip install "
                                       "'archlab[tracking]'\n")
