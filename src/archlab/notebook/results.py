"""A finished study in a notebook: :class:`Results` (the CLI's StudyResults with pandas
DataFrames and the report's figures as matplotlib Figures that show inline), from
:func:`collect_results`. pandas is optional: ``pip install 'archlab[notebook]'``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from archlab.analysis.results import StudyResults, collect, open_store, resolve_study_directory
from archlab.errors import ArchlabError
from archlab.notebook.live import in_notebook

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from archlab.run import StudyOutcome

__all__ = ["TABLES", "Results", "collect_results", "require_pandas"]

#: The tables :meth:`Results.to_pandas` gives.
TABLES = ("models", "runs", "epochs")


def require_pandas() -> ModuleType:
    """The ``pandas`` module, or one line saying how to install it."""
    try:
        import pandas
    except ImportError:
        raise ArchlabError("pandas is not installed: pip install 'archlab[notebook]'") \
            from None
    return pandas


def _kept_figures() -> Any:
    """The report's figure functions, keeping their live Figures
    (:func:`archlab.report.figures.kept_figures`; imported on first use)."""
    from archlab.report.figures import kept_figures

    return kept_figures()


def _show_inline() -> None:
    """In a notebook, let a bare matplotlib Figure display as a PNG (as pyplot's do)."""
    if not in_notebook():
        return
    from IPython import get_ipython
    from matplotlib.figure import Figure

    formatter = get_ipython().display_formatter.formatters["image/png"]
    try:
        formatter.lookup_by_type(Figure)
    except KeyError:
        from IPython.core.pylabtools import print_figure

        formatter.for_type(Figure, lambda fig: print_figure(fig, "png"))


def _one(figs: list[Figure]) -> Figure:
    _show_inline()
    return figs[0]


@dataclasses.dataclass
class Results(StudyResults):
    """:class:`~archlab.analysis.results.StudyResults` with DataFrames and figures."""

    @classmethod
    def of(cls, results: StudyResults) -> Results:
        return cls(**{f.name: getattr(results, f.name) for f in dataclasses.fields(results)})

    # -- tables -------------------------------------------------------------------------------

    def to_pandas(self, table: str = "models") -> Any:
        """A pandas DataFrame: ``models`` (one row per model: the columns of results.csv),
        ``runs`` (one row per run: status, seed, final metrics, time, swept and searched
        fields) or ``epochs`` (one row per run and epoch: the per-epoch history, long)."""
        pd = require_pandas()
        if table == "models":
            from archlab.report.tables import to_records

            return pd.DataFrame.from_records(to_records(self))
        if table not in TABLES:
            raise ArchlabError(f"to_pandas: Expected one of {', '.join(map(repr, TABLES))}, "
                               f"received {table!r}")
        return pd.DataFrame.from_records(self._runs() if table == "runs" else self._epochs())

    def _hparams(self) -> dict[str, dict[str, Any]]:
        from archlab.tracking._runs import run_hparams, stored_study

        spec = stored_study(self.meta)
        return {r.run_id: run_hparams(spec, r.model, r.seed, r.config)
                for m in self.models for r in m.runs}

    def _runs(self) -> list[dict[str, Any]]:
        from archlab.store import FINAL_METRICS

        hparams = self._hparams()
        rows = []
        for m in self.models:
            for r in m.runs:
                fields = {k: v for k, v in hparams[r.run_id].items() if k not in ("model",
                                                                                  "seed")}
                rows.append({
                    "model": r.model, "run_id": r.run_id, "repeat": r.repeat, "seed": r.seed,
                    "status": r.status.value, "epochs_done": r.epochs_done,
                    "best_epoch": r.best_epoch, "diverged_epoch": r.diverged_epoch,
                    **{k: r.metrics.get(k) for k in FINAL_METRICS},
                    "total_params": r.total_params, "macs_per_sample": r.macs_per_sample,
                    "train_seconds": r.train_seconds, "wall_seconds": r.wall_seconds,
                    "samples_per_second": r.samples_per_second, **fields, "error": r.error})
        return rows

    def _epochs(self) -> list[dict[str, Any]]:
        rows = []
        with open_store(self.directory) as store:
            for m in self.models:
                for r in m.runs:
                    for h in store.history(r.run_id):
                        rows.append({"model": r.model, "run_id": r.run_id,
                                     "repeat": r.repeat, "seed": r.seed,
                                     "status": r.status.value, "epoch": int(h["epoch"]),
                                     **{k: v for k, v in h.items() if k != "epoch"}})
        return rows

    def _repr_html_(self) -> str | None:
        try:
            return str(self.to_pandas()._repr_html_())
        except ArchlabError:
            return None

    # -- figures ------------------------------------------------------------------------------

    def _model(self, name: str) -> Any:
        from archlab.suggest import did_you_mean

        for m in self.models:
            if m.model == name:
                return m
        names = [m.model for m in self.models]
        hint = did_you_mean(name, names) or f" (one of {', '.join(names)})"
        raise ArchlabError(f"study '{self.study}': Expected a model, received {name!r}{hint}")

    def _curves(self, m: Any) -> Any:
        from archlab.report.gather import gather_curves
        from archlab.store import RunStatus

        done = m.finished or [r for r in m.runs if r.status is RunStatus.DIVERGED]
        with open_store(self.directory) as store:
            return gather_curves([store.history(r.run_id) for r in done])

    def plot_curves(self, model: str | None = None) -> Figure:
        """One model's loss and accuracy per epoch, train against validation (the report's
        per-model figure); without ``model``, every model's validation curves (the report's
        overview)."""
        from archlab.report.figures import curves_figure
        from archlab.report.overview_plot import overlay_figure

        if model is not None:
            m = self._model(model)
            curves = self._curves(m)
            if curves is None:
                raise ArchlabError(f"{model}: no run recorded an epoch yet")
            with _kept_figures() as figs:
                curves_figure(m.model, curves)
            return _one(figs)
        colors = {m.model: i for i, m in enumerate(self.models)}
        curves = [(m.model, c) for m in self.models if m.finished
                  and (c := self._curves(m)) is not None]
        if not curves:
            raise ArchlabError(f"study '{self.study}': no finished run to plot")
        with _kept_figures() as figs:
            overlay_figure(curves, colors)
        return _one(figs)

    def plot_ranking(self, metric: str = "test_accuracy") -> Figure:
        """Models ranked by mean ``metric`` with 95 % CIs, marked by the table's t-tests."""
        from archlab.report.ranking import ranking_figure

        with _kept_figures() as figs:
            image = ranking_figure(self, metric)
        if image is None:
            raise ArchlabError(f"study '{self.study}': no finished run has {metric}")
        return _one(figs)

    def plot_sweep(self, field: str, model: str | None = None) -> Figure:
        """Test accuracy and loss against the swept ``field`` (its path, such as
        ``layers.1.Dense.units``, or its short name, ``units``), one line per combination of
        the other swept fields (the report's sweep figure, for that field). ``model`` picks
        the swept model when several sweep the field."""
        from archlab.report.gather import SweepPlot, gather_sweeps
        from archlab.report.sweep_plot import sweep_figure
        from archlab.tracking._runs import stored_study

        spec = stored_study(self.meta)
        swept = {n: s.swept for n, s in spec.models.items() if s.swept} if spec else {}
        plots = [SweepPlot(p.sweep, panels) for p in gather_sweeps(self, swept)
                 if (model is None or p.sweep == model)
                 and (panels := [q for q in p.panels if field in (q.path, q.label)])]
        if not plots:
            fields = sorted({q.path for p in gather_sweeps(self, swept) for q in p.panels})
            raise ArchlabError(f"plot_sweep: Expected a swept field of study '{self.study}' "
                               f"({', '.join(fields) or 'it sweeps nothing'}), received "
                               f"{field!r}")
        if len(plots) > 1:
            raise ArchlabError(f"plot_sweep {field}: several models sweep it (" +
                               ", ".join(p.sweep for p in plots) + "); name one: model=...")
        with _kept_figures() as figs:
            sweep_figure(plots[0])
        return _one(figs)

    def plot_confusion(self, model: str) -> Figure:
        """The confusion matrix of ``model``'s first finished run on the test set (the
        report's)."""
        from archlab.analysis.results import run_file
        from archlab.report.figures import confusion_figure
        from archlab.report.gather import read_predictions
        from archlab.store import PREDICTIONS_FILE

        m = self._model(model)
        if not m.finished:
            raise ArchlabError(f"{model}: no finished run, so no predictions")
        with open_store(self.directory) as store:
            pred = read_predictions(run_file(store, m.finished[0].run_id, PREDICTIONS_FILE))
        with _kept_figures() as figs:
            confusion_figure(m.model, pred.confusion, pred.class_names)
        return _one(figs)


def collect_results(source: StudyOutcome | str | Path, *, models: list[str] | None = None,
                    run_ids: list[str] | None = None, correction: str | None = None) -> Results:
    """The results of a study: from what :func:`run_study` returned, a study directory, or
    the study file / ``zoo:NAME`` whose default directory holds them (read-only).
    ``correction`` (holm, bh or none) corrects every pair of models; by default the one the
    study's last run recorded, else holm (docs/statistics.md)."""
    from archlab.run import StudyOutcome

    if isinstance(source, StudyOutcome):
        directory = source.directory
        run_ids = run_ids if run_ids is not None else [p.run_id for p in source.planned]
    else:
        directory = resolve_study_directory(source)
    return Results.of(collect(directory, models=models, run_ids=run_ids,
                              correction=correction))
