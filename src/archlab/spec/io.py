"""Reading a study: YAML (hardened) or JSON files and built-in ``zoo:NAME`` studies."""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from archlab.datasets.sources import BASE_DIR
from archlab.errors import SpecError
from archlab.spec.messages import describe, merged, show, spec_error
from archlab.spec.schema import Study, TrainOverride, TrainSpec
from archlab.spec.sweep import expand_sweeps
from archlab.suggest import closest, did_you_mean

__all__ = [
    "MAX_DEPTH",
    "MAX_VALUES",
    "dump_study",
    "is_study_text",
    "load_study",
    "override_training",
    "parse_study",
    "zoo_names",
]


def override_training(study: Study, **fields: Any) -> Study:
    """A copy of ``study`` with training fields (e.g. ``epochs=3``) forced for every model."""
    fields = {k: v for k, v in fields.items() if v is not None}
    if not fields:
        return study
    try:
        train = TrainSpec.model_validate({**study.train.to_config(), **fields})
    except ValidationError as exc:
        err = merged(exc, None)[0]
        option = "--" + str(err["loc"][0]).replace("_", "-")
        message = describe({**err, "loc": ("train", *err["loc"])})
        raise SpecError(f"{study.source}: command-line option {option}: {message}") from None
    models = {}
    for name, m in study.models.items():
        keep = {k: getattr(m.train, k) for k in m.train.model_fields_set if k not in fields}
        models[name] = m.model_copy(update={"train": TrainOverride.model_construct(
            _fields_set=set(keep), **{**TrainOverride().__dict__, **keep})})
    copy = study.model_copy(update={"train": train, "models": models})
    copy._source = study._source
    return copy


# ---------------------------------------------------------------------------------------------
# Loading


def zoo_names() -> list[str]:
    """Names of the built-in studies (``zoo:NAME``)."""
    files = resources.files("archlab").joinpath("zoo").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml"))


#: Deeper YAML is refused: a study nests about 12 levels (a layer in a branch of a
#: Concatenate), and PyYAML's composer recurses once per level (5,000 levels: RecursionError).
MAX_DEPTH = 100
#: Values a study may hold once every alias is expanded. A "billion laughs" (anchors of lists
#: of aliases of anchors ...) is a few lines that expand to 10^9 values; a real study has a
#: few thousand. Long strings count one value per KiB.
MAX_VALUES = 100_000


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with fixes for hand-written studies, and limits for hostile ones.

    Floats follow YAML 1.2, so ``lr: 1e-3`` is a number (YAML 1.1 reads it as the string
    '1e-3'), and a key given twice in one mapping is an error (YAML would silently keep the
    second, so a copied model that was not renamed would replace the first).

    The composer is where aliases resolve (to the anchored node itself, shared, so loading a
    billion laughs is cheap; walking the result is what explodes). It counts each node's
    expanded size as it is built and stops at :data:`MAX_VALUES` or :data:`MAX_DEPTH`.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> values under it, aliases expanded

    def fetch_flow_collection_start(self, token_class: type[yaml.Token]) -> None:
        # The scanner keeps a possible key per open '[' or '{' and rescans them all for each
        # token: 5,000 nested brackets take seconds before the composer sees the first one.
        if self.flow_level >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(
                None, None, f"nested more than {MAX_DEPTH} levels deep", self.get_mark())
        super().fetch_flow_collection_start(token_class)  # type: ignore[misc]

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = self.anchors.get(event.anchor)
            if node is not None and id(node) not in self._sizes:
                raise yaml.composer.ComposerError(
                    None, None, f"the alias '*{event.anchor}' is inside its own anchor (a "
                    "structure that contains itself)", event.start_mark)
            return super().compose_node(parent, index)  # its size is already counted
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.ScalarNode):
            size = 1 + len(node.value) // 1024
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        else:
            size = 1 + sum(self._sizes[id(child)] for child in node.value)
        if size > MAX_VALUES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_VALUES:,} values once its aliases are expanded "
                "(aliases of aliases: a 'billion laughs'?)", node.start_mark)
        self._sizes[id(node)] = size
        return node

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
            hint = did_you_mean(name, names, "zoo:") or " (one of " + ", ".join(
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
    if not path.suffix and closest(path.name, zoo_names()):
        return f" (did you mean 'zoo:{closest(path.name, zoo_names())}'?)"
    try:
        siblings = [p.name for p in path.parent.iterdir()
                    if p.suffix in (".yaml", ".yml", ".json") and p.is_file()]
    except OSError:
        siblings = []
    close = closest(path.name, siblings)
    return f" (did you mean '{path.parent / close}'?)" if close else ""


def _base_dir(source: str) -> str | None:
    """Where a study's relative data paths start: its file's folder (None: the working
    directory, for a study given as a dict, as text or as zoo:NAME)."""
    if source.startswith(("<", "zoo:")):
        return None
    return os.path.dirname(os.path.abspath(source))


def parse_study(data: Any, source: str = "<memory>") -> Study:
    """Validate a study given as a dict (the parsed YAML). A relative data path is taken from
    the folder of ``source`` when that is a file, else from the working directory."""
    if not isinstance(data, dict):
        received = {type(None): "an empty file", list: "a list", str: f"the text {show(data)}"}
        raise SpecError(f"{source}: Expected a mapping with 'name' and 'models' at the top "
                        f"level, received {received.get(type(data), show(data))}")
    data = expand_sweeps(data, source)  # errors name the file; points are validated below
    try:
        study = Study.model_validate(data, context={BASE_DIR: _base_dir(source)})
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


def _check_depth(data: Any) -> None:
    """Raise RecursionError for JSON nested deeper than a YAML study may be (MAX_DEPTH)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RecursionError
        children = value.values() if isinstance(value, dict) else value \
            if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children)


def is_study_text(source: object) -> bool:
    """True when ``source`` is a study written out as YAML text (a notebook cell's string)
    rather than a path or ``zoo:NAME``: it spans several lines, or is one ``{...}`` line."""
    return isinstance(source, str) and ("\n" in source.strip()
                                         or source.lstrip().startswith("{"))


def load_study(source: str | Path | Mapping[str, Any]) -> Study:
    """Load and validate a study from a YAML (or JSON) file, a built-in one as ``zoo:NAME``,
    a dict (as the YAML would parse: ``{"name": ..., "models": {...}}``), or YAML text (a
    string of several lines, or a one-line ``{...}``; named ``<yaml>`` in errors).

    Every error is a :class:`SpecError` whose message is one line naming the file, model,
    layer and field. Shapes are checked separately by :func:`archlab.validate_study`.
    """
    if isinstance(source, Mapping):
        return parse_study(copy.deepcopy(dict(source)), "<dict>")  # the caller's dict is kept
    if is_study_text(source):
        assert isinstance(source, str)
        return _parse_yaml("<yaml>", source)
    where, text = _read_source(source)
    if where.endswith(".json"):
        try:
            data = json.loads(text, object_pairs_hook=_json_object)
            _check_depth(data)
        except RecursionError:  # json's decoder recurses per level, like PyYAML's composer
            raise SpecError(f"{where}: invalid JSON: nested more than {MAX_DEPTH} levels deep") \
                from None
        except json.JSONDecodeError as exc:
            raise SpecError(f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                            f"{exc.msg}") from None
        except ValueError as exc:  # a duplicate key
            raise SpecError(f"{where}: invalid JSON: {exc}") from None
        return parse_study(data, where)
    return _parse_yaml(where, text)


def _parse_yaml(where: str, text: str) -> Study:
    try:
        data = yaml.load(text, Loader=_YamlLoader)  # a SafeLoader subclass
    except RecursionError:  # a last resort: the composer's depth limit comes first
        raise SpecError(f"{where}: invalid YAML: nested more than {MAX_DEPTH} levels deep") \
            from None
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

