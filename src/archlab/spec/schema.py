"""The study file's schema: pydantic models that speak Keras (data, training, models, study)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, PrivateAttr, Tag, model_validator
from pydantic_core import PydanticCustomError

from archlab.augment import Augmentation
from archlab.datasets import (
    DATASET_NAMES,
    SOURCE_KEYS,
    CsvSource,
    DatasetInfo,
    FolderSource,
    IdxSource,
    NpzSource,
    Source,
    record_of,
)
from archlab.errors import SpecError
from archlab.fields import (
    Fraction,
    ImageAxis,
    Name,
    NonNegFloat,
    NonNegInt,
    PosInt,
    Repeats,
    Seed,
    Strict,
)
from archlab.layers import LayerList
from archlab.optimizers import Adam, Optimizer, ReduceLROnPlateau
from archlab.spec.search import SearchSpec, check_search
from archlab.spec.sweep import ModelName, expand_sweeps
from archlab.suggest import did_you_mean

__all__ = [
    "DataSpec",
    "Dataset",
    "EarlyStopping",
    "Loss",
    "ModelSpec",
    "Normalize",
    "NormalizeArgs",
    "Split",
    "Study",
    "TrainOverride",
    "TrainSpec",
    "study_json_schema",
]

# ---------------------------------------------------------------------------------------------
# Data and training


class Split(Strict):
    """Hold out a stratified, seeded fraction of the training set for validation."""

    split: Fraction = 0.1


class NormalizeArgs(Strict):
    axis: ImageAxis = 1
    order: PosInt = 2


class Normalize(Strict):
    """Keras's ``utils.normalize(x, axis, order)`` on the raw (N, H, W) array (notebook 004)."""

    normalize: NormalizeArgs = NormalizeArgs()


def _dataset_kind(value: Any) -> str | None:
    """Which member of :data:`Dataset` a value is: a built-in name, or the source whose key
    (folder, csv, npz, idx) the mapping holds."""
    if isinstance(value, str):
        return "literal[name]"
    if isinstance(value, BaseModel):
        return type(value).__name__
    if isinstance(value, dict):
        keys = [k for k in SOURCE_KEYS if k in value]
        if len(keys) == 1:
            return {"folder": "FolderSource", "csv": "CsvSource", "npz": "NpzSource",
                    "idx": "IdxSource"}[keys[0]]
    return None


#: A built-in dataset's name, or one of the user's sources (archlab.datasets.sources).
Dataset = Annotated[
    Annotated[Literal[DATASET_NAMES], Tag("literal[name]")]  # type: ignore[valid-type]
    | Annotated[FolderSource, Tag("FolderSource")]
    | Annotated[CsvSource, Tag("CsvSource")]
    | Annotated[NpzSource, Tag("NpzSource")]
    | Annotated[IdxSource, Tag("IdxSource")],
    Discriminator(_dataset_kind, custom_error_type="union_form",
                  custom_error_message="Expected a dataset name or a source",
                  custom_error_context={"form": "a built-in dataset name or exactly one of "
                                                "{folder: ...}, {csv: ...}, {npz: ...}, "
                                                "{idx: ...}"}),
]


class DataSpec(Strict):
    # The names are the dataset registry's: a new record is a new accepted value.
    dataset: Dataset = "mnist"
    validation: Literal["test"] | Split = Split()
    #: scale: x/255 (Keras's Rescaling(1/255)); normalize: keras.utils.normalize per image;
    #: standardize: (x - mean) / std per channel, both from the training split only
    preprocessing: Literal["scale", "standardize"] | Normalize = "scale"
    _info: DatasetInfo | None = PrivateAttr(default=None)

    @property
    def validates_on_test(self) -> bool:
        return self.validation == "test"

    @property
    def source(self) -> Source | None:
        """The user's source, or None for a built-in dataset."""
        return None if isinstance(self.dataset, str) else self.dataset

    @property
    def dataset_name(self) -> str:
        """A built-in's name, or the source's short name (``folder:my-images``)."""
        return self.dataset if isinstance(self.dataset, str) else self.dataset.label

    @property
    def info(self) -> DatasetInfo:
        """The dataset's record: the registry's, or derived from the source's files (once,
        then kept: see :meth:`with_info`)."""
        if self._info is not None:
            return self._info
        if isinstance(self.dataset, str):
            return record_of(self.dataset)  # the registry's, read each time
        self._info = record_of(self.dataset)
        return self._info

    def with_info(self, info: DatasetInfo) -> DataSpec:
        """This spec, its record given (a loaded dataset's, or a stored run's)."""
        copy = self.model_copy()
        copy._info = info
        return copy


class EarlyStopping(Strict):
    """Keras's EarlyStopping: stop after `patience` epochs without `min_delta` improvement."""

    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: NonNegInt = 0
    min_delta: NonNegFloat = 0.0


Loss = Literal["categorical_crossentropy", "sparse_categorical_crossentropy"]


class TrainSpec(Strict):
    optimizer: Optimizer = Field(default_factory=lambda: Adam())
    batch_size: PosInt = 32  # Keras's fit() default
    epochs: PosInt = 1  # Keras's fit() default
    loss: Loss = "categorical_crossentropy"
    repeats: Repeats = 1
    early_stopping: EarlyStopping | None = None
    restore_best: bool = False  # evaluate test on the best-validation-loss weights
    #: Keras preprocessing layers applied to training batches only (archlab.augment).
    augmentation: list[Augmentation] = Field(default_factory=list)
    reduce_lr_on_plateau: ReduceLROnPlateau | None = None

    @model_validator(mode="after")
    def _plateau_needs_a_settable_rate(self) -> TrainSpec:
        if (problem := self.lr_conflict()) is not None:
            raise PydanticCustomError("expected_received", "Expected {expected}, received "
                                      "{received}", {"expected": problem[0],
                                                     "received": problem[1]})
        return self

    def lr_conflict(self) -> tuple[str, str] | None:
        """(expected, received) when ReduceLROnPlateau meets a schedule: Keras refuses to set
        the rate of an optimizer built with a LearningRateSchedule."""
        if self.reduce_lr_on_plateau is not None and isinstance(
                self.optimizer.learning_rate, BaseModel):
            return ("a number as the optimizer's learning_rate with reduce_lr_on_plateau "
                    "(Keras cannot set a schedule's rate)",
                    f"learning_rate {self.optimizer.learning_rate.type}")  # type: ignore[attr-defined]
        return None

    def to_config(self) -> dict[str, Any]:
        # The fields added after run ids existed are left out at their defaults, so adding them
        # changed no run's id.
        out = self.model_dump(mode="json", exclude={"augmentation", "reduce_lr_on_plateau"})
        out["optimizer"] = self.optimizer.to_config()
        if self.augmentation:
            out["augmentation"] = [a.to_config() for a in self.augmentation]
        if self.reduce_lr_on_plateau is not None:
            out["reduce_lr_on_plateau"] = self.reduce_lr_on_plateau.model_dump(mode="json")
        return out


class TrainOverride(Strict):
    """Per-model training overrides: any TrainSpec field; the optimizer is replaced whole."""

    optimizer: Optimizer | None = None
    batch_size: PosInt | None = None
    epochs: PosInt | None = None
    loss: Loss | None = None
    repeats: Repeats | None = None
    early_stopping: EarlyStopping | None = None
    restore_best: bool | None = None
    augmentation: list[Augmentation] | None = None
    reduce_lr_on_plateau: ReduceLROnPlateau | None = None


class ModelSpec(Strict):
    description: str = ""
    train: TrainOverride = TrainOverride()
    layers: Annotated[LayerList, Field(min_length=1)]
    #: A grid: dotted path -> values. A study expands it into one model per point before
    #: validation (spec/sweep.py), so no model of a validated study carries one.
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    #: A sweep point's values (path -> value), set by the expansion; empty on other models.
    swept: dict[str, Any] = Field(default_factory=dict)

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.description:
            out["description"] = self.description
        if self.swept:
            out["swept"] = dict(self.swept)
        train: dict[str, Any] = {}
        for key in self.train.model_fields_set:
            value = getattr(self.train, key)
            train[key] = value.to_config() if key == "optimizer" else (
                value.model_dump(mode="json") if isinstance(value, BaseModel) else value)
            if key == "augmentation" and value is not None:
                train[key] = [a.to_config() for a in value]
        if train:
            out["train"] = train
        out["layers"] = [layer.to_config() for layer in self.layers]
        return out


class Study(Strict):
    name: Name
    description: str = ""
    seed: Seed = 0
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()
    models: Annotated[dict[ModelName, ModelSpec], Field(min_length=1)]
    search: SearchSpec | None = None  # an Optuna search over one model's fields
    _source: str = PrivateAttr(default="<memory>")

    @model_validator(mode="before")
    @classmethod
    def _expand_sweeps(cls, data: Any) -> Any:
        """Each model's ``sweep:`` becomes one model per point, validated like any model."""
        return expand_sweeps(data)

    @model_validator(mode="after")
    def _check_search(self) -> Study:
        """The search's base, paths and bounds, checked before anything trains."""
        if self.search is not None:
            check_search(self)
        return self

    @property
    def source(self) -> str:
        """Where the study came from: a file path or ``zoo:NAME``."""
        return self._source

    def train_for(self, model: str) -> TrainSpec:
        """The model's resolved training config: study defaults with its overrides applied."""
        override = self.models[model].train
        fields = {k: getattr(override, k) for k in override.model_fields_set
                  if getattr(override, k) is not None}
        return self.train.model_copy(update=fields)

    def to_config(self) -> dict[str, Any]:
        """A plain dict that `Study.model_validate` (or a YAML dump) turns back into this study."""
        return {
            "name": self.name,
            **({"description": self.description} if self.description else {}),
            "seed": self.seed,
            "data": self.data.model_dump(mode="json"),
            "train": self.train.to_config(),
            "models": {n: m.to_config() for n, m in self.models.items()},
            **({"search": self.search.to_config()} if self.search is not None else {}),
        }

    def with_dataset(self, info: DatasetInfo) -> Study:
        """A copy whose data record is ``info`` (a loaded dataset's, with its fingerprint)."""
        copy = self.model_copy(update={"data": self.data.with_info(info)})
        copy._source = self._source
        return copy

    def select(self, models: list[str]) -> Study:
        """A copy with only the named models (in the given order)."""
        # A swept model's written name selects all its points.
        models = [p for m in models for p in (
            [m] if m in self.models else [n for n in self.models if n.startswith(m + "[")
                                          and self.models[n].swept] or [m])]
        unknown = [m for m in models if m not in self.models]
        if unknown:
            raise SpecError(f"{self.source}: Expected a model of study '{self.name}' "
                            f"({', '.join(self.models)}), received '{unknown[0]}'"
                            + did_you_mean(unknown[0], self.models))
        copy = self.model_copy(update={"models": {m: self.models[m] for m in models}})
        copy._source = self._source
        return copy


def study_json_schema() -> dict[str, Any]:
    """The JSON Schema of a study file (for editors and CI checks)."""
    return Study.model_json_schema()

