"""The study file: its schema (Keras names), reading it safely, and one-line error messages."""

from archlab.spec.io import dump_study, load_study, override_training, parse_study, zoo_names
from archlab.spec.messages import spec_error
from archlab.spec.schema import (
    DataSpec,
    EarlyStopping,
    ModelSpec,
    Normalize,
    NormalizeArgs,
    Split,
    Study,
    TrainOverride,
    TrainSpec,
    study_json_schema,
)
from archlab.spec.search import SearchSpec

__all__ = [
    "DataSpec",
    "EarlyStopping",
    "ModelSpec",
    "Normalize",
    "NormalizeArgs",
    "SearchSpec",
    "Split",
    "Study",
    "TrainOverride",
    "TrainSpec",
    "dump_study",
    "load_study",
    "override_training",
    "parse_study",
    "spec_error",
    "study_json_schema",
    "zoo_names",
]
