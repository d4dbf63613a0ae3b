"""Where a pydantic error points, in the user's words ("model 'm1', layer 3 (Conv2D), field
'filters'"), which schema class owns that field, and the value the user wrote there."""

from __future__ import annotations

import math
from typing import Any, get_args

from pydantic import BaseModel

from archlab.layers import LAYER_TYPES, MERGE_LAYERS, LayerSpec
from archlab.optimizers import OPTIMIZERS
from archlab.spec.schema import ModelSpec, Study

__all__ = ["NOTHING", "Place", "is_call", "members", "raw_value", "show", "where"]

#: "Not found" for :func:`raw_value` (``None`` is a value a user can write: ``null``).
NOTHING: Any = object()


def show(value: Any, limit: int = 60) -> str:
    """A value as the user wrote it in YAML (null, true, 'text', [1, 2], {a: 1}), shortened."""
    def flow(v: Any) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float) and not math.isfinite(v):
            # YAML spells them .inf, -.inf and .nan; Python's repr would say inf, nan.
            return ".nan" if math.isnan(v) else (".inf" if v > 0 else "-.inf")
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {flow(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(flow(x) for x in v) + "]"
        if isinstance(v, BaseModel):
            return flow(v.model_dump())
        return repr(v)

    text = " ".join(flow(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def members(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's annotation admits (through Optional, Union, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        for m in members(arg):
            if m not in found:
                found.append(m)
    return found


def is_call(cls: type[BaseModel] | None) -> bool:
    """A layer or an optimizer: Keras calls their settings arguments, not fields."""
    return cls is not None and (issubclass(cls, LayerSpec) or cls in OPTIMIZERS.values())


def _tag(cls: type[BaseModel]) -> str:
    # pydantic tags an optimizer union member by its discriminator (the Keras name) and any
    # other union member by its class name (Split, Normalize).
    return str(cls.model_fields["name"].default) if cls in OPTIMIZERS.values() else cls.__name__


class Place:
    """Where a pydantic error location points: printable parts, the class owning the last
    field, and the class expected at the location itself (``target``)."""

    def __init__(self, loc: tuple[Any, ...]) -> None:
        self.parts: list[str] = []  # "model 'm1'", "layer 3 (Conv2D)", "branch 2"
        self.fields: list[str | int] = []  # field path inside the last part
        self.owner: type[BaseModel] | None = None  # the class whose field fields[-1] is
        cls: type[BaseModel] | None = Study
        tags: dict[str, type[BaseModel]] = {}
        i = 0
        while i < len(loc):
            key, nxt = loc[i], loc[i + 1] if i + 1 < len(loc) else None
            if cls is Study and key == "models" and nxt is not None:
                name = str(nxt)  # a name too long to be one is shortened, not repeated whole
                self.parts.append(f"model '{name if len(name) <= 40 else name[:37] + '...'}'")
                self.fields, cls, tags, i = [], ModelSpec, {}, i + 2
                continue
            if key in ("layers", "branches") and isinstance(nxt, int) \
                    and cls in (ModelSpec, *MERGE_LAYERS):
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
                found = members(field.annotation) if field is not None else []
                cls = found[0] if len(found) == 1 else None
                tags = {_tag(m): m for m in found}
            else:
                self.fields.append(key)
        self.target = cls

    @property
    def field(self) -> str | None:
        names = [f for f in self.fields if isinstance(f, str)]
        return names[-1] if names else None

    @property
    def noun(self) -> str:
        return "argument" if is_call(self.owner) else "field"

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


def where(loc: tuple[Any, ...]) -> str:
    """Turn a pydantic error location into "model 'm1', layer 3 (Conv2D), field 'filters'"."""
    return Place(tuple(loc)).text()


def raw_value(data: Any, loc: tuple[Any, ...]) -> Any:
    """The value the user wrote at a pydantic error location (:data:`NOTHING` if not found)."""
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
        elif isinstance(key, str) and key in OPTIMIZERS and isinstance(cur, str):
            cur = {"name": cur}
        elif isinstance(key, str) and (key in OPTIMIZERS or key.startswith("literal[")
                                       or key[:1].isupper()):
            continue  # a union tag: same value
        else:
            return NOTHING
    return cur
