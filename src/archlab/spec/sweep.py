"""Sweeps (grids): a model's ``sweep:`` mapping of dotted paths to value lists, expanded into one
model per point of the cartesian product before validation.

A path addresses the model's own YAML: ``train.batch_size``, ``train.optimizer.learning_rate``
(the study's optimizer is copied into the model when it has none), ``layers.1.Dense.units``
(layer index, then the layer's name, then the argument). Each point is a model named
``mlp[batch_size=32,units=128]`` that records its values in ``swept: {path: value}``, so
results can be pivoted on a swept field. This module works on the parsed YAML (plain dicts),
before pydantic sees it, so every point is then validated like any model and an error names it.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from archlab.errors import SpecError
from archlab.fields import MAX_NAME_LENGTH
from archlab.suggest import did_you_mean

__all__ = [
    "MAX_POINTS",
    "ModelName",
    "expand_sweeps",
    "point_name",
    "sweep_note",
    "sweep_sizes",
    "swept_label",
]

#: Points one model's sweep may expand to (each is a model with its own runs).
MAX_POINTS = 1000
#: A generated name is a model name plus its values; report figures use it as a file name
#: (``NAME_curves.png``), and file systems allow 255 bytes.
MAX_GENERATED_LENGTH = 200

_PLAIN = r"[A-Za-z0-9_.-]+"
_TOKEN = r"[A-Za-z0-9_.+-]+"
_PLAIN_RE = re.compile(rf"^{_PLAIN}$")
_GENERATED_RE = re.compile(rf"^{_PLAIN}\[{_TOKEN}={_TOKEN}(?:,{_TOKEN}={_TOKEN})*\]$")


def _model_name(name: str) -> str:
    """A model name: a plain name (letters, digits, '_', '.', '-'), or a sweep point's name."""
    if _GENERATED_RE.match(name):
        if len(name) > MAX_GENERATED_LENGTH:
            raise PydanticCustomError("string_too_long", "too long",
                                      {"max_length": MAX_GENERATED_LENGTH})
        return name
    if not _PLAIN_RE.match(name):
        raise PydanticCustomError("string_pattern_mismatch", "not a name", {"pattern": _PLAIN})
    if len(name) > MAX_NAME_LENGTH:
        raise PydanticCustomError("string_too_long", "too long", {"max_length": MAX_NAME_LENGTH})
    if name in (".", ".."):
        raise PydanticCustomError("unsafe_name", "'{name}' is not a directory name",
                                  {"name": name})
    return name


#: A key of ``models:``: a plain name, or a generated ``NAME[field=value,...]``.
ModelName = Annotated[str, Field(min_length=1), AfterValidator(_model_name)]


def _value_token(value: Any, index: int) -> str:
    """A value as it appears in a generated name: 32, 0.01, sgd, 3x3, or its position."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float | str):
        text = str(value)
    elif isinstance(value, list) and value and all(
            isinstance(v, int | float | str) and not isinstance(v, bool) for v in value):
        text = "x".join(str(v) for v in value)
    else:
        text = f"option{index + 1}"
    text = re.sub(r"[^A-Za-z0-9_.+-]", "_", text)
    return text or f"option{index + 1}"


def swept_label(path: str, paths: list[str]) -> str:
    """The shortest tail of ``path`` that no other swept path ends with (units, 1.Dense.units)."""
    parts = path.split(".")
    for n in range(1, len(parts) + 1):
        tail = ".".join(parts[-n:])
        if not any(p != path and (p == tail or p.endswith("." + tail)) for p in paths):
            return tail
    return path


def point_name(model: str, labels: list[str], tokens: list[str]) -> str:
    return f"{model}[" + ",".join(f"{k}={v}" for k, v in zip(labels, tokens, strict=True)) + "]"


def _fail(source: str, model: str, path: Any, message: str) -> SpecError:
    return SpecError(f"{source}: model '{model}', sweep '{path}': {message}")


def _layer_name(item: Any) -> str | None:
    """A layer item's name ('Flatten' or the key of {Dense: {...}}), else None."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and len(item) == 1:
        key = next(iter(item))
        return key if isinstance(key, str) else None
    return None


def _set(model: dict[str, Any], study: dict[str, Any], path: str, value: Any,
         fail: Any) -> None:
    """Set ``value`` at the dotted ``path`` of the raw ``model`` (checked by :func:`_check`)."""
    parts = path.split(".")
    node: Any = model
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            index = int(part)
            item = node[index]
            name = _layer_name(item)
            if name is not None and isinstance(item, str):
                node[index] = item = {name: {}}  # a bare 'Flatten' gets an argument mapping
            if name is not None:
                if item[name] is None:
                    item[name] = {}
                node = item
                continue
            node = item
            continue
        if not isinstance(node, dict):
            fail(f"'{'.'.join(parts[:i])}' is not a mapping, so it has no '{part}'")
        if part not in node or node[part] is None:
            if parts[0] == "train" and i == 1 and part == "optimizer":
                study_train = study.get("train")
                study_opt = study_train.get("optimizer") if isinstance(study_train, dict) \
                    else None
                node[part] = copy.deepcopy(study_opt) if study_opt is not None \
                    else {"name": "adam"}
            else:
                node[part] = {}
        if parts[0] == "train" and i == 1 and part == "optimizer" and isinstance(
                node[part], str):
            node[part] = {"name": node[part]}  # 'optimizer: sgd' becomes {name: sgd}
        node = node[part]
    if not isinstance(node, dict):
        fail(f"'{'.'.join(parts[:-1])}' is not a mapping, so it has no '{parts[-1]}'")
    if parts[-1] in ("lr", "learning_rate") and parts[:2] == ["train", "optimizer"]:
        node.pop("lr", None)  # Keras's alias: the swept value replaces either spelling
        node.pop("learning_rate", None)
    node[parts[-1]] = value


def _check(model: dict[str, Any], path: Any, fail: Any) -> None:
    """Refuse a path that does not address this model's YAML (before anything is set)."""
    if not isinstance(path, str) or not path:
        fail("Expected a dotted path such as 'train.batch_size' or 'layers.1.Dense.units', "
             "received a key that is not text")
    parts = path.split(".")
    if "" in parts:
        fail("Expected a dotted path such as 'layers.1.Dense.units', received an empty part")
    if parts[0] not in ("train", "layers"):
        fail(f"Expected a path that starts with 'train.' or 'layers.', received '{parts[0]}'"
             + did_you_mean(parts[0], ["train", "layers"]))
    if len(parts) < 2:
        fail(f"Expected a field under '{parts[0]}.', e.g. 'train.batch_size' or "
             "'layers.1.Dense.units'")
    if parts[0] != "layers":
        return
    layers = model.get("layers")
    i = 1
    while isinstance(layers, list):
        if not re.fullmatch(r"\d+", parts[i]):
            fail(f"Expected a layer index after '{'.'.join(parts[:i])}', received "
                 f"'{parts[i]}'")
        index = int(parts[i])
        if index >= len(layers):
            fail(f"no layer {index} (layers are numbered 0 to {len(layers) - 1})")
        name = _layer_name(layers[index])
        if name is None:
            return  # not a layer: validation says what is wrong with it
        if i + 1 >= len(parts) or parts[i + 1] != name:
            got = parts[i + 1] if i + 1 < len(parts) else "nothing"
            fail(f"layer {index} is {name}, received '{got}' (write "
                 f"'{'.'.join(parts[:i + 1])}.{name}.ARGUMENT')")
        if i + 2 >= len(parts):
            fail(f"Expected an argument of layer {index} ({name}) after "
                 f"'{'.'.join(parts[:i + 2])}' (write '{'.'.join(parts[:i + 2])}.ARGUMENT')")
        args = layers[index].get(name) if isinstance(layers[index], dict) else None
        # Into a merge layer's branches: 'layers.3.Concatenate.branches.0.1.Dense.units'.
        if isinstance(args, dict) and isinstance(args.get(parts[i + 2]), list) \
                and i + 3 < len(parts):
            branches = args[parts[i + 2]]
            if not re.fullmatch(r"\d+", parts[i + 3]) or int(parts[i + 3]) >= len(branches):
                fail(f"no branch '{parts[i + 3]}' in layer {index} ({name}); branches are "
                     f"numbered 0 to {len(branches) - 1}")
            layers, i = branches[int(parts[i + 3])], i + 4
            if i >= len(parts):
                fail("a path ends at a branch; name a layer and its argument")
            continue
        return


def _expand_model(name: str, model: dict[str, Any], study: dict[str, Any],
                  source: str) -> dict[str, dict[str, Any]]:
    from archlab.spec.locations import show  # locations imports the schema, which imports us

    sweep = model["sweep"]

    def fail_at(path: Any) -> Any:
        def fail(message: str) -> None:
            raise _fail(source, name, path, message)
        return fail

    if not isinstance(sweep, dict) or not sweep:
        raise SpecError(f"{source}: model '{name}', field 'sweep': Expected a mapping of dotted "
                        "paths to lists of values (e.g. {train.batch_size: [32, 128]}), "
                        f"received {show(sweep)}")
    for path, values in sweep.items():
        _check(model, path, fail_at(path))
        if not isinstance(values, list):
            fail_at(path)(f"Expected a list of values (e.g. [32, 128]), received {show(values)}")
        if not values:
            fail_at(path)("Expected a list of at least one value, received an empty list")
        tokens = [_value_token(v, i) for i, v in enumerate(values)]
        if len(set(tokens)) < len(tokens):
            twice = next(t for t in tokens if tokens.count(t) > 1)
            fail_at(path)(f"the value {twice} is listed twice")
    paths = list(sweep)
    count = math.prod(len(v) for v in sweep.values())
    if count > MAX_POINTS:
        raise SpecError(f"{source}: model '{name}', field 'sweep': Expected at most "
                        f"{MAX_POINTS} points, received {count:,} "
                        f"({' x '.join(str(len(v)) for v in sweep.values())})")
    labels = [swept_label(p, paths) for p in paths]
    base = {k: v for k, v in model.items() if k != "sweep"}
    out: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*(list(enumerate(v)) for v in sweep.values())):
        point = copy.deepcopy(base)
        for path, (_, value) in zip(paths, combo, strict=True):
            _set(point, study, path, copy.deepcopy(value), fail_at(path))
        tokens = [_value_token(v, i) for i, v in combo]
        generated = point_name(name, labels, tokens)
        if len(generated) > MAX_GENERATED_LENGTH:
            raise SpecError(f"{source}: model '{name}', field 'sweep': the generated name "
                            f"'{generated[:60]}...' is longer than {MAX_GENERATED_LENGTH} "
                            "characters (shorten the model name or the values)")
        point["swept"] = {p: copy.deepcopy(v) for p, (_, v) in zip(paths, combo, strict=True)}
        out[generated] = point
    return out


def expand_sweeps(data: Any, source: str = "<memory>") -> Any:
    """The parsed study with every model's ``sweep:`` expanded into one model per point.

    Anything that is not a study with swept models comes back unchanged (validation then
    says what is wrong with it); the input is never modified.
    """
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        return data
    models = data["models"]
    if not any(isinstance(m, dict) and "sweep" in m for m in models.values()):
        return data
    expanded: dict[Any, Any] = {}
    for name, model in models.items():
        if not (isinstance(model, dict) and "sweep" in model):
            expanded[name] = model
            continue
        for generated, point in _expand_model(str(name), model, data, source).items():
            if generated in models or generated in expanded:
                raise SpecError(f"{source}: model '{name}', field 'sweep': the point "
                                f"'{generated}' has the name of another model")
            expanded[generated] = point
    return {**data, "models": expanded}


def sweep_sizes(models: Mapping[str, Any]) -> dict[str, int]:
    """How many points each swept model expanded to, by its written name ({'mlp': 8})."""
    sizes: dict[str, int] = {}
    for name, model in models.items():
        if getattr(model, "swept", None) and "[" in name:
            base = name.split("[", 1)[0]
            sizes[base] = sizes.get(base, 0) + 1
    return sizes


def sweep_note(models: Mapping[str, Any]) -> str:
    """' (mlp: sweep of 8)' for a study with swept models, else ''."""
    sizes = sweep_sizes(models)
    return " (" + ", ".join(f"{b}: sweep of {k}" for b, k in sizes.items()) + ")" if sizes else ""
