"""Pydantic's validation errors as one line each: "<file>: model 'm', layer 3 (Conv2D), field
'filters': Expected ..., received ...", in Keras's wording, with "did you mean" where a name is
close.

The raising sites (validators in layers/, optimizers.py, fields.py) carry only data: an error
type and its ctx. Every message and every hint is worded here, once.
"""

from __future__ import annotations

import re
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from archlab.errors import SpecError
from archlab.layers import LAYER_TYPES, LayerSpec, Regularizer, layer_names
from archlab.optimizers import OPTIMIZERS
from archlab.spec.locations import NOTHING, Place, is_call, raw_value, show, where
from archlab.spec.schema import DataSpec, ModelSpec, NormalizeArgs, Study, TrainOverride, TrainSpec
from archlab.spec.search import describe_search_error, search_place
from archlab.suggest import closest, did_you_mean

__all__ = ["describe", "merged", "show", "spec_error"]

_PAIR_FIELDS = ("kernel_size", "strides", "pool_size")
# Fields that are a literal or a mapping: what to say when the value is neither.
_UNION_FORMS = {
    "validation": "'test' or {split: FRACTION} (e.g. {split: 0.1})",
    "preprocessing": "'scale' or {normalize: {axis: 1, order: 2}}",
}
# What a bare number means, for fields where the bounds alone do not say.
_FIELD_NOTES: dict[tuple[type[BaseModel], str], str] = {
    (NormalizeArgs, "axis"): " (an axis of the (images, height, width) array)",
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


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


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


def _expected_number(place: Place, err: Any) -> str:
    kind, b = _bounds(place.owner, place.field, err.get("ctx") or {})
    if err["type"].startswith("int") or (err["type"] in ("float_type", "float_parsing")
                                         and kind == "integer"):
        kind = "integer"

    def num(x: float) -> str:  # integers in full (2147483647, not 2.14748e+09)
        return str(x) if isinstance(x, int) else f"{x:g}"

    lower = f"> {num(b['gt'])}" if "gt" in b else f">= {num(b['ge'])}" if "ge" in b else ""
    upper = f"< {num(b['lt'])}" if "lt" in b else f"<= {num(b['le'])}" if "le" in b else ""
    # A large upper bound is a sanity limit (fields.MAX_SIZE): worth saying only to the value
    # that crossed it; a small one (a fraction's 1, an axis's 2) is part of what the field is.
    if err["type"] not in ("less_than", "less_than_equal") and b.get("lt", b.get("le", 0)) > 100:
        upper = ""
    finite = "finite " if err["type"] == "finite_number" else ""
    if lower == "> 0" and not upper:
        return f"a positive {finite}{kind}"
    if lower and upper:
        return f"{_a(finite + kind)} {lower} and {upper}"
    return f"{_a(finite + kind)} {lower or upper}".rstrip()


def _unquote_hint(value: Any) -> str:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return f" (write {value.strip()} without quotes)"
    return ""


def _layer_example(name: str, value: Any = NOTHING) -> str:
    """``Dense: {units: ...}``: the layer with its required (else its first) argument."""
    cls = LAYER_TYPES[name]
    args = [f for f, info in cls.model_fields.items() if f != "type" and info.is_required()]
    if not args:
        first = next((f for f in cls.model_fields if f != "type"), None)
        return f"{name}: {{{first}: ...}}" if first else name
    if value is not NOTHING and len(args) == 1:
        return f"{name}: {{{args[0]}: {value}}}"
    return f"{name}: {{" + ", ".join(f"{f}: ..." for f in args) + "}"


def describe(err: Any, data: Any = None) -> str:
    """The message of one (already merged) error, Keras-style: Expected ..., received ...."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    loc = tuple(err["loc"])
    place = Place(loc)
    field, got = place.field, show(value)
    if kind.startswith("search"):  # spec/search.py's own errors
        return describe_search_error(kind, ctx, got)
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
    if kind == "expected_received":  # a rule across fields: its validator words both halves
        return f"Expected {ctx['expected']}, received {ctx['received']}"
    if kind == "union_form":
        return f"Expected {ctx['form']}, received {got}" + _unquote_hint(value)
    if kind == "unknown_layer":
        name = str(ctx.get("name", value))
        close = _LAYER_ALIASES.get(re.sub(r"[^a-z0-9]", "", name.lower())) or closest(
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
        return f"Unknown layer '{name}'; expected one of {', '.join(layer_names())}"
    if kind == "unknown_optimizer":
        name = ctx.get("name", value)
        hint = did_you_mean(str(name), OPTIMIZERS)
        known = f"; expected one of {', '.join(OPTIMIZERS)}"
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
            example = _layer_example(name, args if plausible else NOTHING)
            hint = f" (did you mean '{example}'?)" if plausible and "..." not in example \
                else f" (write '{example}')"
        return f"Expected a mapping of arguments for {name}, received {show(args)}{hint}"
    if kind == "lr_twice":
        return ("Expected one of 'lr' and 'learning_rate' (they are the same argument), "
                "received both")
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        close = closest(value, options) if isinstance(value, str) else None
        if not options:
            expected = str(ctx.get("expected", "another value"))
        elif field == "dataset" and place.owner is DataSpec:
            expected = (f"a built-in dataset ({', '.join(options)}) or a source such as "
                        "{folder: PATH}")
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
        note = _FIELD_NOTES.get((place.owner, place.field), "") if place.owner and place.field \
            else ""
        return (f"Expected {_expected_number(place, err)}, received {got}{note}"
                + _unquote_hint(value))
    if kind in ("bool_type", "bool_parsing"):
        return f"Expected true or false, received {got}"
    if kind == "string_type":
        quote = " (put it in quotes)" if isinstance(value, int | float) else ""
        return f"Expected a string, received {got}{quote}"
    if kind in ("string_pattern_mismatch", "unsafe_name", "string_too_long", "string_too_short"):
        what = "model name" if "models" in loc[:1] and "[key]" in loc else "name"
        if kind == "unsafe_name":
            return (f"Expected {_a(what)} that can be a directory name, received {got} ('.' "
                    "and '..' name the current and the parent directory)")
        if kind == "string_too_long":
            return (f"Expected {_a(what)} of at most {ctx.get('max_length')} characters, "
                    f"received {len(value) if isinstance(value, str) else '?'} characters "
                    f"({show(value, 30)})")
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
        if field == "models" and not place.parts:
            return f"Expected a mapping of model names to models, received {got}"
        if place.target is ModelSpec:
            hint = " (put the layers under 'layers:')" if isinstance(value, list) else ""
            return f"Expected a model (a mapping with 'layers'), received {got}{hint}"
        if place.target is Regularizer:
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
        return f"Expected one of {ctx.get('expected_tags', '?')}, received {show(tag)}"
    msg = str(err["msg"])
    if msg.startswith("Input should be "):
        return f"Expected {msg.removeprefix('Input should be ')}, received {got}"
    return f"{msg.removeprefix('Value error, ')} (received {got})"


def _tuple_hint(key: str, loc: tuple[Any, ...], data: Any) -> str:
    """``{kernel_size: (3, 3)}`` splits at the comma into ``kernel_size: '(3'`` and a key
    ``'3)'``: name the field and the list to write."""
    tail = re.fullmatch(r"\s*(\d+)\s*\)\s*", key)
    if not tail:
        return ""
    parent = data
    for part in loc[:-1]:  # the mapping holding the key; tags pydantic adds are not in data
        if (isinstance(parent, dict) and part in parent
                or isinstance(parent, list) and isinstance(part, int) and part < len(parent)):
            parent = parent[part]
    for name, value in (parent.items() if isinstance(parent, dict) else []):
        head = re.fullmatch(r"\s*\(\s*(\d+)\s*", value) if isinstance(value, str) else None
        if head:
            return (f" (YAML has no tuples: write {name}: [{head.group(1)}, {tail.group(1)}], "
                    f"not {name}: ({head.group(1)}, {tail.group(1)}))")
    return f" (YAML has no tuples: write a list such as [{tail.group(1)}, {tail.group(1)}])"


def _extra_hint(err: Any, data: Any = None) -> str:
    """For an unknown field: the known one it is close to (kernal_size -> kernel_size), the
    section it belongs in (learning_rate under train -> under optimizer), or the list."""
    if err["type"] != "extra_forbidden":
        return ""
    loc = tuple(err["loc"])
    key = str(loc[-1])
    tuple_hint = _tuple_hint(key, loc, data)
    if tuple_hint:
        return tuple_hint
    owner = Place(loc).owner
    if owner is None:
        return ""
    known = sorted((f for f in owner.model_fields if f != "type"),
                   key=lambda f: not owner.model_fields[f].is_required())
    if is_call(owner) and not issubclass(owner, LayerSpec):  # an optimizer: Keras's alias
        known.append("lr")
    close = closest(key, known)
    if close:
        return f" (did you mean '{close}'?)"
    optimizer_args = {f for c in OPTIMIZERS.values() for f in c.model_fields} | {"lr"}
    if issubclass(owner, LayerSpec) and key == "input_shape":
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
    if issubclass(owner, LayerSpec):
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


def merged(exc: ValidationError, data: Any) -> list[dict[str, Any]]:
    """pydantic's errors with one entry per user mistake.

    A kernel_size of [3] is one error, not "item 2 missing"; a union field (validation:
    'test' or {split: ...}) is one error, not one per member; "missing kernel_size" is dropped
    when "unknown kernal_size" explains it.
    """
    out: list[dict[str, Any]] = []
    done: set[tuple[Any, ...]] = set()
    raw = [dict(e) for e in exc.errors()]
    for err in raw:
        # A learning_rate is a number or a schedule, repeats a count or a race: pydantic's name
        # for the branch is no place.
        err["loc"] = tuple(p for i, p in enumerate(err["loc"]) if not (
            p in ("number", "schedule") and i and err["loc"][i - 1] == "learning_rate")
            and not (p in ("count", "race") and i and err["loc"][i - 1] == "repeats"))
        loc = tuple(err["loc"])
        pair = next((j for j in range(len(loc) - 1, 0, -1)
                     if loc[j] in _PAIR_FIELDS and Place(loc[: j + 1]).noun == "argument"),
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
            value = raw_value(data, key)
            err = {"type": "pair", "loc": key, "msg": "",
                   "input": err.get("input") if value is NOTHING else value}
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
            close = re.search(r"did you mean '([^']+)'\?\)$", hint)
            if close:
                explained.add((*tuple(err["loc"])[:-1], close.group(1)))
    out = [e for e in out if not (e["type"] == "missing" and tuple(e["loc"]) in explained)]
    # Within one mapping, an unknown key is the likelier mistake: report it before a missing one.
    first: dict[tuple[Any, ...], int] = {}
    for i, e in enumerate(out):
        first.setdefault(tuple(e["loc"])[:-1], i)
    return [e for _, e in sorted(enumerate(out), key=lambda ie: (
        first[tuple(ie[1]["loc"])[:-1]], ie[1]["type"] != "extra_forbidden", ie[0]))]


#: At most this many errors of one study are listed (one line each); the rest are counted.
MAX_ERRORS = 20


def _line(source: str, err: dict[str, Any], data: Any) -> str:
    """One merged error as one line naming file, model, layer and field."""
    try:
        loc = tuple(err["loc"])
        if err["type"] in ("missing", "extra_forbidden"):
            loc = loc[:-1]  # the message names the field
        elif err["type"] == "layer_args" and isinstance(err.get("input"), dict):
            loc = (*loc, *list(err["input"])[:1])  # the layer's name: "layer 2 (Dense)"
        place = search_place(loc) if loc[:1] == ("search",) else where(loc)
        message = describe(err, data)
    except Exception:  # noqa: BLE001 - a message bug must not hide the user's mistake
        place = ", ".join(str(k) for k in err["loc"])
        message = f"{err.get('msg', 'invalid')}, received {show(err.get('input'))}"
    return " ".join(f"{source}: {place + ': ' if place else ''}{message}".split())


def spec_error(source: str, exc: ValidationError, data: Any = None) -> SpecError:
    """Every validation error of a study, one line each (the first :data:`MAX_ERRORS`, then a
    count): the error's message is the first line and ``(and N more errors)``; its ``lines``
    hold them all, so a user can fix a study in one pass."""
    try:
        errors = merged(exc, data)
    except Exception:  # noqa: BLE001 - as above
        errors = [dict(e) for e in exc.errors()]
    lines = list(dict.fromkeys(_line(source, err, data) for err in errors))
    more = len(lines) - 1
    error = SpecError(lines[0] + (f" (and {more} more error{'s' if more > 1 else ''})"
                                  if more else ""))
    error.lines = tuple(lines[:MAX_ERRORS]) + (
        (f"{source}: ... and {len(lines) - MAX_ERRORS} more errors",)
        if len(lines) > MAX_ERRORS else ())
    return error

