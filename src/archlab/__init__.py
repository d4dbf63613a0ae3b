"""archlab: declarative, reproducible neural-architecture studies (Keras spec, PyTorch engine)."""

from archlab.analysis.results import StudyResults
from archlab.analysis.results import collect as collect_results
from archlab.data import RawDataset, load_dataset
from archlab.describe import summary_text
from archlab.errors import ArchlabError, DataError, SpecError, StoreError
from archlab.model import BuiltModel, SummaryRow, build_model, validate_study
from archlab.run import RunPlan, StudyOutcome, plan_runs, run_study
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

__version__ = "0.1.0"

__all__ = [
    "ArchlabError",
    "BuiltModel",
    "DataError",
    "DataSpec",
    "ModelSpec",
    "RawDataset",
    "RunPlan",
    "RunRecord",
    "Store",
    "StudyOutcome",
    "StudyResults",
    "collect_results",
    "load_dataset",
    "override_training",
    "plan_runs",
    "run_study",
    "SpecError",
    "StoreError",
    "Study",
    "SummaryRow",
    "TrainSpec",
    "build_model",
    "dump_study",
    "load_study",
    "parse_study",
    "study_json_schema",
    "summary_text",
    "validate_study",
    "zoo_names",
]
