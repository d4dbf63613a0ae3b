"""A study's ``search:``: an Optuna search over dotted paths of one of its models (the base).

The paths are the sweep's (spec/sweep.py): ``train.batch_size``,
``train.optimizer.learning_rate``, ``layers.1.Dense.units``. Each trial is a model built from
the base by setting each path to the value the sampler drew, named ``BASE.trialNNN`` (Optuna's
trial number) and trained like any model. The whole search is checked before anything trains:
the base is a model of the study, every path addresses it, and the points built from the
space's bounds (each parameter's low and high value, each choice, and the all-low and all-high
corners) validate. Errors are one line naming the file, the search, the path and the field.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from archlab.fields import MAX_NAME_LENGTH, ConfirmRepeats, NonNegInt, PosInt, Strict
from archlab.spec.sweep import _check, _set

if TYPE_CHECKING:
    from archlab.spec.schema import Study

__all__ = ["MAX_TRIALS", "ChoiceParam", "Confirm", "FloatParam", "HyperbandArgs", "IntParam",
           "MedianArgs", "Pruner", "SearchSpec", "check_search", "grid_values", "search_place",
           "search_points", "trial_name", "trial_point"]

#: Trials one search may ask for (each is a run with its own store row and directory).
MAX_TRIALS = 10_000
#: Points a grid search may enumerate (the product of its parameters' values).
MAX_GRID = 100_000


def _fail(message: str) -> PydanticCustomError:
    """An error that spec/messages.py prints as it is (after the file name)."""
    return PydanticCustomError("search", "{message}", {"message": message})


class IntParam(Strict):
    """An integer in [low, high] (both included), as Optuna's ``suggest_int``."""

    int: Annotated[list[StrictInt], Field(min_length=2, max_length=2)]
    log: StrictBool = False
    step: PosInt = 1

    @model_validator(mode="after")
    def _bounds(self) -> IntParam:
        low, high = self.int
        if low > high:
            raise PydanticCustomError("search_bounds", "low > high", {"low": low, "high": high})
        if self.log and low < 1:
            raise PydanticCustomError("search_log", "log needs low >= 1", {"low": low})
        if self.log and self.step != 1:
            raise PydanticCustomError("search_log_step", "log with a step", {})
        return self

    @property
    def low(self) -> int:
        return self.int[0]

    @property
    def high(self) -> int:
        # Optuna's highest value on the step grid (low + k * step <= high).
        return self.int[0] + (self.int[1] - self.int[0]) // self.step * self.step


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class FloatParam(Strict):
    """A float in [low, high], as Optuna's ``suggest_float`` (``log``: sampled in log space)."""

    float: Annotated[list[StrictFloat | StrictInt], Field(min_length=2, max_length=2)]
    log: StrictBool = False
    step: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> FloatParam:
        low, high = self.float
        if not (math.isfinite(low) and math.isfinite(high)):
            raise PydanticCustomError("search_finite", "not finite", {})
        if low > high:
            raise PydanticCustomError("search_bounds", "low > high", {"low": low, "high": high})
        if self.log and low <= 0:
            raise PydanticCustomError("search_log", "log needs low > 0", {"low": low})
        if self.log and self.step is not None:
            raise PydanticCustomError("search_log_step", "log with a step", {})
        return self

    @property
    def low(self) -> float:
        return float(self.float[0])

    @property
    def high(self) -> float:
        low, high = float(self.float[0]), float(self.float[1])
        if self.step is None:
            return high
        return low + math.floor((high - low) / self.step + 1e-9) * self.step


ChoiceValue = StrictBool | StrictInt | StrictFloat | str | None


class ChoiceParam(Strict):
    """One of the listed values, as Optuna's ``suggest_categorical``."""

    choice: Annotated[list[ChoiceValue], Field(min_length=1)]

    @model_validator(mode="after")
    def _distinct(self) -> ChoiceParam:
        seen: list[Any] = []
        for v in self.choice:
            if any(type(v) is type(s) and v == s for s in seen):
                raise PydanticCustomError("search_twice", "listed twice", {"value": v})
            seen.append(v)
        return self


def _param_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for kind in ("int", "float", "choice"):
            if kind in value:
                return kind
    return None


Param = Annotated[
    Annotated[IntParam, Tag("int")] | Annotated[FloatParam, Tag("float")]
    | Annotated[ChoiceParam, Tag("choice")],
    Discriminator(_param_kind, custom_error_type="search_param",
                  custom_error_message="not a parameter"),
]


class MedianArgs(Strict):
    """Optuna's MedianPruner arguments (its names and defaults)."""

    n_startup_trials: NonNegInt = 5
    n_warmup_steps: NonNegInt = 0
    interval_steps: PosInt = 1
    n_min_trials: PosInt = 1


class HyperbandArgs(Strict):
    """Optuna's HyperbandPruner arguments (its names and defaults); resources are epochs."""

    min_resource: PosInt = 1
    max_resource: PosInt | Literal["auto"] = "auto"
    reduction_factor: Annotated[int, Field(strict=True, ge=2, le=100)] = 3


def _pruner_form(value: Any) -> Any:
    if value == "none":
        return {}
    if value in ("median", "hyperband"):
        return {value: {}}
    if isinstance(value, str):
        raise PydanticCustomError("literal_error", "unknown pruner",
                                  {"expected": "'none', 'median' or 'hyperband'"})
    return value


class Pruner(Strict):
    """``none``, ``median``, ``hyperband``, or one of them with Optuna's arguments
    (``{median: {n_startup_trials: 3}}``). Reported values are the objective, per epoch."""

    median: MedianArgs | None = None
    hyperband: HyperbandArgs | None = None

    @model_validator(mode="after")
    def _one(self) -> Pruner:
        if self.median is not None and self.hyperband is not None:
            raise PydanticCustomError("search_pruner", "two pruners", {})
        return self

    @property
    def name(self) -> str:
        return "median" if self.median else "hyperband" if self.hyperband else "none"

    def to_config(self) -> Any:
        args = self.median or self.hyperband
        if args is None:
            return "none"
        dumped = args.model_dump(mode="json", exclude_defaults=True)
        return {self.name: dumped} if dumped else self.name


class Confirm(Strict):
    """Re-run the ``top`` best trials with ``repeats`` seeds (repeat i of every model shares a
    seed) before a winner is named: one lucky seed is not a result. ``repeats`` may be a race
    (``{min: 3, max: 10, until: decided}``): trials significantly worse than the best on the
    objective stop getting seeds (docs/statistics.md)."""

    top: PosInt = 3
    repeats: ConfirmRepeats = 5


class SearchSpec(Strict):
    base: str
    space: Annotated[dict[str, Param], Field(min_length=1)]
    trials: Annotated[int, Field(strict=True, gt=0, le=MAX_TRIALS)]
    sampler: Literal["tpe", "random", "grid"] = "tpe"  # Optuna's default sampler is TPE
    # Optuna's default pruner is the median pruner.
    pruner: Annotated[Pruner, BeforeValidator(_pruner_form)] = Pruner(median=MedianArgs())
    objective: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    confirm: Confirm = Confirm()

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.objective.endswith("accuracy") else "minimize"

    def to_config(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude={"pruner", "space"})
        out["space"] = {p: v.model_dump(mode="json", exclude_defaults=True)
                        for p, v in self.space.items()}
        out["pruner"] = self.pruner.to_config()
        return out


# ---------------------------------------------------------------------------------------------
# Points of the space


def trial_name(base: str, number: int) -> str:
    """The model name of trial ``number`` (Optuna's, from 0): ``mlp.trial007``."""
    return f"{base}.trial{number:03d}"


def trial_point(study: Study, values: dict[str, Any]) -> dict[str, Any]:
    """The base model's YAML with each path set to its value (and ``swept`` recording them)."""
    assert study.search is not None
    point = copy.deepcopy(study.models[study.search.base].to_config())
    point.pop("swept", None)
    raw_study = {"train": study.train.to_config()}

    def fail(message: str) -> None:
        raise _fail(f"search: {message}")

    for path, value in values.items():
        _set(point, raw_study, path, copy.deepcopy(value), fail)
    point["swept"] = dict(values)
    return point


def grid_values(param: IntParam | FloatParam | ChoiceParam) -> list[Any] | None:
    """Every value of a parameter a grid search enumerates; None for a float range."""
    if isinstance(param, ChoiceParam):
        return list(param.choice)
    if isinstance(param, IntParam):
        return list(range(param.low, param.int[1] + 1, param.step))
    return None


def search_points(spec: SearchSpec) -> list[tuple[str, dict[str, Any]]]:
    """The points checked before a search runs, each with a label: each path alone at its low
    and high value (at each choice), then the low and the high corner (every path at once)."""
    low = {p: (v.choice[0] if isinstance(v, ChoiceParam) else v.low)
           for p, v in spec.space.items()}
    high = {p: (v.choice[-1] if isinstance(v, ChoiceParam) else v.high)
            for p, v in spec.space.items()}
    points: list[tuple[str, dict[str, Any]]] = []
    for path, param in spec.space.items():
        values = param.choice if isinstance(param, ChoiceParam) else [low[path], high[path]]
        for i, v in enumerate(values):
            if i == 0 or v != values[0] or type(v) is not type(values[0]):
                points.append((f"path '{path}' at {_show(v)}", {path: v}))
    if len(spec.space) > 1:
        points += [("low corner", low), ("high corner", high)]
    return points


def _show(value: Any) -> str:
    from archlab.spec.locations import show  # locations imports the schema

    return show(value)


def search_place(loc: tuple[Any, ...]) -> str:
    """Where a pydantic error under ``search:`` points: "search, path 'P', field 'int'"."""
    parts = [str(p) for p in loc[1:]]
    if parts[:1] == ["space"] and len(parts) > 1:
        path, rest = parts[1], parts[2:]
        if len(rest) > 1 and rest[0] == rest[1]:
            rest = rest[1:]  # the parameter's kind, as pydantic tags it
        # A number's type ('float' after 'item 2') is pydantic's union member, not a field.
        rest = [r for i, r in enumerate(rest)
                if not (i and rest[i - 1].isdigit() and r in ("int", "float"))]
        fields = [f"item {int(r) + 1}" if r.isdigit() else r for r in rest]
        return f"search, path '{path}'" + (f", field '{'.'.join(fields)}'" if fields else "")
    return "search" + (f", field '{'.'.join(parts)}'" if parts else "")


def describe_search_error(kind: str, ctx: dict[str, Any], got: str) -> str:
    """The message of a ``search*`` error raised in this module (spec/messages.py asks)."""
    if kind == "search":
        return str(ctx["message"])
    return {
        "search_param": "Expected {int: [low, high]}, {float: [low, high]} or "
                        f"{{choice: [values]}}, received {got}",
        "search_bounds": f"Expected [low, high] with low <= high, received "
                         f"[{ctx.get('low')}, {ctx.get('high')}]",
        "search_log": f"Expected low > 0 for a log scale, received {ctx.get('low')}",
        "search_log_step": "Expected either log: true or a step, received both (Optuna "
                           "samples a log scale without a step)",
        "search_finite": f"Expected finite bounds, received {got}",
        "search_twice": f"Expected distinct choices, received {_show(ctx.get('value'))} twice",
        "search_pruner": f"Expected one pruner (median or hyperband), received {got}",
    }.get(kind, f"Expected a valid search, received {got}")


def check_search(study: Study) -> None:
    """Refuse a search that cannot run, before anything trains (raises errors that
    spec/messages.py words as one line naming the search, the path and the field)."""
    from archlab.spec.schema import Study as StudyClass  # the schema imports this module

    spec = study.search
    assert spec is not None
    base = spec.base
    if base not in study.models:
        from archlab.suggest import did_you_mean

        written = [n for n in study.models if n.startswith(base + "[")]
        if written:
            raise _fail(f"search, field 'base': Expected a model without a sweep, received "
                        f"'{base}' (a sweep of {len(written)} points)")
        raise _fail(f"search, field 'base': Expected a model of the study "
                    f"({', '.join(study.models)}), received '{base}'"
                    + did_you_mean(base, study.models))
    if len(trial_name(base, spec.trials * 2)) > MAX_NAME_LENGTH:
        raise _fail(f"search, field 'base': Expected a model name of at most "
                    f"{MAX_NAME_LENGTH - len(trial_name('', spec.trials * 2))} characters (its "
                    f"trials are named {trial_name(base, 7)}), received {len(base)} characters")
    taken = [n for n in study.models if n.startswith(base + ".trial")]
    if taken:
        raise _fail(f"search: the study has a model '{taken[0]}', a name the search gives its "
                    "trials (rename that model)")
    if spec.confirm.top > spec.trials:
        raise _fail(f"search, field 'confirm.top': Expected at most {spec.trials} (the "
                    f"number of trials), received {spec.confirm.top}")
    raw = study.models[base].to_config()
    for path in spec.space:
        def fail(message: str, path: str = path) -> None:
            raise _fail(f"search, path '{path}': {message}")
        _check(raw, path, fail)
    if spec.sampler == "grid":
        size = 1
        for path, param in spec.space.items():
            values = grid_values(param)
            if values is None:
                raise _fail(f"search, path '{path}': Expected {{int: ...}} or {{choice: ...}} "
                            "for a grid search, received a float range (list the values as "
                            "a choice)")
            if isinstance(param, IntParam) and param.log:
                raise _fail(f"search, path '{path}', field 'log': Expected no log scale in a "
                            "grid search (every value is tried), received true")
            size *= len(values)
            if size > MAX_GRID:
                raise _fail(f"search: Expected a grid of at most {MAX_GRID:,} points, "
                            f"received more")
        if spec.trials > size:
            raise _fail(f"search, field 'trials': Expected at most {size} for this grid (its "
                        f"points), received {spec.trials}")
    study_cfg = {"name": study.name, "seed": study.seed,
                 "data": study.data.model_dump(mode="json"), "train": study.train.to_config()}
    for label, values in search_points(spec):
        point = trial_point(study, values)
        try:
            StudyClass.model_validate({**study_cfg, "models": {base: point}})
        except ValidationError as exc:
            from archlab.spec.messages import spec_error  # messages imports the schema

            inner = str(spec_error("", exc, {**study_cfg, "models": {base: point}}))
            inner = inner.removeprefix(": ")
            raise _fail(f"search, {label}: {inner}") from None
