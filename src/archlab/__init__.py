"""archlab: declarative, reproducible neural-architecture studies (Keras spec, PyTorch engine)."""

from archlab._builder import BuiltModel, SummaryRow, build_model, summary_text, validate_study
from archlab._errors import ArchlabError, DataError, SpecError, StoreError
from archlab._spec import (
    DataSpec,
    ModelSpec,
    Study,
    TrainSpec,
    dump_study,
    load_study,
    parse_study,
    study_json_schema,
    zoo_names,
)

__version__ = "0.1.0"

__all__ = [
    "ArchlabError",
    "BuiltModel",
    "DataError",
    "DataSpec",
    "ModelSpec",
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
