"""Analysis of a study's store: statistics, per-model results, conclusions from the data."""

from archlab.analysis.conclusions import Conclusion, conclusions
from archlab.analysis.results import ModelResult, StudyResults, collect
from archlab.analysis.stats import Comparison, Summary, compare, rank, summarize

__all__ = [
    "Comparison",
    "Conclusion",
    "ModelResult",
    "StudyResults",
    "Summary",
    "collect",
    "compare",
    "conclusions",
    "rank",
    "summarize",
]
