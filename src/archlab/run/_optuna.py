"""Optuna's side of a search (run/search.py): its storage, pruner, sampler and distributions
built from the study's ``search:`` spec, the sampler's seed per ask, quiet logging, a trial's
per-epoch report and pruning check (:class:`TrialCheck`, run in ``--jobs`` workers too) and the
parameter importances. Optuna is imported inside the functions that use it.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Any

from archlab.plan import RunPlan
from archlab.spec.search import (
    ChoiceParam,
    FloatParam,
    IntParam,
    Pruner,
    SearchSpec,
)

__all__ = ["TrialCheck"]


def _storage(url: str) -> Any:
    import optuna

    # Workers and the parent write the same file: wait for its lock rather than fail.
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def _pruner(pruner: Pruner, epochs: int) -> Any:
    import optuna

    if pruner.median is not None:
        return optuna.pruners.MedianPruner(**pruner.median.model_dump())
    if pruner.hyperband is not None:
        args = pruner.hyperband.model_dump()
        if args["max_resource"] == "auto":
            args["max_resource"] = epochs
        return optuna.pruners.HyperbandPruner(**args)
    return optuna.pruners.NopPruner()


def _sampler(spec: SearchSpec, seed: int) -> Any:
    import optuna

    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "grid":  # run/search.py enqueues each grid point itself
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _distribution(param: IntParam | FloatParam | ChoiceParam) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(param, IntParam):
        return IntDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, FloatParam):
        return FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    return CategoricalDistribution(param.choice)


def _sampler_seed(study_seed: int, asked: int) -> int:
    """The sampler's seed for the trial asked after ``asked`` others: from the study seed and
    the count only, so the same history asks the same trial, interrupted or not."""
    digest = hashlib.sha256(f"{study_seed}/search/{asked}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class TrialCheck:
    """A trial's per-epoch check (RunContext.epoch_check): report the objective to Optuna and
    ask its pruner. Picklable: a ``--jobs`` worker opens the storage itself."""

    def __init__(self, url: str, study_name: str, trial_id: int, objective: str,
                 pruner: Pruner, epochs: int) -> None:
        self.url, self.study_name, self.trial_id = url, study_name, trial_id
        self.objective, self.pruner, self.epochs = objective, pruner, epochs
        self._study: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_study": None}  # an open storage stays in its process

    def __call__(self, plan: RunPlan, row: dict[str, float]) -> bool:
        import optuna

        value, epoch = row.get(self.objective), int(row["epoch"])
        if value is None or not math.isfinite(value):
            return False
        if self._study is None:
            _quiet_optuna()
            self._study = optuna.load_study(study_name=self.study_name,
                                            storage=_storage(self.url),
                                            pruner=_pruner(self.pruner, self.epochs))
        trial = optuna.trial.Trial(self._study, self.trial_id)
        frozen = self._study._storage.get_trial(self.trial_id)
        if frozen.state != optuna.trial.TrialState.RUNNING:
            return False
        if epoch not in frozen.intermediate_values:  # a resumed epoch is reported once
            trial.report(value, epoch)
        # The last epoch is not pruned: the run has trained in full by then.
        return epoch < self.epochs and trial.should_prune()


def _importances(ostudy: Any) -> dict[str, float]:
    """Optuna's parameter importances, by PED-ANOVA (deterministic, and needs no scikit-learn,
    which Optuna's default fANOVA does); {} when Optuna cannot rate the trials (too few)."""
    import optuna

    try:
        with warnings.catch_warnings():
            # "Too few trials: the importances will be equal" is no measurement: none then.
            warnings.simplefilter("error", UserWarning)
            return {k: float(v) for k, v in optuna.importance.get_param_importances(
                ostudy, evaluator=optuna.importance.PedAnovaImportanceEvaluator()).items()}
    except (ValueError, RuntimeError, ImportError, UserWarning):
        return {}
