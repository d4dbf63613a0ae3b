"""A study's runs in MLflow: ``archlab export-logs DIR --mlflow URI`` (:func:`export_mlflow`).

Every finished run (``finished``, ``diverged`` or ``pruned`` in the store) becomes one MLflow
run, named ``model/seed``, in the experiment named after the study:

- params: the run's config flattened to the sweep paths' spelling (``train.batch_size``,
  ``layers.1.Dense.units``, ``data.dataset``, ``seed``), plus ``model``;
- metrics: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr`` and ``epoch_time``
  at each epoch (step = epoch, from 1), and the final ``final/test_accuracy``, ... at the last;
- tags: ``archlab.study``, ``archlab.model``, ``archlab.seed``, ``archlab.repeat``,
  ``archlab.run_id``, ``archlab.status``, ``archlab.data_fingerprint``;
- artifacts: the run's ``weights.safetensors`` (checked against the store's checksum) under
  ``weights/``, and the study's ``report.html`` under ``report/`` where it exists.

Exporting again adds nothing twice: runs are matched on the ``archlab.run_id`` tag, and a run
exported in full is skipped (one an interrupted export left half-written is replaced). The
tracking URI is a ``sqlite:`` or ``file:`` URI (MLflow 3 keeps its file store in maintenance
mode: archlab allows it for this export; prefer ``sqlite:``). ``mlflow-skinny`` is enough:
``pip install 'archlab[tracking]'``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

from archlab.errors import ArchlabError
from archlab.tracking._runs import (
    ExportRun,
    data_fingerprint,
    epoch_scalars,
    final_scalars,
    flatten,
    read_runs,
)

__all__ = ["MlflowExport", "export_mlflow", "require_mlflow"]

#: Set last on a run: its params, metrics and artifacts are all logged.
COMPLETE_TAG = "archlab.export"
RUN_ID_TAG = "archlab.run_id"
#: MLflow's limits (param values: 6000 characters; a log_batch call: 1000 metrics, 100 params).
MAX_PARAM_VALUE = 6000
BATCH_METRICS, BATCH_PARAMS = 1000, 100


def require_mlflow() -> ModuleType:
    """The ``mlflow`` package (mlflow-skinny is enough), or one line saying how to install it."""
    try:
        import mlflow
        from mlflow.tracking import MlflowClient  # noqa: F401 - checked here
    except ImportError:
        raise ArchlabError("mlflow is not installed: pip install 'archlab[tracking]' "
                           "(mlflow-skinny is enough)") from None
    return mlflow


@dataclass
class MlflowExport:
    """What an export did: the experiment, the runs it logged, those it found already
    exported (by archlab run id), and those it left out (not finished)."""

    experiment_id: str
    logged: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)


def _check_uri(uri: str) -> str:
    scheme = urlparse(uri).scheme
    if scheme not in ("file", "sqlite"):
        raise ArchlabError(f"--mlflow {uri}: Expected a file: or sqlite: tracking URI (e.g. "
                           f"sqlite:///mlflow.db or file:///tmp/mlruns), received "
                           f"{scheme + ':' if scheme else 'a plain path'}")
    return scheme


@contextlib.contextmanager
def _file_store_allowed(scheme: str) -> Iterator[None]:
    """MLflow 3 refuses its file store unless told otherwise; the user asked for a file: URI."""
    if scheme != "file":
        yield
        return
    old = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = old


def _artifact_root(uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a sqlite database (MLflow's default
    is a folder in the current directory); a file store's own default otherwise."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    db = Path(parsed.path[1:] if parsed.path.startswith("//") else parsed.path)
    if str(db) in ("", ":memory:"):
        return None
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", experiment)
    return (db.resolve().parent / "mlartifacts" / safe).as_uri()


def _param_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)[:250]


def _param_value(value: Any) -> str:
    text = "None" if value is None else str(value)
    return text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 1] + "…"


def run_params(run: ExportRun) -> dict[str, str]:
    """The run's params as MLflow stores them (text): its flattened config and its model."""
    config = dict(run.record.config_json)
    params = {"model": run.record.model, **flatten({k: v for k, v in config.items()
                                                    if k != "model"})}
    return {_param_key(k): _param_value(v) for k, v in params.items()}


def run_tags(study: str, run: ExportRun) -> dict[str, str]:
    r = run.record
    return {"archlab.study": study, "archlab.model": r.model, "archlab.seed": str(r.seed),
            "archlab.repeat": str(r.repeat), RUN_ID_TAG: r.run_id,
            "archlab.status": r.status.value,
            "archlab.data_fingerprint": data_fingerprint(r.config_json),
            "mlflow.runName": run.name}


def export_mlflow(directory: str | Path, tracking_uri: str, *,
                  experiment: str | None = None) -> MlflowExport:
    """Log the finished runs of the study in ``directory`` to the MLflow tracking server at
    ``tracking_uri`` (``sqlite:`` or ``file:``), in the experiment ``experiment`` (default:
    the study's name, created when missing). Runs already exported are skipped."""
    scheme = _check_uri(tracking_uri)
    require_mlflow()
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    study = read_runs(directory)
    name = experiment or study.study
    with _file_store_allowed(scheme):
        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(name)
        if found is None:
            exp_id = client.create_experiment(name, artifact_location=_artifact_root(
                tracking_uri, name), tags={"archlab.study": study.study})
        elif found.lifecycle_stage != "active":
            raise ArchlabError(f"--mlflow {tracking_uri}: experiment {name!r} is deleted; "
                               "restore it or export with --experiment NAME")
        else:
            exp_id = found.experiment_id
        result = MlflowExport(exp_id)
        existing = _exported(client, exp_id)
        report = study.directory / "report.html"
        for run in study.runs:
            rid = run.record.run_id
            if not run.record.status.is_finished():
                result.unfinished.append(rid)
                continue
            previous = existing.get(rid, [])
            if any(r.data.tags.get(COMPLETE_TAG) == "complete" for r in previous):
                result.already.append(rid)
                continue
            for r in previous:  # an export that stopped half-way: replaced
                client.delete_run(r.info.run_id)
            mlrun = client.create_run(exp_id, run_name=run.name)
            mid = mlrun.info.run_id
            try:
                tags = [RunTag(k, v) for k, v in run_tags(study.study, run).items()]
                params = [Param(k, v) for k, v in run_params(run).items()]
                metrics = [Metric(k, v, 0, int(row["epoch"]))
                           for row in run.history
                           for k, v in epoch_scalars(row, run.record.config).items()]
                last = int(run.history[-1]["epoch"]) if run.history else run.record.epochs_done
                metrics += [Metric(k, v, 0, last)
                            for k, v in final_scalars(run.record.metrics).items()]
                metrics = [m for m in metrics if math.isfinite(m.value)]
                for i in range(0, max(len(tags), len(params), len(metrics)), BATCH_PARAMS):
                    client.log_batch(mid, metrics=[], params=params[i:i + BATCH_PARAMS],
                                     tags=tags[i:i + BATCH_PARAMS])
                for i in range(0, len(metrics), BATCH_METRICS):
                    client.log_batch(mid, metrics=metrics[i:i + BATCH_METRICS])
                _log_artifacts(client, mid, study.directory, run, report)
                client.set_tag(mid, COMPLETE_TAG, "complete")
                client.set_terminated(mid, "FINISHED")
            except BaseException:
                client.set_terminated(mid, "FAILED")
                raise
            result.logged.append(rid)
    return result


def _exported(client: Any, exp_id: str) -> dict[str, list[Any]]:
    """The experiment's active runs by their archlab run id."""
    out: dict[str, list[Any]] = {}
    token = None
    while True:
        page = client.search_runs([exp_id], max_results=1000, page_token=token)
        for r in page:
            rid = r.data.tags.get(RUN_ID_TAG)
            if rid:
                out.setdefault(rid, []).append(r)
        token = page.token
        if not token:
            return out


def _log_artifacts(client: Any, mid: str, directory: Path, run: ExportRun,
                   report: Path) -> None:
    from archlab.analysis.results import open_store, run_file
    from archlab.store.schema import WEIGHTS_FILE

    with open_store(directory) as store:
        if (store.run_dir(run.record.run_id) / WEIGHTS_FILE).exists():
            client.log_artifact(mid, str(run_file(store, run.record.run_id, WEIGHTS_FILE)),
                                artifact_path="weights")
    if report.is_file():
        client.log_artifact(mid, str(report), artifact_path="report")
