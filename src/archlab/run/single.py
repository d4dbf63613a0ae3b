"""One run of a study, trained in this process, its failure recorded: what the study's loop and
the search's loop both do with each of their runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from archlab.errors import ArchlabError, is_disk_full
from archlab.plan import RunPlan
from archlab.run.execute import RunContext, execute_run, failure_reason
from archlab.run.pool import record_unfinished
from archlab.spec import Study
from archlab.store import RunStatus

__all__ = ["run_one"]


def run_one(study: Study, plan: RunPlan, ctx: RunContext,
            report: Callable[[str, dict[str, Any]], None], errors: dict[str, str]) -> str:
    """Train one run (:func:`~archlab.run.execute.execute_run`); return its status. A failure
    of the run itself is recorded (status failed, its reason in ``errors``) and the study goes
    on; the user's errors (data, spec) and a full disk stop the study: the run is recorded as
    interrupted, and the error raised."""
    try:
        return execute_run(study, plan, ctx)
    except Exception as exc:
        if isinstance(exc, ArchlabError) or is_disk_full(exc):
            # The study stops here (the caller says why, once); this run is not at fault.
            record_unfinished(ctx.directory, plan, ctx.threads, ctx.device,
                              f"stopped: {_one_line(exc)}", RunStatus.INTERRUPTED)
            raise
        # One broken run must not end the study: it is recorded, and the next one starts.
        reason = failure_reason(exc)
        record_unfinished(ctx.directory, plan, ctx.threads, ctx.device, reason,
                          RunStatus.FAILED)
        report(plan.run_id, {"kind": "done", "status": "failed", "error": reason})
        errors[plan.run_id] = reason
        return RunStatus.FAILED.value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
