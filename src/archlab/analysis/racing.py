"""Racing: which models keep getting seeds, decided from the runs so far (pure logic, no I/O).

A race (``repeats: {min: 3, max: 10, until: decided}``) gives every model ``min`` seeds, then
adds seeds in rounds. After each round (a *look*) every pair of models still in the race is
compared with a paired t-test on the seeds they share, and a model that is significantly worse
than the current best stops getting seeds (F-Race, Birattari et al. 2002). The race ends when
one model is separated from all the others, when every model in it has ``max`` seeds, or when
the caller's budget runs out.

Looking after every round must not inflate the error rate. Each pair's p-value at look ``l``
is divided by that look's share ``w_l`` of alpha (an alpha-spending schedule, the weights sum
to 1) and the pair keeps the smallest such value over the looks so far:
``q = min_l p_l / w_l``. By Bonferroni's inequality over the looks, ``q`` is a valid p-value
however the looks depend on each other (``P(q <= x) <= sum_l w_l x = x`` under the null), and
stays valid when the race stops early or drops a model (a pair not tested at a look only
raises its ``q``). Holm's correction over the ``q`` of every pair of the race's models then
bounds the chance of any false "significantly worse" - a wrong drop, or a wrong claim in the
final table - by alpha (docs/statistics.md states it with references).

:func:`race` replays a race from its runs: given each model's results by repeat index, it
returns who is still in, who was dropped at which look and why, and the seeds each model needs
next. The same runs always give the same race, so a race killed at any moment resumes exactly
where the store says it is (``archlab.run.race`` drives it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from scipy import special

from archlab.analysis.multiplicity import PairKey, adjust_p_values
from archlab.analysis.stats import CORRECTIONS, Comparison, compare, with_correction

__all__ = [
    "SPENDING_POWER",
    "Drop",
    "Limits",
    "Look",
    "Race",
    "race",
    "spending_weights",
]

#: The alpha-spending schedule's shape: look ``l`` of ``L`` spends
#: ``alpha * ((l / L) ** rho - ((l - 1) / L) ** rho)`` (Kim & DeMets's power family; rho = 1
#: spends equally at every look, larger rho keeps more of alpha for the later, larger looks).
SPENDING_POWER = 1.0


@dataclass(frozen=True)
class Limits:
    """A model's seeds in a race: ``min`` for every model, at most ``max`` (equal for a model
    with a fixed number of repeats, which then takes part in the comparisons only)."""

    min: int
    max: int


@dataclass(frozen=True)
class Look:
    """One decision of the race, after a round of seeds."""

    number: int  # 1-based
    seeds: dict[str, int]  # the seeds each model in the race had at this look
    leader: str  # the model with the highest mean at this look
    alpha: float  # the share of alpha this look spent
    dropped: tuple[str, ...]  # the models that stopped getting seeds here


@dataclass(frozen=True)
class Drop:
    """Why a model stopped getting seeds."""

    model: str
    look: int
    seeds: int  # the seeds it had then
    against: str  # the model it was found worse than, the leader where it can ('' no result)
    comparison: Comparison | None  # leader vs model at that look; p_adjusted is the race's

    @property
    def text(self) -> str:
        """'dropped at look 2 with 4 seeds: 0.85 pp (95 % CI 0.41 to 1.29) below m3 on their
        4 shared seeds (Holm-adjusted p = 0.012)'."""
        head = f"dropped at look {self.look} with {self.seeds} seed{'s' if self.seeds != 1 else ''}"
        c = self.comparison
        if c is None:
            return f"{head}: no finished run with a test accuracy"
        label = {"holm": "Holm-adjusted", "bh": "BH-adjusted"}.get(c.correction, "spent")
        p = "p < 0.001" if c.p_adjusted < 0.001 else f"p = {c.p_adjusted:.3f}"
        shared = f" on their {c.n_best} shared seeds" if c.method == "paired" else ""
        return (f"{head}: {c.diff * 100:.2f} pp (95 % CI {c.ci_low * 100:.2f} to "
                f"{c.ci_high * 100:.2f}) below {self.against}{shared} ({label} {p})")


@dataclass(frozen=True)
class Race:
    """A race replayed from its runs."""

    models: tuple[str, ...]
    limits: dict[str, Limits]
    alpha: float
    correction: str
    weights: tuple[float, ...]  # alpha's share at each possible look
    looks: list[Look]
    drops: dict[str, Drop]
    alive: list[str]  # still in the race (not dropped), in study order
    targets: dict[str, int]  # seeds each model has at the last look, or needs for the next
    finished: bool
    #: 'decided' (one model left), 'max' (no model in the race can get another seed),
    #: 'pending' (the next look needs runs the results do not hold yet)
    reason: str
    #: per pair of models: its smallest p-value over the looks, each divided by the look's
    #: share of alpha (1 for a pair never tested); the input of the final correction
    p_values: dict[PairKey, float] = field(default_factory=dict)

    @property
    def max_looks(self) -> int:
        return len(self.weights)

    @property
    def winner(self) -> str | None:
        """The model separated from all the others (None unless the race was decided)."""
        return self.alive[0] if self.reason == "decided" else None

    @property
    def runs(self) -> int:
        """The seeds the race has asked for so far, over all models (its cost in runs)."""
        return sum(self.targets.values())

    @property
    def fixed_runs(self) -> int:
        """What a fixed design giving every model its ``max`` seeds costs."""
        return sum(limit.max for limit in self.limits.values())

    def model_text(self, model: str) -> str:
        """What the race did with ``model``, in one sentence: the seeds it got and why no
        more (dropped at which look and against whom, won, ran to its max, or the race is
        unfinished)."""
        lim = self.limits[model]
        got = self.targets[model]
        if model in self.drops:
            return f"Race: {self.drops[model].text}."
        limits = (f"{lim.min} seeds, fixed repeats (compared, never given more)"
                  if lim.min == lim.max else f"min {lim.min}, max {lim.max} seeds")
        if self.winner == model:
            return (f"Race ({limits}): won at look {len(self.looks)} with {got} seeds, "
                    "significantly better than every other model.")
        if not self.finished:
            return (f"Race ({limits}): still in it after {len(self.looks)} looks, {got} seeds "
                    "asked for; the race is unfinished.")
        return (f"Race ({limits}): in it to the end with {got} seeds, not separated from "
                f"{', '.join(m for m in self.alive if m != model) or 'the others'}.")

    def pending(self) -> dict[str, int]:
        """The models that need runs for the next look, with the seeds each needs then."""
        if self.finished:
            return {}
        return {m: self.targets[m] for m in self.alive}


def spending_weights(looks: int, power: float = SPENDING_POWER) -> tuple[float, ...]:
    """Alpha's share at each of ``looks`` looks (they sum to 1): the power family
    ``(l / L) ** power - ((l - 1) / L) ** power``."""
    if looks < 1:
        raise ValueError(f"looks: expected a whole number >= 1, received {looks!r}")
    cum = [(i / looks) ** power for i in range(looks + 1)]
    weights = [cum[i + 1] - cum[i] for i in range(looks)]
    return tuple(w / sum(weights) for w in weights)


def _mean(values: Mapping[int, float]) -> float:
    return sum(values.values()) / len(values)


def race(
    values: Mapping[str, Mapping[int, float | None]],
    limits: Mapping[str, Limits],
    *,
    alpha: float = 0.05,
    correction: str = "holm",
    power: float = SPENDING_POWER,
) -> Race:
    """Replay the race of ``limits``' models (in that order) from ``values``: each model's
    results by repeat index (repeat ``i`` of every model shares a seed); ``None`` for a run
    that is done but has no result (it diverged). A repeat missing from ``values`` has not run.

    Look 1 uses every model's first ``min`` repeats; each later look one more repeat of every
    model still in the race, up to its ``max``. At each look the pairs of models still in the
    race are tested (paired on their shared seeds), their race p-values updated (see the module
    docstring), ``correction`` applied over every pair of the race's models, and the models
    significantly worse than the leader (or than any other model still in the race: then they
    cannot be the best either) dropped. A model whose runs all ended without a result
    is dropped too (it cannot be compared). The replay stops at the first look whose runs are
    not all in ``values`` (``reason == 'pending'``; :meth:`Race.pending` names the seeds).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction: expected one of {', '.join(CORRECTIONS)}, received "
                         f"{correction!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    models = tuple(limits)
    if not models:
        raise ValueError("race() needs at least one model")
    for m, lim in limits.items():
        if not 1 <= lim.min <= lim.max:
            raise ValueError(f"{m}: Expected 1 <= min <= max seeds, received min {lim.min}, "
                             f"max {lim.max}")
    weights = spending_weights(1 + max(lim.max - lim.min for lim in limits.values()), power)
    pairs = [frozenset(p) for p in combinations(models, 2)]
    q: dict[PairKey, float] = {p: 1.0 for p in pairs}
    targets = {m: limits[m].min for m in models}
    alive = list(models)
    looks: list[Look] = []
    drops: dict[str, Drop] = {}

    def done(reason: str, finished: bool) -> Race:
        return Race(models, dict(limits), alpha, correction, weights, looks, drops,
                    list(alive), dict(targets), finished, reason, dict(q))

    for number, weight in enumerate(weights, start=1):
        have = {m: values.get(m, {}) for m in alive}
        if any(r not in have[m] for m in alive for r in range(targets[m])):
            return done("pending", False)
        data = {m: {r: v for r, v in have[m].items() if r < targets[m] and v is not None}
                for m in alive}
        for key, p in _p_values(data, alpha).items():
            if not math.isnan(p):
                q[key] = min(q[key], min(1.0, p / weight))
        adjusted = dict(zip(pairs, adjust_p_values([q[p] for p in pairs], correction),
                            strict=True))
        scored = [m for m in alive if data[m]]
        leader = min(scored, key=lambda m: (-_mean(data[m]), models.index(m))) if scored \
            else alive[0]
        out: list[str] = []
        for m in alive:
            if not data[m]:
                drops[m] = Drop(m, number, targets[m], "", None)
                out.append(m)
                continue
            if m == leader:
                continue
            # Worse than the leader, or than any other model in the race: either way it is
            # not the best, and the claim is one of the corrected family's.
            for j in sorted((j for j in alive if j != m and data[j]
                             and adjusted[frozenset((j, m))] < alpha),
                            key=lambda j: (j != leader, adjusted[frozenset((j, m))])):
                c = _test(j, data[j], m, data[m], alpha)
                if c.diff > 0:
                    drops[m] = Drop(m, number, targets[m], j, with_correction(
                        c, adjusted[frozenset((j, m))], correction, len(pairs), alpha=alpha))
                    out.append(m)
                    break
        looks.append(Look(number, {m: targets[m] for m in alive}, leader, alpha * weight,
                          tuple(out)))
        alive = [m for m in alive if m not in out]
        if len(alive) <= 1:
            return done("decided" if alive else "no-results", True)
        grow = [m for m in alive if targets[m] < limits[m].max]
        if not grow:
            return done("max", True)
        for m in grow:
            targets[m] += 1
    return done("max", True)  # not reached: the last look has no model left to grow


def _p_values(data: Mapping[str, Mapping[int, float]], alpha: float) -> dict[PairKey, float]:
    """The two-sided p-value of every pair of ``data``'s models with results, as :func:`_test`
    computes it. Models that ran the same repeats (the usual case in a race) are tested all at
    once, vectorized: a race replays hundreds of looks in a simulation."""
    names = [m for m in data if data[m]]
    out: dict[PairKey, float] = {}
    groups: dict[tuple[int, ...], list[str]] = {}
    for m in names:
        groups.setdefault(tuple(sorted(data[m])), []).append(m)
    for repeats, members in groups.items():
        if len(members) < 2 or len(repeats) < 2:
            continue
        x = np.array([[data[m][r] for r in repeats] for m in members], dtype=float)
        d = x[:, None, :] - x[None, :, :]  # paired differences of every pair
        n = len(repeats)
        constant = np.all(d == d[..., :1], axis=-1)  # exact zero spread, as compare() has it
        mean = np.where(constant, d[..., 0], d.mean(axis=-1))
        var = np.where(constant, 0.0, d.var(axis=-1, ddof=1))
        se = np.sqrt(var / n)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.minimum(1.0, 2.0 * special.stdtr(n - 1, -np.abs(mean / se)))
        p = np.where(se > 0, p, np.where(mean == 0, 1.0, 0.0))
        for i, a in enumerate(members):
            for j in range(i + 1, len(members)):
                out[frozenset((a, members[j]))] = float(p[i, j])
    for a, b in combinations(names, 2):  # different repeats (a diverged run): one by one
        if frozenset((a, b)) not in out:
            out[frozenset((a, b))] = _test(a, data[a], b, data[b], alpha).p_value
    return out


def _test(a: str, va: Mapping[int, float], b: str, vb: Mapping[int, float],
          alpha: float) -> Comparison:
    """``a`` against ``b``: paired on the repeats (seeds) they share, Welch without two."""
    ra, rb = sorted(va), sorted(vb)
    return compare(a, [va[r] for r in ra], b, [vb[r] for r in rb], paired_seeds=(ra, rb),
                   alpha=alpha, common_seeds=True)
