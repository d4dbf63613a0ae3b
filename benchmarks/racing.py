"""Racing against a fixed number of seeds, on simulated studies with known true accuracies.

Each simulated study has ``--models`` models with chosen true test accuracies; a run's test
accuracy is its model's true accuracy plus a seed effect every model shares (the same seed
gives the same data order and split: archlab's common random numbers) plus the run's own noise,
both normal. The noise is measured from real archlab runs: ``--noise-from DIR`` reads a study
directory's store (every model with the same seeds; at least 3 each) and splits the spread of
its test accuracies into the shared seed effect and each model's own noise (a two-way
decomposition, models x seeds). Each study is then decided twice, by archlab's own code:

- fixed: every model gets ``--max`` seeds; the ranking tests every pair, Holm-corrected
  (``archlab.analysis.multiplicity.ranking``), and, for comparison, uncorrected;
- race: ``repeats: {min, max, until: decided}`` (``archlab.analysis.racing.race``, which the
  real runner replays), its final claims Holm over the race's look-adjusted p-values.

Reported per scenario and method: how often the model with the highest mean (what the table
names best) is the true best, how often at least one wrong "significant" claim is made (a
model claimed significantly better than one that is truly as good or better: the family-wise
false-claim rate), and the runs it cost.

Scenarios (true accuracies; sigma is the measured noise of one run, pooled over the models):
``measured`` (the measured study's model means, taken as true), ``measured-x3`` (the same
models three times as far apart: as if the noise were a third), ``equal`` (every model at the
measured grand mean: every claim is false), ``spaced`` (one sigma between neighbours),
``one-best`` (one model 2 sigma above nine equal ones).

    python benchmarks/racing.py --noise-from DIR [--studies 200] [--min 3] [--max 10]
        [--alpha 0.05] [--seed 0] [--scenarios measured,measured-x3,equal,spaced,one-best]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archlab.analysis.multiplicity import ranking
from archlab.analysis.racing import SPENDING_POWER, Limits, race
from archlab.analysis.results import collect


@dataclass(frozen=True)
class Noise:
    """Measured seed noise: each model's mean and own sd, the shared seed effect's sd."""

    means: dict[str, float]
    own_sd: dict[str, float]
    seed_sd: float
    seeds: int  # the seeds each model ran
    source: str

    @property
    def pooled_sd(self) -> float:
        """One run's noise, pooled over the models (own noise and the seed effect)."""
        own = float(np.mean([s**2 for s in self.own_sd.values()]))
        return math.sqrt(own + self.seed_sd**2)


def measure(directory: Path) -> Noise:
    """The noise of a study directory's finished runs: x[model, seed] = mean[model] +
    seed[s] + e[model, s]. The seed effect's variance is the variance of the seed means left
    when the models' own noise (averaged over the models) is taken out (moment estimate, at
    least 0); each model's own variance is its residual variance around its mean plus the
    seed effect."""
    results = collect(directory)
    by_model = {m.model: dict(zip(m.seeds, m.test_accuracies, strict=True))
                for m in results.models if m.test_accuracies}
    seeds = sorted(set.intersection(*(set(v) for v in by_model.values())))
    if len(seeds) < 3:
        raise SystemExit(f"{directory}: the models share {len(seeds)} seeds; 3 or more are "
                         "needed to measure the noise")
    names = list(by_model)
    x = np.array([[by_model[m][s] for s in seeds] for m in names])
    k, n = x.shape
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
    own_var = (resid**2).sum(axis=1) / ((n - 1) * (k - 1) / k)  # per model, unbiased overall
    seed_means = x.mean(axis=0)
    seed_var = max(0.0, float(seed_means.var(ddof=1)) - float(own_var.mean()) / k)
    return Noise({m: float(v) for m, v in zip(names, x.mean(axis=1), strict=True)},
                 {m: math.sqrt(float(v)) for m, v in zip(names, own_var, strict=True)},
                 math.sqrt(seed_var), n, str(directory))


def scenarios(noise: Noise, models: int) -> dict[str, dict[str, float]]:
    """True accuracies per scenario; every scenario has ``models`` models (the measured
    scenario has the measured study's)."""
    names = [f"m{i}" for i in range(models)]
    grand = float(np.mean(list(noise.means.values())))
    top = max(noise.means.values())
    s = noise.pooled_sd
    return {
        "measured": dict(noise.means),
        "measured-x3": {m: grand + 3 * (mu - grand) for m, mu in noise.means.items()},
        "equal": {m: grand for m in names},
        "spaced": {m: top - i * s for i, m in enumerate(names)},
        "one-best": {m: top + (2 * s if i == 0 else 0.0) for i, m in enumerate(names)},
    }


def own_sd(noise: Noise, truth: dict[str, float]) -> dict[str, float]:
    """Each simulated model's own noise: the measured model's where it is one of them, else
    the measured models' in turn (so the spread of noises is the measured one)."""
    measured = list(noise.own_sd.values())
    return {m: noise.own_sd.get(m, measured[i % len(measured)]) for i, m in enumerate(truth)}


def wrong_claims(r: object, truth: dict[str, float]) -> bool:
    """Whether a ranking makes a significant claim that is false."""
    for c in r.pairs:  # type: ignore[attr-defined]
        if not c.significant:
            continue
        better, worse = (c.best, c.other) if c.diff > 0 else (c.other, c.best)
        if truth[better] <= truth[worse]:
            return True
    return False


def simulate(truth: dict[str, float], noise: Noise, *, studies: int, low: int, high: int,
             alpha: float, rng: np.random.Generator,
             power: float = SPENDING_POWER) -> dict[str, dict[str, float]]:
    names = list(truth)
    sd = own_sd(noise, truth)
    best = max(names, key=lambda m: truth[m])
    unique_best = sum(truth[m] == truth[best] for m in names) == 1
    stats: dict[str, dict[str, float]] = {
        method: {"correct": 0, "wrong": 0, "runs": 0, "decided": 0, "looks": 0}
        for method in ("fixed, Holm", "fixed, uncorrected", "race, Holm")}
    seeds = list(range(high))
    for _ in range(studies):
        shared = rng.normal(0.0, noise.seed_sd, high)
        x = {m: truth[m] + shared + rng.normal(0.0, sd[m], high) for m in names}
        # fixed: every model max seeds
        values = {m: x[m].tolist() for m in names}
        pick = max(names, key=lambda m: (float(np.mean(values[m])), m))
        for correction, label in (("holm", "fixed, Holm"), ("none", "fixed, uncorrected")):
            r = ranking(values, seeds={m: seeds for m in names}, correction=correction,
                        alpha=alpha)
            stats[label]["correct"] += pick == best
            stats[label]["wrong"] += wrong_claims(r, truth)
            stats[label]["runs"] += len(names) * high
        # the race, replayed from the same runs (it reads only the ones it asks for)
        raced = race({m: dict(enumerate(values[m])) for m in names},
                     {m: Limits(low, high) for m in names}, alpha=alpha, power=power)
        got = {m: values[m][: raced.targets[m]] for m in names}
        r = ranking(got, seeds={m: seeds[: raced.targets[m]] for m in names},
                    common_seeds=True, p_values=raced.p_values, looks=raced.max_looks,
                    alpha=alpha)
        s = stats["race, Holm"]
        s["correct"] += r.order[0] == best
        s["wrong"] += wrong_claims(r, truth)
        s["runs"] += raced.runs
        s["decided"] += raced.reason == "decided"
        s["looks"] += len(raced.looks)
    out = {}
    for label, s in stats.items():
        out[label] = {
            "correct_winner": s["correct"] / studies if unique_best else math.nan,
            "false_claim_rate": s["wrong"] / studies,
            "mean_runs": s["runs"] / studies,
            "runs_share": s["runs"] / studies / (len(names) * high),
            **({"decided": s["decided"] / studies, "mean_looks": s["looks"] / studies}
               if label.startswith("race") else {}),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--noise-from", type=Path, required=True, metavar="DIR",
                   help="a study directory whose models ran the same seeds (3 or more)")
    p.add_argument("--studies", type=int, default=200)
    p.add_argument("--models", type=int, default=10)
    p.add_argument("--min", type=int, default=3)
    p.add_argument("--max", type=int, default=10)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenarios", default="measured,measured-x3,equal,spaced,one-best")
    p.add_argument("--power", type=float, default=SPENDING_POWER,
                   help="the race's alpha-spending shape (1: equal shares; archlab's default)")
    p.add_argument("--json", type=Path, help="write the numbers here too")
    args = p.parse_args(argv)
    noise = measure(args.noise_from)
    print(f"noise from {noise.source}: {len(noise.means)} models x {noise.seeds} seeds; seed "
          f"effect sd {noise.seed_sd * 100:.3f} pp, own sd per model "
          + ", ".join(f"{m} {s * 100:.3f}" for m, s in noise.own_sd.items())
          + f" pp; pooled sd of one run {noise.pooled_sd * 100:.3f} pp")
    print(f"{args.studies} simulated studies per scenario, seed {args.seed}; race min "
          f"{args.min}, max {args.max}; fixed: {args.max} seeds; alpha {args.alpha}")
    table = {}
    wanted = args.scenarios.split(",")
    all_scenarios = scenarios(noise, args.models)
    unknown = [s for s in wanted if s not in all_scenarios]
    if unknown:
        raise SystemExit(f"--scenarios: unknown {unknown[0]!r} (one of "
                         f"{', '.join(all_scenarios)})")
    rng = np.random.default_rng(args.seed)
    print("| scenario | method | correct winner | false-claim rate | mean runs | of fixed |")
    print("|---|---|---:|---:|---:|---:|")
    for name in wanted:
        truth = all_scenarios[name]
        t0 = time.perf_counter()
        res = simulate(truth, noise, studies=args.studies, low=args.min, high=args.max,
                       alpha=args.alpha, rng=rng, power=args.power)
        table[name] = {"truth": truth, "results": res, "seconds": time.perf_counter() - t0}
        for label, r in res.items():
            correct = "-" if math.isnan(r["correct_winner"]) else f"{r['correct_winner']:.3f}"
            extra = (f" (decided {r['decided']:.2f}, {r['mean_looks']:.1f} looks)"
                     if "decided" in r else "")
            print(f"| {name} | {label}{extra} | {correct} | {r['false_claim_rate']:.3f} | "
                  f"{r['mean_runs']:.1f} | {r['runs_share'] * 100:.0f} % |")
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps({"noise": noise.__dict__, "args": {
            k: str(v) for k, v in vars(args).items()}, "scenarios": table}, indent=1,
            default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
