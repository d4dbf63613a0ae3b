"""archlab: declarative, reproducible neural-architecture studies (Keras spec, PyTorch engine).

The public API is re-exported here under :data:`__all__`, each name imported on first use
(PEP 562): ``import archlab`` (and so ``archlab --version`` or ``archlab --help``) costs
milliseconds, and torch is imported only by what needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from archlab.version import __version__

#: Public name -> (module, attribute) it is imported from on first use.
_EXPORTS: dict[str, tuple[str, str]] = {
    "ArchlabError": ("archlab.errors", "ArchlabError"),
    "BuiltModel": ("archlab.model", "BuiltModel"),
    "DATASETS": ("archlab.datasets", "DATASETS"),
    "DataError": ("archlab.errors", "DataError"),
    "DataSpec": ("archlab.spec", "DataSpec"),
    "DatasetInfo": ("archlab.datasets", "DatasetInfo"),
    "DatasetLocation": ("archlab.data", "DatasetLocation"),
    "ModelSpec": ("archlab.spec", "ModelSpec"),
    "RawDataset": ("archlab.data", "RawDataset"),
    "RunPlan": ("archlab.run", "RunPlan"),
    "RunRecord": ("archlab.store", "RunRecord"),
    "SpecError": ("archlab.errors", "SpecError"),
    "Store": ("archlab.store", "Store"),
    "StoreError": ("archlab.errors", "StoreError"),
    "Study": ("archlab.spec", "Study"),
    "StudyOutcome": ("archlab.run", "StudyOutcome"),
    "StudyResults": ("archlab.analysis.results", "StudyResults"),
    "SummaryRow": ("archlab.model", "SummaryRow"),
    "TrainSpec": ("archlab.spec", "TrainSpec"),
    "build_model": ("archlab.model", "build_model"),
    "check_study_data": ("archlab.data", "check_study_data"),
    "collect_results": ("archlab.notebook", "collect_results"),
    "dataset_info": ("archlab.datasets", "dataset_info"),
    "dump_study": ("archlab.spec", "dump_study"),
    "load_dataset": ("archlab.data", "load_dataset"),
    "load_study": ("archlab.spec", "load_study"),
    "locate_dataset": ("archlab.data", "locate_dataset"),
    "override_training": ("archlab.spec", "override_training"),
    "parse_study": ("archlab.spec", "parse_study"),
    "plan_runs": ("archlab.run", "plan_runs"),
    "run_study": ("archlab.notebook", "run_study"),
    "run_race": ("archlab.run.race", "run_race"),
    "study_json_schema": ("archlab.spec", "study_json_schema"),
    "summary_text": ("archlab.describe", "summary_text"),
    "validate_study": ("archlab.model", "validate_study"),
    "zoo_names": ("archlab.spec", "zoo_names"),
    # Using a trained model (issue 10): load, prepare images, predict, export.
    "ImageError": ("archlab.inference", "ImageError"),
    "ModelInfo": ("archlab.inference", "ModelInfo"),
    "TrainedModel": ("archlab.inference", "TrainedModel"),
    "export_metadata": ("archlab.inference.export", "export_metadata"),
    "export_model": ("archlab.inference.export", "export_model"),
    "load_images": ("archlab.inference", "load_images"),
    "load_trained": ("archlab.inference", "load_trained"),
    "predict_images": ("archlab.inference.predict", "predict_images"),
    "preprocess_images": ("archlab.inference", "preprocess_images"),
    # Notebooks (issue 17): results with DataFrames and figures; a study stopped by Ctrl-C.
    "Results": ("archlab.notebook", "Results"),
    "StudyInterrupted": ("archlab.notebook", "StudyInterrupted"),
    # Any image data (issue 15): the user's sources as a study names them, and their records.
    "CsvSource": ("archlab.datasets", "CsvSource"),
    "FolderSource": ("archlab.datasets", "FolderSource"),
    "IdxSource": ("archlab.datasets", "IdxSource"),
    "NpzSource": ("archlab.datasets", "NpzSource"),
    "record_of": ("archlab.datasets", "record_of"),
}

__all__ = [
    "DATASETS",
    "ArchlabError",
    "BuiltModel",
    "CsvSource",
    "DataError",
    "DataSpec",
    "DatasetInfo",
    "DatasetLocation",
    "FolderSource",
    "IdxSource",
    "ImageError",
    "ModelInfo",
    "ModelSpec",
    "NpzSource",
    "RawDataset",
    "Results",
    "RunPlan",
    "RunRecord",
    "SpecError",
    "Store",
    "StoreError",
    "Study",
    "StudyInterrupted",
    "StudyOutcome",
    "StudyResults",
    "SummaryRow",
    "TrainSpec",
    "TrainedModel",
    "__version__",
    "build_model",
    "check_study_data",
    "collect_results",
    "dataset_info",
    "dump_study",
    "export_metadata",
    "export_model",
    "load_dataset",
    "load_images",
    "load_study",
    "load_trained",
    "locate_dataset",
    "override_training",
    "parse_study",
    "plan_runs",
    "predict_images",
    "preprocess_images",
    "record_of",
    "run_race",
    "run_study",
    "study_json_schema",
    "summary_text",
    "validate_study",
    "zoo_names",
]


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule such as ``archlab.store``) on first use."""
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # later lookups skip this function
        return value
    if not name.startswith("_"):
        # `import archlab; archlab.run.study_dir(...)` worked when everything was imported
        # eagerly; keep it working for submodules.
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from archlab.analysis.results import StudyResults
    from archlab.data import (
        DatasetLocation,
        RawDataset,
        check_study_data,
        load_dataset,
        locate_dataset,
    )
    from archlab.datasets import (
        DATASETS,
        CsvSource,
        DatasetInfo,
        FolderSource,
        IdxSource,
        NpzSource,
        dataset_info,
        record_of,
    )
    from archlab.describe import summary_text
    from archlab.errors import ArchlabError, DataError, SpecError, StoreError
    from archlab.inference import (
        ImageError,
        ModelInfo,
        TrainedModel,
        load_images,
        load_trained,
        preprocess_images,
    )
    from archlab.inference.export import export_metadata, export_model
    from archlab.inference.predict import predict_images
    from archlab.model import BuiltModel, SummaryRow, build_model, validate_study
    from archlab.notebook import Results, StudyInterrupted, collect_results, run_study
    from archlab.run import RunPlan, StudyOutcome, plan_runs
    from archlab.run.race import run_race
    from archlab.spec import (
        DataSpec,
        ModelSpec,
        Study,
        TrainSpec,
        dump_study,
        load_study,
        override_training,
        parse_study,
        study_json_schema,
        zoo_names,
    )
    from archlab.store import RunRecord, Store
