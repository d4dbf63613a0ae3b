"""One way to say "did you mean ...": the option a mistyped name most likely meant."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["closest", "did_you_mean"]


def closest(name: Any, options: Iterable[Any]) -> str | None:
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


def did_you_mean(name: Any, options: Iterable[Any], prefix: str = "") -> str:
    close = closest(name, options)
    return f" (did you mean '{prefix}{close}'?)" if close else ""

