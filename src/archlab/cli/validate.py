"""`archlab validate`, and the checks and the compute table that `archlab run` prints before it
trains: the study read (with --models), every model built on the meta device, the data's
line and class counts, the projected time, a search's size."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from archlab.cli.console import err, out
from archlab.errors import ArchlabError, SpecError

if TYPE_CHECKING:
    from archlab.spec import Study


def load_study_args(source: str, models: str | None = None, **overrides: Any) -> Study:
    """The study a command names, cut to ``--models`` and with the command line's training
    overrides (``--epochs``, ``--batch-size``)."""
    # Imported here: `archlab --help` and a study's first error need no more than this.
    from archlab.spec import load_study, override_training

    study = load_study(source)
    if models is not None:
        # Commas inside a sweep point's [...] belong to its name: mlp[a=1,b=2],other
        names = [m.strip() for m in re.split(r",(?![^\[]*\])", models) if m.strip()]
        if not names:
            raise ArchlabError(f"--models: no model name in {models!r}; give comma-separated "
                               "names, e.g. --models m1,m2")
        study = study.select(names)
    return override_training(study, **overrides)


def validate_each(study: Study, memory_limit: int) -> dict[str, Any]:
    """:func:`archlab.model.validate_study`, but every model's problem (shape, output, memory)
    is listed, one line each, not only the first model's."""
    from archlab.model import build_model, check_memory
    from archlab.spec.messages import MAX_ERRORS

    built, problems = {}, []
    for name in study.models:
        try:
            built[name] = build_model(study, name, device="meta")
            check_memory(study, built[name], memory_limit)
        except SpecError as exc:
            problems.append(str(exc))
    if problems:
        error = SpecError(problems[0] + (f" (and {len(problems) - 1} more error"
                                         f"{'s' if len(problems) > 2 else ''})"
                                         if len(problems) > 1 else ""))
        error.lines = tuple(problems[:MAX_ERRORS]) + (
            (f"{study.source}: ... and {len(problems) - MAX_ERRORS} more errors",)
            if len(problems) > MAX_ERRORS else ())
        raise error
    return built


def _span(low: float, high: float) -> str:
    """A projected range: '12-18 min', '40 min - 1.1 h'."""
    from archlab.report.tables import format_duration

    a, b = format_duration(low), format_duration(high)
    if a == b:
        return a
    unit_a, unit_b = a.split()[-1], b.split()[-1]
    return f"{a.rsplit(' ', 1)[0]}-{b}" if unit_a == unit_b else f"{a} - {b}"


def compute_table(study: Study, project: bool, repeats: int | None = None,
                   device: str = "cpu", retime: bool = False, jobs: int = 1) -> Table:
    """Every model built (all problems at once), as a table of parameters, compute and memory;
    with ``project``, each model's projected time and the study's."""
    from archlab.data.check import check_data_memory
    from archlab.model import available_memory, format_bytes

    if project:  # here, and only then: the report's and the runner's imports are slow
        from archlab.fields import repeat_bounds  # pydantic: not for --help
        from archlab.run.projection import projected_range

    # The dataset first (one line saying what it needs), then each model's training step
    # in what the data leaves (one line naming model and layer).
    left = check_data_memory(study, available_memory(device))
    built = validate_each(study, left)
    n_train = study.data.info.train_size
    if study.data.validation != "test":
        n_train -= round(n_train * study.data.validation.split)  # type: ignore[union-attr]
    table = Table(title=f"{study.name} ({study.source}) — {study.data.dataset_name}",
                  title_justify="left")
    for col in ("model", "params", "trainable", "non-trainable", "MACs/sample", "MACs/epoch",
                "memory", "epochs", "batch", "optimizer") + (("projected",) if project else ()):
        table.add_column(col, justify="left" if col in ("model", "optimizer") else "right")
    total = [0.0, 0.0]
    runs = 0
    for name, b in built.items():
        train = study.train_for(name)
        row = [escape(name), f"{b.total_params:,}", f"{b.trainable_params:,}",
               f"{b.non_trainable_params:,}", f"{b.macs_per_sample / 1e6:,.2f} M",
               f"{b.macs_per_sample * n_train / 1e9:,.1f} G",
               format_bytes(b.memory.total_bytes), str(train.epochs),
               str(train.batch_size), train.optimizer.name]
        if project:
            most = repeats or repeat_bounds(train.repeats)[1]  # a race: its max seeds
            low, high = projected_range(study, name, device=device, retime=retime)
            total[0] += low * most
            total[1] += high * most
            runs += most
            row.append(_span(low * most, high * most))
        table.add_row(*row)
    if project:
        parallel = max(1, min(jobs, runs))  # --jobs N: N runs at a time, each timed as such
        where = f" with --jobs {jobs}" if parallel > 1 else ""
        table.caption = (f"projected wall time on this machine ({device}){where}: "
                         f"{_span(total[0] / parallel, total[1] / parallel)} "
                         "(from a few timed training steps, quiet machine to present load; "
                         "all repeats"
                         + ("; a race at every model's max seeds, the most it can cost)"
                            if repeats is None and races(study) else ")"))
    return table


def check_search(study: Study, project: bool, device: str = "cpu") -> None:
    """A study's search: every checked point built (before anything trains), its size and
    projected time."""
    search = study.search
    if search is None or search.base not in study.models:
        return
    from archlab.fields import repeat_bounds
    from archlab.model import available_memory
    from archlab.report.tables import format_duration
    from archlab.run.search import search_projection, validate_search

    validate_search(study, memory_limit=available_memory(device))
    confirm = search.confirm.top * (repeat_bounds(search.confirm.repeats)[1] - 1)  # a race: max
    when = (f"; projected {format_duration(search_projection(study, device))} at the base "
            "model's time per run (pruned trials take less)") if project else ""
    out.print(f"search over {search.base}: {search.trials} trials ({len(search.space)} "
              f"parameters, {search.sampler} sampler, {search.pruner.name} pruner, objective "
              f"{search.objective}) + {confirm} confirmation run{'s' if confirm != 1 else ''}"
              f"{when}", markup=False,
              soft_wrap=True)


def cmd_validate(args: argparse.Namespace) -> int:
    study = load_study_args(args.study, args.models)  # first: a refused study imports no torch
    from archlab.data import check_study_data

    where = check_study_data(study, args.data_dir)  # cheap: present, right sizes
    if not args.no_timing:
        # Steps timed with the threads a run gets by default (as archlab run times them):
        # at torch's own default, every core, a busy machine's steps can take many times
        # longer than the run's (validate projected 6.7 h where run said 2.7 h).
        import torch

        from archlab.run import default_threads

        torch.set_num_threads(default_threads(1))
    table = compute_table(study, project=not args.no_timing, retime=args.retime)
    print_data(study)  # after the models are built: a refused study prints nothing else
    out.print(table)
    check_search(study, project=not args.no_timing)
    if not args.no_timing:
        from archlab.run.projection import projection_note

        warn_projection(projection_note())
    from archlab.spec.sweep import sweep_note

    out.print(f"[green]ok[/]: {len(study.models)} model(s) valid{escape(sweep_note(study.models))}"
              f"; data: {where}")
    return 0


def print_data(study: Study) -> None:
    """The dataset in one line (size, shape, classes), its class counts and any imbalance."""
    from archlab.data.check import class_balance

    info = study.data.info
    h, w, c = info.image_shape
    colour = {1: "grey", 3: "RGB", 4: "RGBA"}.get(c, f"{c} channels")
    out.print(f"data: {info.name}: {info.train_size:,} training and {info.test_size:,} test "
              f"images, {h}x{w} {colour}, {info.num_classes} classes", markup=False,
              soft_wrap=True)
    balance = class_balance(info)
    if balance is None:
        return
    if len(balance.names) <= 20:
        out.print("  training images per class: " + ", ".join(
            f"{n} {k:,}" for n, k in zip(balance.names, balance.counts, strict=True)),
            markup=False, soft_wrap=True)
    else:
        out.print(f"  training images per class: {min(balance.counts):,} to "
                  f"{max(balance.counts):,}", markup=False)
    if balance.imbalanced:
        (big, nb), (small, ns) = balance.largest, balance.smallest
        err.print(f"warning: the classes are imbalanced: '{big}' has {nb:,} training images, "
                  f"'{small}' {ns:,} ({balance.ratio:.1f}x); accuracy favours the large "
                  "classes: read the report's per-class accuracy", markup=False, soft_wrap=True)


def warn_projection(note: str | None) -> None:
    """The projection's caveat (a busy machine, a cache from another load), on stderr."""
    if note:
        err.print(f"warning: {note}", markup=False, soft_wrap=True)


def races(study: Study) -> bool:
    """Whether any model of the study races (``repeats: {min, max, until: decided}``)."""
    from archlab.run.race import race_limits

    return race_limits(study) is not None


def add_parsers(sub: Any) -> None:
    v = sub.add_parser("validate", help="check spec and shapes, print params and compute")
    v.add_argument("study")
    v.add_argument("--models")
    v.add_argument("--data-dir", help="directory holding the dataset files (checked, not read)")
    v.add_argument("--no-timing", action="store_true", help="skip the timed projection")
    v.add_argument("--retime", action="store_true",
                   help="time the projection's steps again instead of reading the cache")
    v.set_defaults(func=cmd_validate)
