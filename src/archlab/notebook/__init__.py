"""archlab in a Jupyter notebook: live progress that renders in the cell, Ctrl-C (the kernel's
interrupt) that stops at the next batch, results as pandas DataFrames and the report's figures
as matplotlib Figures that show inline.

``archlab.run_study`` and ``archlab.collect_results`` are this package's :func:`run_study`
(``live``) and :func:`collect_results` (``results``). Outside a notebook they behave as the
library's (silent, no signal handler) unless asked otherwise. pandas is optional:
``pip install 'archlab[notebook]'``.
"""

from archlab.notebook.live import (
    NotebookProgress,
    StudyInterrupted,
    as_study,
    in_notebook,
    run_study,
)
from archlab.notebook.results import TABLES, Results, collect_results, require_pandas

__all__ = ["TABLES", "NotebookProgress", "Results", "StudyInterrupted", "as_study",
           "collect_results", "in_notebook", "require_pandas", "run_study"]
