"""The study file: a pydantic schema that speaks Keras, and its loader with one-line errors."""

from __future__ import annotations

import difflib
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from archlab._errors import SpecError
from archlab._layers import LayerList, PosInt

NonNegFloat = Annotated[float, Field(strict=True, ge=0)]
PosFloat = Annotated[float, Field(strict=True, gt=0)]
Fraction = Annotated[float, Field(strict=True, gt=0, lt=1)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# Optimizers: Keras names, arguments and defaults (Keras 2 for Adadelta's lr and `decay`).


class _Optimizer(_Strict):
    name: str
    decay: NonNegFloat = 0.0  # Keras 2: lr_t = lr / (1 + decay * iterations)
    clipnorm: PosFloat | None = None

    @model_validator(mode="before")
    @classmethod
    def _lr_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "lr" in data:
            data = dict(data)
            if "learning_rate" in data:
                raise PydanticCustomError(
                    "lr_twice", "Expected one of 'lr' and 'learning_rate', received both"
                )
            data["learning_rate"] = data.pop("lr")
        return data

    def to_config(self) -> dict[str, Any]:
        return self.model_dump(exclude_defaults=True) | {"name": self.name}


class SGD(_Optimizer):
    name: Literal["sgd"] = "sgd"
    learning_rate: PosFloat = 0.01
    momentum: Annotated[float, Field(strict=True, ge=0, lt=1)] = 0.0
    nesterov: bool = False


class Adam(_Optimizer):
    name: Literal["adam"] = "adam"
    learning_rate: PosFloat = 0.001
    beta_1: Fraction = 0.9
    beta_2: Fraction = 0.999
    epsilon: PosFloat = 1e-7
    amsgrad: bool = False


class Adadelta(_Optimizer):
    name: Literal["adadelta"] = "adadelta"
    learning_rate: PosFloat = 1.0  # Keras 2's default, which every seed notebook ran with
    rho: Fraction = 0.95
    epsilon: PosFloat = 1e-7


class RMSprop(_Optimizer):
    name: Literal["rmsprop"] = "rmsprop"
    learning_rate: PosFloat = 0.001
    rho: Fraction = 0.9
    momentum: Annotated[float, Field(strict=True, ge=0, lt=1)] = 0.0
    epsilon: PosFloat = 1e-7
    centered: bool = False


class Adagrad(_Optimizer):
    name: Literal["adagrad"] = "adagrad"
    learning_rate: PosFloat = 0.01
    initial_accumulator_value: NonNegFloat = 0.1
    epsilon: PosFloat = 1e-7


class Nadam(_Optimizer):
    name: Literal["nadam"] = "nadam"
    learning_rate: PosFloat = 0.001
    beta_1: Fraction = 0.9
    beta_2: Fraction = 0.999
    epsilon: PosFloat = 1e-7


_OPTIMIZERS = {c.model_fields["name"].default: c for c in (SGD, Adam, Adadelta, RMSprop, Adagrad,
                                                           Nadam)}


def _optimizer_item(value: Any) -> Any:
    """Accept `sgd`, `SGD`, `{name: SGD, lr: 0.1}`, as Keras's `compile(optimizer=...)` does."""
    if isinstance(value, str):
        value = {"name": value}
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        name = value["name"].lower()
        if name not in _OPTIMIZERS:
            close = difflib.get_close_matches(name, _OPTIMIZERS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise PydanticCustomError(
                "unknown_optimizer", "Unknown optimizer '{name}'{hint}; expected one of {known}",
                {"name": value["name"], "hint": hint, "known": ", ".join(_OPTIMIZERS)},
            )
        value = {**value, "name": name}
    return value


Optimizer = Annotated[
    Annotated[Union[SGD, Adam, Adadelta, RMSprop, Adagrad, Nadam],  # noqa: UP007
              Field(discriminator="name")],
    BeforeValidator(_optimizer_item),
]

# ---------------------------------------------------------------------------------------------
# Data and training


class Split(_Strict):
    """Hold out a stratified, seeded fraction of the training set for validation."""

    split: Annotated[float, Field(strict=True, gt=0, lt=1)] = 0.1


class NormalizeArgs(_Strict):
    axis: int = 1
    order: PosInt = 2


class Normalize(_Strict):
    """Keras's ``utils.normalize(x, axis, order)`` on the raw (N, H, W) array (notebook 004)."""

    normalize: NormalizeArgs = NormalizeArgs()


class DataSpec(_Strict):
    dataset: Literal["mnist", "fashion-mnist", "mnist-sample"] = "mnist"
    validation: Literal["test"] | Split = Split()
    preprocessing: Literal["scale"] | Normalize = "scale"

    @property
    def validates_on_test(self) -> bool:
        return self.validation == "test"


class EarlyStopping(_Strict):
    """Keras's EarlyStopping: stop after `patience` epochs without `min_delta` improvement."""

    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: Annotated[int, Field(strict=True, ge=0)] = 0
    min_delta: NonNegFloat = 0.0


Loss = Literal["categorical_crossentropy", "sparse_categorical_crossentropy"]


class TrainSpec(_Strict):
    optimizer: Optimizer = Field(default_factory=lambda: Adam())
    batch_size: PosInt = 32  # Keras's fit() default
    epochs: PosInt = 1  # Keras's fit() default
    loss: Loss = "categorical_crossentropy"
    repeats: PosInt = 1
    early_stopping: EarlyStopping | None = None
    restore_best: bool = False  # evaluate test on the best-validation-loss weights

    def to_config(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        out["optimizer"] = self.optimizer.to_config()
        return out


class TrainOverride(_Strict):
    """Per-model training overrides: any TrainSpec field; the optimizer is replaced whole."""

    optimizer: Optimizer | None = None
    batch_size: PosInt | None = None
    epochs: PosInt | None = None
    loss: Loss | None = None
    repeats: PosInt | None = None
    early_stopping: EarlyStopping | None = None
    restore_best: bool | None = None


class ModelSpec(_Strict):
    description: str = ""
    train: TrainOverride = TrainOverride()
    layers: Annotated[LayerList, Field(min_length=1)]

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.description:
            out["description"] = self.description
        train: dict[str, Any] = {}
        for key in self.train.model_fields_set:
            value = getattr(self.train, key)
            train[key] = value.to_config() if key == "optimizer" else (
                value.model_dump(mode="json") if isinstance(value, BaseModel) else value)
        if train:
            out["train"] = train
        out["layers"] = [layer.to_config() for layer in self.layers]
        return out


class Study(_Strict):
    name: Name
    description: str = ""
    seed: Annotated[int, Field(strict=True, ge=0)] = 0
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()
    models: Annotated[dict[Name, ModelSpec], Field(min_length=1)]
    _source: str = PrivateAttr(default="<memory>")

    @property
    def source(self) -> str:
        """Where the study came from: a file path or ``zoo:NAME``."""
        return self._source

    def train_for(self, model: str) -> TrainSpec:
        """The model's resolved training config: study defaults with its overrides applied."""
        override = self.models[model].train
        fields = {k: getattr(override, k) for k in override.model_fields_set}
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
        }

    def select(self, models: list[str]) -> Study:
        """A copy with only the named models (in the given order)."""
        unknown = [m for m in models if m not in self.models]
        if unknown:
            raise SpecError(f"{self.source}: Expected a model of study {self.name!r} "
                            f"({', '.join(self.models)}), received {unknown[0]!r}")
        copy = self.model_copy(update={"models": {m: self.models[m] for m in models}})
        copy._source = self._source
        return copy


def override_training(study: Study, **fields: Any) -> Study:
    """A copy of ``study`` with training fields (e.g. ``epochs=3``) forced for every model."""
    fields = {k: v for k, v in fields.items() if v is not None}
    if not fields:
        return study
    try:
        train = TrainSpec.model_validate({**study.train.to_config(), **fields})
    except ValidationError as exc:
        raise spec_error("command line", exc) from None
    models = {}
    for name, m in study.models.items():
        keep = {k: getattr(m.train, k) for k in m.train.model_fields_set if k not in fields}
        models[name] = m.model_copy(update={"train": TrainOverride.model_construct(
            _fields_set=set(keep), **{**TrainOverride().__dict__, **keep})})
    copy = study.model_copy(update={"train": train, "models": models})
    copy._source = study._source
    return copy


def study_json_schema() -> dict[str, Any]:
    """The JSON Schema of a study file (for editors and CI checks)."""
    return Study.model_json_schema()


# ---------------------------------------------------------------------------------------------
# Loading


def zoo_names() -> list[str]:
    """Names of the built-in studies (``zoo:NAME``)."""
    files = resources.files("archlab").joinpath("zoo").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml"))


def _read_source(source: str | Path) -> tuple[str, str]:
    text_source = str(source)
    if text_source.startswith("zoo:"):
        name = text_source[4:]
        if name not in zoo_names():
            close = difflib.get_close_matches(name, zoo_names(), n=1)
            hint = f" (did you mean 'zoo:{close[0]}'?)" if close else ""
            raise SpecError(f"{text_source}: Unknown built-in study{hint}; expected one of "
                            + ", ".join(f"zoo:{n}" for n in zoo_names()))
        return text_source, resources.files("archlab").joinpath(f"zoo/{name}.yaml").read_text()
    path = Path(source)
    try:
        return str(path), path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such study file") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read study file ({exc.__class__.__name__})") from None


def _where(loc: tuple[Any, ...]) -> str:
    """Turn a pydantic error location into 'model 'm1', layer 3 (Conv2D), field 'filters''."""
    parts: list[str] = []
    i = 0
    while i < len(loc):
        key = loc[i]
        if key == "models" and i + 1 < len(loc):
            parts.append(f"model '{loc[i + 1]}'")
            i += 2
            continue
        if key in ("layers", "branches") and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            if key == "branches":
                parts.append(f"branch {loc[i + 1] + 1}")
                i += 2
                if i < len(loc) and isinstance(loc[i], int):
                    key = "layers"
                    i -= 1
                else:
                    continue
            layer_type = loc[i + 2] if i + 2 < len(loc) and isinstance(loc[i + 2], str) else None
            if layer_type and layer_type[:1].isupper():
                parts.append(f"layer {loc[i + 1] + 1} ({layer_type})")
                i += 3
            else:
                parts.append(f"layer {loc[i + 1] + 1}")
                i += 2
            continue
        if isinstance(key, str) and key in _OPTIMIZERS and parts and parts[-1].endswith(
                "'optimizer'"):
            i += 1  # the discriminator tag repeats the optimizer's name
            continue
        parts.append(f"field '{key}'" if isinstance(key, str) else f"item {key + 1}")
        i += 1
    return ", ".join(parts)


def _describe(err: Any) -> str:
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "missing":
        return "missing required field"
    if kind == "extra_forbidden":
        return f"unknown field '{err['loc'][-1]}'"
    if kind in ("unknown_layer", "unknown_optimizer", "layer_item", "layer_args", "lr_twice"):
        return msg
    if kind == "literal_error":
        return f"Expected {msg.removeprefix('Input should be ')}, received {value!r}"
    if kind == "union_tag_invalid":
        return msg
    text = msg.removeprefix("Input should be ").removeprefix("Value error, ")
    return f"Expected {text}, received {value!r}"


def _extra_hint(err: Any, data: Any) -> str:
    """For an unknown field, suggest the nearest known one (kernal_size → kernel_size)."""
    if err["type"] != "extra_forbidden":
        return ""
    field = str(err["loc"][-1])
    from archlab._layers import LAYER_TYPES

    candidates: set[str] = set()
    for cls in (*LAYER_TYPES.values(), *_OPTIMIZERS.values(), Study, DataSpec, TrainSpec,
                ModelSpec, EarlyStopping):
        candidates |= set(cls.model_fields)
    candidates.add("lr")
    close = difflib.get_close_matches(field, sorted(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def spec_error(source: str, exc: ValidationError, data: Any = None) -> SpecError:
    """Format the first validation error as one line naming file, model, layer and field."""
    err = exc.errors()[0]
    where = _where(tuple(err["loc"]))
    message = _describe(err) + _extra_hint(err, data)
    if len(exc.errors()) > 1:
        message += f" (and {len(exc.errors()) - 1} more)"
    return SpecError(f"{source}: {where + ': ' if where else ''}{message}")


def parse_study(data: Any, source: str = "<memory>") -> Study:
    """Validate a study given as a dict (the parsed YAML)."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: Expected a mapping with 'name' and 'models' at the top "
                        f"level, received {type(data).__name__}")
    try:
        study = Study.model_validate(data)
    except ValidationError as exc:
        raise spec_error(source, exc, data) from None
    study._source = source
    return study


def load_study(source: str | Path) -> Study:
    """Load and validate a study from a YAML (or JSON) file, or a built-in one as ``zoo:NAME``.

    Every error is a :class:`SpecError` whose message is one line naming the file, model,
    layer and field. Shapes are checked separately by :func:`archlab.validate_study`.
    """
    where, text = _read_source(source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{where}: invalid YAML{pos}: {problem}") from None
    return parse_study(data, where)


def dump_study(study: Study) -> str:
    """The study as YAML text (round-trips through :func:`load_study`)."""
    return yaml.safe_dump(study.to_config(), sort_keys=False)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
