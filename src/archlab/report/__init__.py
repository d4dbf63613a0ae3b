"""The study report: report.html (self-contained) and report.md, from the store alone; and the
comparison of several studies (:func:`write_comparison`), from their stores alone."""

from archlab.report.compare import write_comparison
from archlab.report.page import REPORT_FILES, write_report

__all__ = ["REPORT_FILES", "write_comparison", "write_report"]
