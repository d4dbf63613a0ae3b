"""Analysis of a study's store: statistics, per-model results, conclusions from the data;
several studies' models lined up (:func:`collect_comparison`)."""

from archlab.analysis.compare import ComparedModel, StudyComparison, collect_comparison
from archlab.analysis.conclusions import Conclusion, conclusions
from archlab.analysis.multiplicity import rank
from archlab.analysis.results import ModelResult, StudyResults, collect
from archlab.analysis.stats import Comparison, Summary, compare, summarize

__all__ = [
    "ComparedModel",
    "Comparison",
    "Conclusion",
    "ModelResult",
    "StudyComparison",
    "StudyResults",
    "Summary",
    "collect",
    "collect_comparison",
    "compare",
    "conclusions",
    "rank",
    "summarize",
]
