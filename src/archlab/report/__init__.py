"""The study report: report.html (self-contained) and report.md, from the store alone."""

from archlab.report.page import REPORT_FILES, write_report

__all__ = ["REPORT_FILES", "write_report"]
