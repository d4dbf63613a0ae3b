"""How the report and the tables write a number: durations, metrics with their spread, an
accuracy's confidence interval (clipped to [0, 100] %, marked)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from archlab.analysis.results import accuracy_ci
from archlab.analysis.stats import Summary

__all__ = ["any_clipped", "ci_cell", "ci_text", "fmt_metric", "format_duration"]


def format_duration(seconds: float, precise: bool = False) -> str:
    """'42 s', '17 min', '4.3 h' (one more digit with ``precise``)."""
    d = 1 if precise else 0
    if seconds < 120:
        return f"{seconds:.{d}f} s"
    if seconds < 7200:
        return f"{seconds / 60:.{d}f} min"
    return f"{seconds / 3600:.{d + 1}f} h"


def fmt_metric(s: Summary | None, *, pct: bool) -> str:
    """'98.12%' (n = 1), '98.12 ± 0.10%', '0.0612 ± 0.0031'; '-' for no value."""
    if s is None:
        return "-"
    scale, digits = (100.0, 2) if pct else (1.0, 4)
    text = f"{s.mean * scale:.{digits}f}"
    if s.n > 1:
        text += f" ± {s.std * scale:.{digits}f}"
    return text + ("%" if pct else "")


def ci_cell(s: Summary | None) -> tuple[str, float | None]:
    """An accuracy CI's text and its sort key (its low bound); '-' and None without one."""
    if s is None or s.n < 2 or not math.isfinite(s.ci_low):
        return "-", None
    return accuracy_ci(s)[0], s.ci_low


def any_clipped(summaries: Sequence[Summary | None]) -> bool:
    """Whether some accuracy CI among ``summaries`` is shown clipped (its table needs
    :data:`CLIPPED_NOTE`)."""
    return any(s is not None and s.n > 1 and math.isfinite(s.ci_low) and accuracy_ci(s)[1]
               for s in summaries)


def ci_text(s: Summary | None) -> str:
    """'97.90 to 98.30%': the 95 % CI of an accuracy ('78.62 to 100.00%†' when a bound is
    clipped to [0, 100] %); '-' without one (n < 2)."""
    return ci_cell(s)[0]
