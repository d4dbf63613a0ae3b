"""What both exporters read from a study directory, and how they name and flatten it."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archlab.analysis.results import config_value, open_store
from archlab.store import FINAL_METRICS, RunRecord

if TYPE_CHECKING:
    from archlab.plan import RunConfig
    from archlab.spec import Study

#: Per-epoch history column -> the scalar's name in TensorBoard and MLflow.
EPOCH_SCALARS = {"loss": "loss", "accuracy": "accuracy", "val_loss": "val_loss",
                 "val_accuracy": "val_accuracy", "lr": "lr", "seconds": "epoch_time"}

#: A run's final metrics, logged once: ``final/test_accuracy``, ... (the per-epoch
#: ``val_accuracy`` is the last epoch's; the final one is the restored best epoch's when the
#: study restores it).
FINAL_PREFIX = "final/"


@dataclass
class ExportRun:
    """One run of a study, as the exporters log it."""

    record: RunRecord
    history: list[dict[str, float]]
    hparams: dict[str, bool | int | float | str]

    @property
    def name(self) -> str:
        """``model/seed``: the run's name in TensorBoard and MLflow."""
        return run_name(self.record.model, self.record.seed)


@dataclass
class StudyRuns:
    """A study directory's runs (those of its latest plan), oldest first."""

    directory: Path
    study: str
    meta: dict[str, Any]
    spec: Study | None
    runs: list[ExportRun]

    def hparam_names(self) -> list[str]:
        return list(dict.fromkeys(k for r in self.runs for k in r.hparams))


def run_name(model: str, seed: int) -> str:
    return f"{model}/{seed}"


def read_runs(directory: str | Path) -> StudyRuns:
    """The runs of the study in ``directory`` (read-only), each with its history and
    hyperparameters. Raises :class:`~archlab.errors.StoreError` when there is no store."""
    directory = Path(directory)
    with open_store(directory) as store:
        meta = store.meta()
        records = store.runs(run_ids=meta.get("plan"))
        histories = {r.run_id: store.history(r.run_id) for r in records}
    spec = stored_study(meta)
    runs = [ExportRun(r, histories[r.run_id], run_hparams(spec, r.model, r.seed, r.config))
            for r in records]
    return StudyRuns(directory, str(meta.get("study") or directory.name), meta, spec, runs)


def stored_study(meta: dict[str, Any]) -> Study | None:
    """The study the last `archlab run` recorded (its sweeps and search), or None when the
    store has none this version can read."""
    import yaml

    from archlab.errors import ArchlabError
    from archlab.spec import parse_study

    text = meta.get("spec")
    if not isinstance(text, str):
        return None
    try:
        return parse_study(yaml.safe_load(text), str(meta.get("source") or "<store>"))
    except (ArchlabError, yaml.YAMLError):
        return None


def hparam_paths(study: Study | None, model: str) -> list[str]:
    """The fields that tell ``model``'s runs apart from the study's other models: its swept
    fields (a sweep point) and the searched ones (the search's base model and its trials)."""
    if study is None:
        return []
    paths: list[str] = []
    spec = study.models.get(model)
    if spec is not None:
        paths += list(spec.swept)
    search = study.search
    if search is not None and (model == search.base or model.startswith(f"{search.base}.trial")):
        paths += [p for p in search.space if p not in paths]
    return paths


def hparam_value(value: Any) -> bool | int | float | str:
    """A value as TensorBoard's HParams and MLflow take it: a bool, a number or text."""
    if isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True)


def run_hparams(study: Study | None, model: str, seed: int,
                config: RunConfig) -> dict[str, bool | int | float | str]:
    """``model`` and ``seed``, then each swept or searched field's value in this run."""
    out: dict[str, bool | int | float | str] = {"model": model, "seed": seed}
    for path in hparam_paths(study, model):
        value = config_value(config, path)
        if type(value) is object:  # config_value's "no such field" marker
            continue
        out[path] = hparam_value(value)
    return out


def epoch_scalars(row: dict[str, float], config: RunConfig | None) -> dict[str, float]:
    """One epoch's scalars by their logged names: the history's columns, and ``lr`` from the
    optimizer's constant learning rate where the run records none per epoch."""
    out = {name: float(row[key]) for key, name in EPOCH_SCALARS.items()
           if key in row and row[key] is not None and math.isfinite(float(row[key]))}
    if "lr" not in out and config is not None:
        lr = getattr(config.train.optimizer, "learning_rate", None)
        if isinstance(lr, int | float) and not isinstance(lr, bool):
            out["lr"] = float(lr)
    return out


def final_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """A run's final metrics (those it has, finite), as ``final/<name>``."""
    return {FINAL_PREFIX + k: float(metrics[k]) for k in FINAL_METRICS
            if isinstance(metrics.get(k), int | float) and math.isfinite(float(metrics[k]))}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted paths, the sweep paths' spelling: ``train.batch_size``,
    ``layers.1.Dense.units``, ``layers.0`` = ``Flatten``."""
    if isinstance(value, dict):
        if not value and prefix:
            return {prefix: "{}"}
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list | tuple):
        if not value and prefix:
            return {prefix: "[]"}
        out = {}
        for i, v in enumerate(value):
            out |= flatten(v, f"{prefix}.{i}" if prefix else str(i))
        return out
    return {prefix: value}


def data_fingerprint(config_json: dict[str, Any]) -> str:
    """What the run trained and was tested on, as 16 hex digits: the run's data section
    (dataset, validation split, preprocessing) and, where the dataset's record has them, the
    SHA-256s of its files or the fingerprint of a user's data source. Two runs with the same
    fingerprint saw the same images, split the same way."""
    data = config_json.get("data", {})
    content: Any = None
    try:
        from archlab.datasets import dataset_info

        name = data.get("dataset") if isinstance(data, dict) else None
        if isinstance(name, str):
            info = dataset_info(name)
            fingerprint = getattr(info, "fingerprint", None)
            files = getattr(info, "files", ())
            content = fingerprint or [getattr(f, "sha256", str(f)) for f in files] or \
                getattr(info, "embedded", None)
    except Exception:  # noqa: BLE001 - the data section alone still identifies the data
        content = None
    text = json.dumps({"data": data, "split_seed": config_json.get("split_seed"),
                       "content": content}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
