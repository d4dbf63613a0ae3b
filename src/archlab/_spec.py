"""The study file: a pydantic schema that speaks Keras, and its loader with one-line errors."""

from __future__ import annotations

import difflib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

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
from pydantic.fields import FieldInfo
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


OptimizerName = Literal["sgd", "adam", "adadelta", "rmsprop", "adagrad", "nadam", "SGD", "Adam",
                        "Adadelta", "RMSprop", "Adagrad", "Nadam"]
Optimizer = Annotated[
    Annotated[Union[SGD, Adam, Adadelta, RMSprop, Adagrad, Nadam],  # noqa: UP007
              Field(discriminator="name")],
    BeforeValidator(_optimizer_item,
                    json_schema_input_type=Union[OptimizerName, dict[str, Any]]),  # noqa: UP007
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
        }

    def select(self, models: list[str]) -> Study:
        """A copy with only the named models (in the given order)."""
        unknown = [m for m in models if m not in self.models]
        if unknown:
            raise SpecError(f"{self.source}: Expected a model of study '{self.name}' "
                            f"({', '.join(self.models)}), received '{unknown[0]}'"
                            + _did_you_mean(unknown[0], self.models))
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
        err = _merged(exc, None)[0]
        option = "--" + str(err["loc"][0]).replace("_", "-")
        message = _describe({**err, "loc": ("train", *err["loc"])})
        raise SpecError(f"{study.source}: command-line option {option}: {message}") from None
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


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two fixes for hand-written studies.

    Floats follow YAML 1.2, so ``lr: 1e-3`` is a number (YAML 1.1 reads it as the string
    '1e-3'), and a key given twice in one mapping is an error (YAML would silently keep the
    second, so a copied model that was not renamed would replace the first).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key_node.value}' (first given on line "
                        f"{seen[key_node.value] + 1}; each key may appear once)",
                        key_node.start_mark)
                seen[key_node.value] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_FLOAT_TAG = "tag:yaml.org,2002:float"
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(_FLOAT_TAG, re.compile(r"""^(?:
     [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))

# PyYAML's wording for the mistakes people make by hand, said the way a new user would.
_YAML_PROBLEMS = (
    ("found character '\\t'", "a tab character; YAML indents with spaces only"),
    ("expected <block end>", "the indentation does not line up"),
    ("mapping values are not allowed here", "unexpected ':' (check the indentation, or quote "
                                            "the value)"),
    ("could not find expected ':'", "expected 'key: value' (a ':' is missing?)"),
    ("expected ',' or '}'", "expected ',' or '}' inside {...} (a comma is missing?)"),
    ("expected ',' or ']'", "expected ',' or ']' inside [...] (a comma is missing?)"),
    ("found undefined alias", "an undefined alias ('*' starts an alias; quote the value)"),
)


def _read_source(source: str | Path) -> tuple[str, str]:
    """The study's display name (path or ``zoo:NAME``) and its text."""
    text_source = str(source)
    if text_source.startswith("zoo:"):
        name = text_source[4:]
        names = zoo_names()
        if name not in names:
            hint = _did_you_mean(name, names, "zoo:") or " (one of " + ", ".join(
                f"zoo:{n}" for n in names) + ")"
            raise SpecError(f"{text_source}: Expected a built-in study, received "
                            f"'{text_source}'{hint}")
        return text_source, resources.files("archlab").joinpath(f"zoo/{name}.yaml").read_text()
    path = Path(source)
    try:
        return str(path), path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: No such study file{_path_hint(path)}") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: Expected a study file, received a directory") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: Expected a YAML text file (UTF-8), received binary data") \
            from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the study file ({exc.strerror})") from None


def _path_hint(path: Path) -> str:
    """For a missing study file: a built-in study or a sibling file with a close name."""
    if not path.suffix and _closest(path.name, zoo_names()):
        return f" (did you mean 'zoo:{_closest(path.name, zoo_names())}'?)"
    try:
        siblings = [p.name for p in path.parent.iterdir()
                    if p.suffix in (".yaml", ".yml", ".json") and p.is_file()]
    except OSError:
        siblings = []
    close = _closest(path.name, siblings)
    return f" (did you mean '{path.parent / close}'?)" if close else ""


# ---------------------------------------------------------------------------------------------
# Error messages: one line, "<file>: model 'm', layer 3 (Conv2D), field 'filters': Expected ...,
# received ...", Keras's wording, with "did you mean" where a name is close.

_PAIR_FIELDS = ("kernel_size", "strides", "pool_size")
# Fields that are a literal or a mapping: what to say when the value is neither.
_UNION_FORMS = {
    "validation": "'test' or {split: FRACTION} (e.g. {split: 0.1})",
    "preprocessing": "'scale' or {normalize: {axis: 1, order: 2}}",
}
# Names people bring from Keras aliases, PyTorch or other libraries.
_LAYER_ALIASES = {
    "conv2d": "Conv2D", "convolution2d": "Conv2D", "linear": "Dense",
    "maxpool2d": "MaxPooling2D", "maxpool": "MaxPooling2D", "maxpooling": "MaxPooling2D",
    "avgpool2d": "AveragePooling2D", "averagepool2d": "AveragePooling2D",
    "globalavgpool2d": "GlobalAveragePooling2D", "globalmaxpool2d": "GlobalMaxPooling2D",
    "batchnorm": "BatchNormalization", "batchnorm2d": "BatchNormalization",
    "batchnorm1d": "BatchNormalization", "concat": "Concatenate",
}
_ACTIVATION_LAYERS = ("relu", "softmax", "elu", "sigmoid", "tanh", "gelu")
_NOTHING = object()


def _closest(name: Any, options: Any) -> str | None:
    """The option a mistyped ``name`` most likely meant (case and punctuation ignored)."""
    if not isinstance(name, str) or not name:
        return None
    options = [str(o) for o in options]

    def norm(s: str) -> str:
        return re.sub(r"[^a-z0-9]", "", s.lower())

    by_norm = {norm(o): o for o in options}
    if norm(name) in by_norm:
        return by_norm[norm(name)]
    for o in options:  # two letters swapped: sdg -> sgd
        if len(o) == len(name) > 2 and sorted(o.lower()) == sorted(name.lower()):
            return o
    close = difflib.get_close_matches(name.lower(), [o.lower() for o in options], n=1,
                                      cutoff=0.65)
    return next(o for o in options if o.lower() == close[0]) if close else None


def _did_you_mean(name: Any, options: Any, prefix: str = "") -> str:
    close = _closest(name, options)
    return f" (did you mean '{prefix}{close}'?)" if close else ""


def _show(value: Any, limit: int = 60) -> str:
    """A value as the user wrote it in YAML (null, true, 'text', [1, 2], {a: 1}), shortened."""
    def flow(v: Any) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {flow(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(flow(x) for x in v) + "]"
        if isinstance(v, BaseModel):
            return flow(v.model_dump())
        return repr(v)

    text = " ".join(flow(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _members(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's annotation admits (through Optional, Union, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        for m in _members(arg):
            if m not in found:
                found.append(m)
    return found


def _tag(cls: type[BaseModel]) -> str:
    return str(cls.model_fields["name"].default) if cls in _OPTIMIZERS.values() else cls.__name__


class _Place:
    """Where a pydantic error location points: printable parts and the owning schema class."""

    def __init__(self, loc: tuple[Any, ...]) -> None:
        from archlab._layers import LAYER_TYPES

        self.parts: list[str] = []  # "model 'm1'", "layer 3 (Conv2D)", "branch 2"
        self.fields: list[str | int] = []  # field path inside the last part
        self.owner: type[BaseModel] | None = None  # the class whose field fields[-1] is
        cls: type[BaseModel] | None = Study
        tags: dict[str, type[BaseModel]] = {}
        i = 0
        while i < len(loc):
            key, nxt = loc[i], loc[i + 1] if i + 1 < len(loc) else None
            if cls is Study and key == "models" and nxt is not None:
                self.parts.append(f"model '{nxt}'")
                self.fields, cls, tags, i = [], ModelSpec, {}, i + 2
                continue
            if key in ("layers", "branches") and isinstance(nxt, int) and cls is not None \
                    and cls.__name__ in ("ModelSpec", "Concatenate"):
                i += 2
                index = nxt
                if key == "branches":
                    self.parts.append(f"branch {nxt + 1}")
                    if not (i < len(loc) and isinstance(loc[i], int)):
                        self.fields, cls, tags = [], None, {}
                        continue
                    index, i = loc[i], i + 1
                tag = loc[i] if i < len(loc) and loc[i] in LAYER_TYPES else None
                self.parts.append(f"layer {index + 1} ({tag})" if tag else f"layer {index + 1}")
                i += 1 if tag else 0
                self.fields, self.owner = [], None
                cls, tags = (LAYER_TYPES[tag] if tag else None), {}
                continue
            i += 1
            if isinstance(key, str) and key in tags:  # a union member's tag: sgd, Split, ...
                cls, tags = tags[key], {}
            elif isinstance(key, str) and (key.startswith(("literal[", "function-"))
                                           or key == "[key]"):
                cls, tags = None, {}
            elif isinstance(key, str):
                self.fields.append(key)
                self.owner = cls
                field = cls.model_fields.get(key) if cls is not None else None
                members = _members(field.annotation) if field is not None else []
                cls = members[0] if len(members) == 1 else None
                tags = {_tag(m): m for m in members}
            else:
                self.fields.append(key)

    @property
    def field(self) -> str | None:
        names = [f for f in self.fields if isinstance(f, str)]
        return names[-1] if names else None

    @property
    def noun(self) -> str:
        """Keras calls a layer's or an optimizer's settings arguments."""
        owner = self.owner
        is_call = owner is not None and (owner in _OPTIMIZERS.values()
                                         or owner.model_fields.get("type") is not None)
        return "argument" if is_call else "field"

    def text(self) -> str:
        segments = list(self.parts)
        path = ""
        for f in self.fields:
            if isinstance(f, int):
                if path:
                    segments.append(f"field '{path}'")
                    path = ""
                segments.append(f"item {f + 1}")
            else:
                path = f"{path}.{f}" if path else f
        if path:
            segments.append(f"field '{path}'")
        return ", ".join(segments)


def _where(loc: tuple[Any, ...]) -> str:
    """Turn a pydantic error location into "model 'm1', layer 3 (Conv2D), field 'filters'"."""
    return _Place(tuple(loc)).text()


def _raw(data: Any, loc: tuple[Any, ...]) -> Any:
    """The value the user wrote at a pydantic error location (``_NOTHING`` if not found)."""
    from archlab._layers import LAYER_TYPES

    cur = data
    for key in loc:
        if isinstance(cur, dict) and key in cur:
            cur = cur[key]
            if key in LAYER_TYPES and cur is None:
                cur = {}
        elif isinstance(cur, list) and isinstance(key, int) and 0 <= key < len(cur):
            cur = cur[key]
        elif isinstance(key, str) and key in LAYER_TYPES and cur == key:
            cur = {}  # a bare layer name
        elif isinstance(key, str) and key in _OPTIMIZERS and isinstance(cur, str):
            cur = {"name": cur}
        elif isinstance(key, str) and (key in _OPTIMIZERS or key.startswith("literal[")
                                       or key[:1].isupper()):
            continue  # a union tag: same value
        else:
            return _NOTHING
    return cur


def _bounds(owner: type[BaseModel] | None, field: str | None,
            ctx: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """A numeric field's kind ('integer' or 'number') and its bounds (gt, ge, lt, le)."""
    kind, bounds = "number", {}
    info = owner.model_fields.get(field) if owner is not None and field else None
    if info is not None:
        metadata = list(info.metadata)
        stack = [info.annotation]
        while stack:
            ann = stack.pop()
            if ann is int:
                kind = "integer"
            for arg in get_args(ann):
                if isinstance(arg, FieldInfo):
                    metadata += arg.metadata
                else:
                    stack.append(arg)
        for m in metadata:
            for b in ("gt", "ge", "lt", "le"):
                if getattr(m, b, None) is not None:
                    bounds[b] = getattr(m, b)
    for b in ("gt", "ge", "lt", "le"):
        if b not in bounds and b in ctx:
            bounds[b] = ctx[b]
    return kind, bounds


def _expected_number(place: _Place, err: Any) -> str:
    kind, b = _bounds(place.owner, place.field, err.get("ctx") or {})
    if err["type"].startswith("int") or (err["type"] in ("float_type", "float_parsing")
                                         and kind == "integer"):
        kind = "integer"
    lower = f"> {b['gt']:g}" if "gt" in b else f">= {b['ge']:g}" if "ge" in b else ""
    upper = f"< {b['lt']:g}" if "lt" in b else f"<= {b['le']:g}" if "le" in b else ""
    if lower == "> 0" and not upper:
        return f"a positive {kind}"
    if lower and upper:
        return f"{_a(kind)} {lower} and {upper}"
    return f"{_a(kind)} {lower or upper}".rstrip()


def _unquote_hint(value: Any) -> str:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return f" (write {value.strip()} without quotes)"
    return ""


def _layer_example(name: str, value: Any = _NOTHING) -> str:
    """``Dense: {units: ...}``: the layer with its required (else its first) argument."""
    from archlab._layers import LAYER_TYPES

    cls = LAYER_TYPES[name]
    args = [f for f, info in cls.model_fields.items() if f != "type" and info.is_required()]
    if not args:
        first = next((f for f in cls.model_fields if f != "type"), None)
        return f"{name}: {{{first}: ...}}" if first else name
    if value is not _NOTHING and len(args) == 1:
        return f"{name}: {{{args[0]}: {value}}}"
    return f"{name}: {{" + ", ".join(f"{f}: ..." for f in args) + "}"


def _describe(err: Any, data: Any = None) -> str:
    """The message of one (already merged) error, Keras-style: Expected ..., received ...."""
    from archlab._layers import LAYER_TYPES

    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    loc = tuple(err["loc"])
    place = _Place(loc)
    field, got = place.field, _show(value)
    if kind == "missing":
        return f"Missing required {place.noun} '{loc[-1]}'"
    if kind == "extra_forbidden":
        return f"Unknown {place.noun} '{loc[-1]}'" + _extra_hint(err, data)
    if kind == "pair":
        hint = ""
        if isinstance(value, str) and re.fullmatch(r"\W*(\d+)\s*[x,*\s]\s*(\d+)\W*", value):
            a, b = re.findall(r"\d+", value)
            hint = f" (write [{a}, {b}])"
        elif isinstance(value, str) and value.lstrip().startswith("("):
            hint = " (YAML has no tuples: write a list such as [3, 3])"
        return f"Expected a positive integer or [height, width], received {got}{hint}"
    if kind == "union_form":
        return f"Expected {ctx['form']}, received {got}" + _unquote_hint(value)
    if kind == "unknown_layer":
        name = str(ctx.get("name", value))
        close = _LAYER_ALIASES.get(re.sub(r"[^a-z0-9]", "", name.lower())) or _closest(
            name, LAYER_TYPES)
        if name.lower() in ("input", "inputlayer"):
            return (f"Unknown layer '{name}' (archlab feeds the dataset's images to the first "
                    "layer; remove this one)")
        if name.lower() in _ACTIVATION_LAYERS:
            return (f"Unknown layer '{name}' (did you mean 'Activation: {{activation: "
                    f"{name.lower()}}}'?)")
        if "(" in name:
            return (f"Unknown layer '{name}' (write a layer as a YAML mapping, e.g. "
                    "'- Dense: {units: 10}', not as a Python call)")
        if close:
            return f"Unknown layer '{name}' (did you mean '{close}'?)"
        return f"Unknown layer '{name}'; expected one of {', '.join(LAYER_TYPES)}"
    if kind == "unknown_optimizer":
        name = ctx.get("name", value)
        hint = _did_you_mean(str(name), _OPTIMIZERS)
        known = f"; expected one of {', '.join(_OPTIMIZERS)}"
        return f"Unknown optimizer '{name}'" + (hint or known)
    if kind == "layer_item":
        if value is None:
            return ("Expected a layer (e.g. '- Flatten' or '- Dense: {units: 10}'), received "
                    "an empty list item")
        if isinstance(value, dict) and len(value) > 1:
            names = ", ".join(str(k) for k in value)
            return (f"Expected one layer per list item, received {len(value)} in one item "
                    f"({names}); start each layer with '- '")
        return (f"Expected a layer (e.g. '- Flatten' or '- Dense: {{units: 10}}'), received "
                f"{got}")
    if kind == "layer_args":
        name, args = next(iter(value.items())) if isinstance(value, dict) and value else ("", "")
        hint = ""
        if name in LAYER_TYPES:
            plausible = (isinstance(args, int | float) and not isinstance(args, bool)
                         or isinstance(args, str) and name == "Activation")
            example = _layer_example(name, args if plausible else _NOTHING)
            hint = f" (did you mean '{example}'?)" if plausible and "..." not in example \
                else f" (write '{example}')"
        return f"Expected a mapping of arguments for {name}, received {_show(args)}{hint}"
    if kind == "lr_twice":
        return ("Expected one of 'lr' and 'learning_rate' (they are the same argument), "
                "received both")
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        close = _closest(value, options) if isinstance(value, str) else None
        if not options:
            expected = str(ctx.get("expected", "another value"))
        elif len(options) <= 4:
            expected = ", ".join(f"'{o}'" for o in options[:-1]) + f" or '{options[-1]}'" \
                if len(options) > 1 else f"'{options[0]}'"
        elif close:
            expected = _a(str(field or "value").replace("_", " "))
        else:
            expected = f"{_a(str(field or 'value').replace('_', ' '))} ({', '.join(options)})"
        return f"Expected {expected}, received {got}" + (f" (did you mean '{close}'?)"
                                                         if close else "")
    if kind in ("int_type", "int_parsing", "int_from_float", "float_type", "float_parsing",
                "greater_than", "greater_than_equal", "less_than", "less_than_equal",
                "finite_number", "multiple_of"):
        return f"Expected {_expected_number(place, err)}, received {got}" + _unquote_hint(value)
    if kind in ("bool_type", "bool_parsing"):
        return f"Expected true or false, received {got}"
    if kind == "string_type":
        quote = " (put it in quotes)" if isinstance(value, int | float) else ""
        return f"Expected a string, received {got}{quote}"
    if kind == "string_pattern_mismatch":
        what = "model name" if "models" in loc[:1] and "[key]" in loc else "name"
        return (f"Expected {_a(what)} made of letters, digits, '_', '.' and '-', "
                f"received {got}")
    if kind == "list_type":
        if field == "layers":
            return (f"Expected a list of layers, received {got} (start each layer on its own "
                    "line with '- ')")
        if field == "branches" or place.parts[-1:] and place.parts[-1].startswith("branch"):
            return f"Expected a list of branches, each a list of layers, received {got}"
        return f"Expected a list, received {got}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        cls_name = ctx.get("class_name", "")
        if field == "models" and not place.parts:
            return f"Expected a mapping of model names to models, received {got}"
        if cls_name == "ModelSpec" or (place.parts[-1:] and place.parts[-1].startswith("model")
                                       and not place.fields):
            hint = " (put the layers under 'layers:')" if isinstance(value, list) else ""
            return f"Expected a model (a mapping with 'layers'), received {got}{hint}"
        if cls_name == "Regularizer":
            hint = (f" (did you mean '{{l2: {value}}}'?)"
                    if isinstance(value, int | float) and not isinstance(value, bool) else "")
            return f"Expected a regularizer such as {{l2: 0.01}}, received {got}{hint}"
        return f"Expected a mapping, received {got}"
    if kind in ("too_short", "too_long"):
        bound = ctx.get("min_length" if kind == "too_short" else "max_length")
        noun = {"models": "model", "layers": "layer", "branches": "branch"}.get(
            str(field), "item")
        plural = noun + ("es" if noun.endswith("ch") else "s")
        count = ctx.get("actual_length", len(value) if hasattr(value, "__len__") else "?")
        received = "none" if count == 0 else str(count)
        hint = " (for one branch, list its layers in the model itself)" \
            if noun == "branch" else ""
        word = "at least" if kind == "too_short" else "at most"
        return (f"Expected {word} {bound} {noun if bound == 1 else plural}, received "
                f"{received}{hint}")
    if kind == "union_tag_not_found":
        if field == "optimizer":
            return ("Expected an optimizer name, as in 'optimizer: adam' or 'optimizer: {name: "
                    f"adam, learning_rate: 0.001}}', received {got}")
        return f"Expected a mapping with {ctx.get('discriminator', 'a tag')}, received {got}"
    if kind == "union_tag_invalid":
        tag = ctx.get("tag", value)
        return f"Expected one of {ctx.get('expected_tags', '?')}, received {_show(tag)}"
    msg = str(err["msg"])
    if msg.startswith("Input should be "):
        return f"Expected {msg.removeprefix('Input should be ')}, received {got}"
    return f"{msg.removeprefix('Value error, ')} (received {got})"


def _extra_hint(err: Any, data: Any = None) -> str:
    """For an unknown field: the known one it is close to (kernal_size -> kernel_size), the
    section it belongs in (learning_rate under train -> under optimizer), or the list."""
    if err["type"] != "extra_forbidden":
        return ""
    loc = tuple(err["loc"])
    key = str(loc[-1])
    owner = _Place(loc).owner
    if owner is None:
        return ""
    known = sorted((f for f in owner.model_fields if f != "type"),
                   key=lambda f: not owner.model_fields[f].is_required())
    if owner in _OPTIMIZERS.values():
        known.append("lr")
    close = _closest(key, known)
    if close:
        return f" (did you mean '{close}'?)"
    optimizer_args = {f for c in _OPTIMIZERS.values() for f in c.model_fields} | {"lr"}
    if owner.model_fields.get("type") is not None and key == "input_shape":
        return " (archlab takes the input shape from the dataset; remove it)"
    if owner is Study and key in TrainSpec.model_fields:
        return f" ('{key}' belongs under 'train:')"
    if owner is Study and key in DataSpec.model_fields:
        return f" ('{key}' belongs under 'data:')"
    if owner is Study and key == "layers":
        return " (layers belong to a model: 'models: {NAME: {layers: [...]}}')"
    if owner is ModelSpec and key in TrainSpec.model_fields:
        return f" (a model's own '{key}' belongs under its 'train:')"
    if owner in (TrainSpec, TrainOverride) and key in optimizer_args:
        return (f" ('{key}' is an optimizer argument: 'optimizer: {{name: adam, {key}: ...}}')")
    if owner.model_fields.get("type") is not None:
        from archlab._layers import LAYER_TYPES

        elsewhere = [n for n, c in LAYER_TYPES.items() if key in c.model_fields]
        if elsewhere:
            layer = owner.model_fields["type"].default
            required = [f for f in known if owner.model_fields[f].is_required()]
            if len(required) == 1:
                return f" (that is {_a(elsewhere[0])} argument; did you mean '{required[0]}'?)"
            more = ", ..." if len(known) > 3 else ""
            return (f" (that is {_a(elsewhere[0])} argument; {layer} takes "
                    f"{', '.join(known[:3])}{more})")
    return f"; expected one of {', '.join(known)}" if known else ""


def _merged(exc: ValidationError, data: Any) -> list[dict[str, Any]]:
    """pydantic's errors with one entry per user mistake.

    A kernel_size of [3] is one error, not "item 2 missing"; a union field (validation:
    'test' or {split: ...}) is one error, not one per member; "missing kernel_size" is dropped
    when "unknown kernal_size" explains it.
    """
    out: list[dict[str, Any]] = []
    done: set[tuple[Any, ...]] = set()
    raw = [dict(e) for e in exc.errors()]
    for err in raw:
        loc = tuple(err["loc"])
        pair = next((j for j in range(len(loc) - 1, 0, -1)
                     if loc[j] in _PAIR_FIELDS and _Place(loc[: j + 1]).noun == "argument"),
                    None)
        if pair == len(loc) - 1 and err["type"] == "missing":
            pair = None  # the whole argument is missing: say so
        union = next((j for j in range(2, len(loc)) if loc[0] == "data"
                      and loc[j - 1] in _UNION_FORMS and (
            str(loc[j]).startswith("literal[") or str(loc[j])[:1].isupper())), None)
        if pair is not None:
            key = loc[: pair + 1]
            if key in done:
                continue
            done.add(key)
            value = _raw(data, key)
            err = {"type": "pair", "loc": key, "msg": "",
                   "input": err.get("input") if value is _NOTHING else value}
        elif union is not None:
            key = loc[:union]
            literal = next(e for e in raw if tuple(e["loc"][:union]) == key
                           and str(e["loc"][union]).startswith("literal["))
            if isinstance(literal.get("input"), dict):
                if str(loc[union]).startswith("literal["):
                    continue  # a mapping: the mapping member's errors say what is wrong
            else:
                if key in done:
                    continue
                done.add(key)
                err = {"type": "union_form", "loc": key, "msg": "", "input": literal.get("input"),
                       "ctx": {"form": _UNION_FORMS[str(key[-1])]}}
        out.append(err)
    # "Unknown field 'kernal_size'" explains "missing field 'kernel_size'": keep the first.
    explained = set()
    for err in out:
        if err["type"] == "extra_forbidden":
            hint = _extra_hint(err)
            close = re.match(r" \(did you mean '([^']+)'\?\)$", hint)
            if close:
                explained.add((*tuple(err["loc"])[:-1], close.group(1)))
    out = [e for e in out if not (e["type"] == "missing" and tuple(e["loc"]) in explained)]
    # Within one mapping, an unknown key is the likelier mistake: report it before a missing one.
    first: dict[tuple[Any, ...], int] = {}
    for i, e in enumerate(out):
        first.setdefault(tuple(e["loc"])[:-1], i)
    return [e for _, e in sorted(enumerate(out), key=lambda ie: (
        first[tuple(ie[1]["loc"])[:-1]], ie[1]["type"] != "extra_forbidden", ie[0]))]


def spec_error(source: str, exc: ValidationError, data: Any = None) -> SpecError:
    """Format the first validation error as one line naming file, model, layer and field."""
    try:
        errors = _merged(exc, data)
        err = errors[0]
        loc = tuple(err["loc"])
        if err["type"] in ("missing", "extra_forbidden"):
            loc = loc[:-1]  # the message names the field
        elif err["type"] == "layer_args" and isinstance(err.get("input"), dict):
            loc = (*loc, *list(err["input"])[:1])  # the layer's name: "layer 2 (Dense)"
        where = _where(loc)
        message = _describe(err, data)
    except Exception:  # noqa: BLE001 - a message bug must not hide the user's mistake
        errors = exc.errors()
        err = errors[0]
        where = ", ".join(str(k) for k in err["loc"])
        message = f"{err['msg']}, received {_show(err.get('input'))}"
    more = len(errors) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return SpecError(" ".join(f"{source}: {where + ': ' if where else ''}{message}".split()))


def parse_study(data: Any, source: str = "<memory>") -> Study:
    """Validate a study given as a dict (the parsed YAML)."""
    if not isinstance(data, dict):
        received = {type(None): "an empty file", list: "a list", str: f"the text {_show(data)}"}
        raise SpecError(f"{source}: Expected a mapping with 'name' and 'models' at the top "
                        f"level, received {received.get(type(data), _show(data))}")
    try:
        study = Study.model_validate(data)
    except ValidationError as exc:
        raise spec_error(source, exc, data) from None
    study._source = source
    return study


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key '{key}' (each key may appear once)")
        out[key] = value
    return out


def load_study(source: str | Path) -> Study:
    """Load and validate a study from a YAML (or JSON) file, or a built-in one as ``zoo:NAME``.

    Every error is a :class:`SpecError` whose message is one line naming the file, model,
    layer and field. Shapes are checked separately by :func:`archlab.validate_study`.
    """
    where, text = _read_source(source)
    if where.endswith(".json"):
        try:
            data = json.loads(text, object_pairs_hook=_json_object)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                            f"{exc.msg}") from None
        except ValueError as exc:  # a duplicate key
            raise SpecError(f"{where}: invalid JSON: {exc}") from None
        return parse_study(data, where)
    try:
        data = yaml.load(text, Loader=_YamlLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        problem = next((said for pyyaml, said in _YAML_PROBLEMS if pyyaml in problem), problem)
        raise SpecError(" ".join(f"{where}: invalid YAML{pos}: {problem}".split())) from None
    return parse_study(data, where)


def dump_study(study: Study) -> str:
    """The study as YAML text (round-trips through :func:`load_study`)."""
    return yaml.safe_dump(study.to_config(), sort_keys=False)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
