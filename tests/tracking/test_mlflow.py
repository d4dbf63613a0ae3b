"""MLflow export, read back with MlflowClient and compared with the store; exporting again adds
nothing twice."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402

from archlab.analysis.results import open_store  # noqa: E402
from archlab.cli import main  # noqa: E402
from archlab.errors import ArchlabError  # noqa: E402
from archlab.store import FINAL_METRICS, RunRecord  # noqa: E402
from archlab.tracking import export_mlflow  # noqa: E402
from archlab.tracking._runs import data_fingerprint, flatten  # noqa: E402
from archlab.tracking.mlflow import _file_store_allowed  # noqa: E402

EPOCH_KEYS = {"loss": "loss", "accuracy": "accuracy", "val_loss": "val_loss",
              "val_accuracy": "val_accuracy", "seconds": "epoch_time"}
REPORT = "<html><body>the study's report</body></html>\n"


@pytest.fixture
def study(study_dir: Path, tmp_path: Path) -> Path:
    """A copy of the trained study with a report.html beside its store."""
    directory = tmp_path / "track"
    shutil.copytree(study_dir, directory)
    (directory / "report.html").write_text(REPORT)
    return directory


def _runs(directory: Path) -> list[tuple[RunRecord, list[dict[str, float]]]]:
    with open_store(directory) as store:
        plan = store.meta()["plan"]
        return [(r, store.history(r.run_id)) for r in store.runs(run_ids=plan)]


def _by_run_id(client: MlflowClient, experiment_id: str) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for r in client.search_runs([experiment_id], max_results=1000):
        out.setdefault(r.data.tags["archlab.run_id"], []).append(r)
    return out


def check_export(client: MlflowClient, experiment_id: str, directory: Path,
                 tmp_path: Path) -> None:
    """One MLflow run per finished archlab run, holding exactly the store's values."""
    runs = _runs(directory)
    found = _by_run_id(client, experiment_id)
    assert sorted(found) == sorted(r.run_id for r, _ in runs)
    for record, history in runs:
        (ml,) = found[record.run_id]
        data = ml.data  # type: ignore[attr-defined]
        assert ml.info.status == "FINISHED" and ml.info.run_name == \
            f"{record.model}/{record.seed}"  # type: ignore[attr-defined]
        assert data.tags["archlab.study"] == "track"
        assert data.tags["archlab.model"] == record.model
        assert data.tags["archlab.seed"] == str(record.seed)
        assert data.tags["archlab.status"] == "finished"
        assert data.tags["archlab.data_fingerprint"] == data_fingerprint(record.config_json)
        config = {k: v for k, v in record.config_json.items() if k != "model"}
        expected = {k: str(v) for k, v in flatten(config).items()} | {"model": record.model}
        assert data.params == expected
        if record.model != "cnn":  # a swept or searched field, spelt as the sweep path
            assert data.params["layers.1.Dense.units"] == \
                str(record.config_json["layers"][1]["Dense"]["units"])
        for column, key in EPOCH_KEYS.items():
            got = client.get_metric_history(ml.info.run_id, key)  # type: ignore[attr-defined]
            assert [(m.step, m.value) for m in sorted(got, key=lambda m: m.step)] == \
                [(int(row["epoch"]), row[column]) for row in history], key
        lr = client.get_metric_history(ml.info.run_id, "lr")  # type: ignore[attr-defined]
        assert [m.value for m in lr] == [record.config.train.optimizer.learning_rate] * 2
        for k in FINAL_METRICS:
            got = client.get_metric_history(ml.info.run_id, f"final/{k}")  # type: ignore
            assert [(m.step, m.value) for m in got] == [(2, record.metrics[k])]
        mid = ml.info.run_id  # type: ignore[attr-defined]
        assert [a.path for a in client.list_artifacts(mid, "weights")] == \
            ["weights/weights.safetensors"]
        got_weights = Path(client.download_artifacts(mid, "weights/weights.safetensors",
                                                     str(tmp_path)))
        with open_store(directory) as store:
            assert got_weights.read_bytes() == \
                (store.run_dir(record.run_id) / "weights.safetensors").read_bytes()
        report = Path(client.download_artifacts(mid, "report/report.html", str(tmp_path)))
        assert report.read_text() == REPORT


def test_export_to_sqlite_then_again_adds_nothing(study: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    first = export_mlflow(study, uri)
    assert len(first.logged) == 7 and not first.already and not first.unfinished
    client = MlflowClient(tracking_uri=uri)
    assert client.get_experiment(first.experiment_id).name == "track"
    check_export(client, first.experiment_id, study, tmp_path)
    # The artifacts sit beside the database, not in the working directory.
    assert (tmp_path / "mlartifacts" / "track").is_dir()
    second = export_mlflow(study, uri)
    assert second.experiment_id == first.experiment_id
    assert not second.logged and sorted(second.already) == sorted(first.logged)
    check_export(client, first.experiment_id, study, tmp_path)  # still one run each


def test_a_half_written_export_is_replaced_and_unfinished_runs_left_out(
        study: Path, tmp_path: Path) -> None:
    import sqlite3

    from archlab.store import STORE_FILE

    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    runs = [r for r, _ in _runs(study)]
    client = MlflowClient(tracking_uri=uri)
    # artifacts in tmp_path: without artifact_location MLflow puts them in ./mlruns
    exp = client.create_experiment("track", artifact_location=(tmp_path / "art").as_uri())
    half = client.create_run(exp, tags={"archlab.run_id": runs[0].run_id})
    client.log_metric(half.info.run_id, "loss", 99.0, step=1)
    with sqlite3.connect(study / STORE_FILE) as db:  # a run killed before it finished
        db.execute("UPDATE runs SET status='interrupted' WHERE run_id=?", (runs[1].run_id,))
    done = export_mlflow(study, uri)
    assert done.experiment_id == exp and done.unfinished == [runs[1].run_id]
    assert sorted(done.logged) == sorted(r.run_id for r in runs if r is not runs[1])
    assert client.get_run(half.info.run_id).info.lifecycle_stage == "deleted"
    found = _by_run_id(client, exp)
    assert runs[1].run_id not in found and len(found[runs[0].run_id]) == 1
    assert [(m.step, m.value) for m in client.get_metric_history(
        found[runs[0].run_id][0].info.run_id, "loss")] == \
        [(int(row["epoch"]), row["loss"]) for row in _runs(study)[0][1]]  # type: ignore


def test_file_uri_and_cli(study: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    uri = (tmp_path / "mlruns").as_uri()
    assert main(["export-logs", str(study), "--mlflow", uri, "--experiment", "mine"]) == 0
    assert "mlflow: 7 run(s) logged, 0 already there" in capsys.readouterr().out
    assert main(["export-logs", str(study), "--mlflow", uri, "--experiment", "mine"]) == 0
    assert "mlflow: 0 run(s) logged, 7 already there" in capsys.readouterr().out
    with _file_store_allowed("file"):
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("mine")
        assert exp is not None
        check_export(client, exp.experiment_id, study, tmp_path)


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", str(Path("mlruns"))])
def test_other_uris_are_refused_in_one_line(study: Path, uri: str) -> None:
    with pytest.raises(ArchlabError, match=r"^--mlflow .*: Expected a file: or sqlite: "
                                           r"tracking URI"):
        export_mlflow(study, uri)
