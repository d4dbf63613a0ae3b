"""What :func:`archlab.run.run_study` reports to while it trains: the progress protocol.

Any object with these methods can be passed as ``progress=``: the terminal's bars
(:class:`archlab.cli.progress.ProgressView`), the notebook's view
(:class:`archlab.notebook.NotebookProgress`), TensorBoard's live writer
(:class:`archlab.tracking.tensorboard.TensorBoardWriter`), or several at once through
:class:`Tee`. Events are dicts with a ``kind``:

- ``batch``: ``done`` and ``total`` batches of the current epoch (often; throttle drawing);
- ``epoch``: an epoch ended: ``epoch``, ``epochs`` and the epoch's history row (``loss``,
  ``accuracy``, ``val_loss``, ``val_accuracy``, ``seconds``, and ``lr`` where the run
  records one);
- ``resumed``: the run continues from its checkpoint at ``epoch``;
- ``warning``: ``message`` (a checkpoint discarded, say);
- ``done``: the run ended with ``status`` (``finished``, ``diverged``, ``pruned``,
  ``failed``, ``interrupted``), its final metrics (``test_accuracy``, ...) when it has them,
  or an ``error``.

Events arrive in the process that called ``run_study``, also with ``jobs > 1`` and on Ray
(the workers' events are forwarded), one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from archlab.plan import RunPlan

__all__ = ["Progress", "Tee"]


@runtime_checkable
class Progress(Protocol):
    """A receiver of a study's progress."""

    def start(self, plans: list[RunPlan], skipped: int) -> None:
        """Training begins: ``plans`` are the runs to train (a search starts a phase of its
        own with none, then adds its trials), ``skipped`` the runs the store already held."""

    def add(self, plans: list[RunPlan]) -> None:
        """Runs decided while others train (a search's trials and confirmation runs)."""

    def event(self, run_id: str, event: dict[str, Any]) -> None:
        """One event of run ``run_id`` (see the module's docstring)."""

    def stop(self) -> None:
        """Training of this phase is over (also after an error or an interruption)."""


class Tee:
    """Several receivers as one: each call goes to each of them, in order. A receiver may
    lack ``add`` (it is then not called)."""

    def __init__(self, receivers: Sequence[Any]) -> None:
        self.receivers = [r for r in receivers if r is not None]

    def start(self, plans: list[RunPlan], skipped: int) -> None:
        for r in self.receivers:
            r.start(plans, skipped)

    def add(self, plans: list[RunPlan]) -> None:
        for r in self.receivers:
            if hasattr(r, "add"):
                r.add(plans)

    def event(self, run_id: str, event: dict[str, Any]) -> None:
        for r in self.receivers:
            r.event(run_id, event)

    def stop(self) -> None:
        """Stop every receiver, even when one fails (the first error is raised after)."""
        error: BaseException | None = None
        for r in self.receivers:
            try:
                r.stop()
            except BaseException as exc:  # noqa: BLE001 - raised below, once all stopped
                error = error or exc
        if error is not None:
            raise error
