"""`archlab run` and `archlab validate`."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from archlab.cli.console import err, out
from archlab.cli.results import print_results
from archlab.errors import ArchlabError, SpecError, is_disk_full

if TYPE_CHECKING:
    from archlab.data import RawDataset
    from archlab.run import StudyOutcome
    from archlab.run.race import Budget
    from archlab.run.ray_executor import RayExecutor
    from archlab.spec import Study


def _load(source: str, models: str | None = None, **overrides: Any) -> Study:
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


def _ray_executor(args: argparse.Namespace) -> RayExecutor | None:
    """The Ray executor the flags ask for (None: this machine's processes), checked before
    anything is timed or written."""
    flags = {"--address": args.address, "--ray-cpus-per-run": args.ray_cpus_per_run,
             "--ray-gpus-per-run": args.ray_gpus_per_run, "--ray-retries": args.ray_retries}
    if args.executor != "ray":
        given = [name for name, value in flags.items() if value is not None]
        if given:
            raise ArchlabError(f"{given[0]}: Expected --executor ray with it, received "
                               f"--executor {args.executor}")
        return None
    from archlab.run.ray_executor import RayExecutor, require_ray

    executor = RayExecutor(
        address=args.address,
        cpus_per_run=1 if args.ray_cpus_per_run is None else args.ray_cpus_per_run,
        gpus_per_run=0.0 if args.ray_gpus_per_run is None else args.ray_gpus_per_run,
        retries=2 if args.ray_retries is None else args.ray_retries)
    if args.jobs != 1:
        raise ArchlabError(f"--jobs: Expected 1 with --executor ray (Ray runs as many runs at "
                           f"once as its nodes' CPUs hold), received {args.jobs}")
    if args.threads is not None:
        raise ArchlabError(f"--threads: Expected --ray-cpus-per-run with --executor ray (a run's "
                           f"torch threads are its CPUs), received --threads {args.threads}")
    if args.device not in ("auto", executor.device):
        raise ArchlabError(f"--device: Expected auto with --executor ray (runs train on cuda "
                           f"when --ray-gpus-per-run > 0), received {args.device}")
    require_ray()
    executor.check_reachable()
    return executor


def _check_counts(args: argparse.Namespace) -> None:
    """Counts that must be whole numbers >= 1 (argparse has checked that they are integers)."""
    for option in ("jobs", "threads", "repeats", "epochs", "batch_size"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            raise ArchlabError(f"--{option.replace('_', '-')}: expected a whole number >= 1, "
                               f"received {value}")


class _StopOnCtrlC:
    """The CLI's Ctrl-C policy while training (the library installs no handler).

    First Ctrl-C: finish cleanly: runs stop at their next batch, checkpoints are kept, and the
    command exits 130 after writing the tables. Second Ctrl-C: stop at once (KeyboardInterrupt:
    workers are killed, exit 130); runs resume from their last epoch on the next run.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: Any = None

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():  # signals need the main one
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self.event

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            # Stop at once; a third Ctrl-C must not cut short the cleanup this starts (workers
            # killed and reaped, the fork server stopped): ignored until __exit__.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise KeyboardInterrupt
        self.event.set()
        # os.write, not the console: a handler may run while the console holds its lock.
        os.write(2, b"\nstopping after the current batch (checkpoints are kept); "
                    b"Ctrl-C again to stop at once\n")

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _validate_each(study: Study, memory_limit: int) -> dict[str, Any]:
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


def _compute_table(study: Study, project: bool, repeats: int | None = None,
                   device: str = "cpu", retime: bool = False, jobs: int = 1) -> Table:
    from archlab.data.check import check_data_memory
    from archlab.model import available_memory, format_bytes

    if project:  # here, and only then: the report's and the runner's imports are slow
        from archlab.fields import repeat_bounds  # pydantic: not for --help
        from archlab.run.projection import projected_range

    # The dataset first (one line saying what it needs), then each model's training step
    # in what the data leaves (one line naming model and layer).
    left = check_data_memory(study, available_memory(device))
    built = _validate_each(study, left)
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
                            if repeats is None and _races(study) else ")"))
    return table


def _check_search(study: Study, project: bool, device: str = "cpu") -> None:
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
    study = _load(args.study, args.models)  # first: a refused study imports no torch
    from archlab.data import check_study_data

    where = check_study_data(study, args.data_dir)  # cheap: present, right sizes
    if not args.no_timing:
        # Steps timed with the threads a run gets by default (as archlab run times them):
        # at torch's own default, every core, a busy machine's steps can take many times
        # longer than the run's (validate projected 6.7 h where run said 2.7 h).
        import torch

        from archlab.run import default_threads

        torch.set_num_threads(default_threads(1))
    table = _compute_table(study, project=not args.no_timing, retime=args.retime)
    _print_data(study)  # after the models are built: a refused study prints nothing else
    out.print(table)
    _check_search(study, project=not args.no_timing)
    if not args.no_timing:
        from archlab.run.projection import projection_note

        _warn_projection(projection_note())
    from archlab.spec.sweep import sweep_note

    out.print(f"[green]ok[/]: {len(study.models)} model(s) valid{escape(sweep_note(study.models))}"
              f"; data: {where}")
    return 0


def _print_data(study: Study) -> None:
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


def _warn_projection(note: str | None) -> None:
    if note:
        err.print(f"warning: {note}", markup=False, soft_wrap=True)


def _races(study: Study) -> bool:
    from archlab.run.race import race_limits

    return race_limits(study) is not None


def _race_budget(study: Study, args: argparse.Namespace) -> Budget | None:
    """``--budget``, parsed; refused (one line) unless the study races (``repeats: {min,
    max, until: decided}``) and ``--repeats`` does not fix its seeds."""
    from archlab.run.race import Budget, race_limits

    if args.budget is None:
        return None
    if args.repeats is not None or not _races(study):
        got = (f"--repeats {args.repeats} (fixed seeds)" if args.repeats is not None
               else "a study with fixed repeats only")
        raise ArchlabError(f"--budget: Expected a study whose models race (repeats: {{min, "
                           f"max, until: decided}}), received {got}")
    budget = Budget.parse(args.budget)
    first = sum(lim.min for lim in race_limits(study).values())  # type: ignore[union-attr]
    if budget.runs is not None and budget.runs < first:
        raise ArchlabError(f"--budget: Expected at least the race's first round, {first} runs "
                           f"(each model's min seeds), received {budget.runs}")
    return budget


def cmd_run(args: argparse.Namespace) -> int:
    _check_counts(args)
    _ray_executor(args)  # its flags are checked before any timing
    if args.tensorboard:
        from archlab.tracking.tensorboard import require_tensorboard

        require_tensorboard()
    study = _load(args.study, args.models, epochs=args.epochs, batch_size=args.batch_size)
    _race_budget(study, args)  # a bad --budget is refused before any timing
    from archlab.data import check_study_data, load_dataset  # torch: after the study is read
    from archlab.run import StudyLock, check_output_dir, resolve_device, study_dir
    from archlab.run.projection import projection_note

    directory = study_dir(study, args.out)
    try:  # before any timing: a bad path must not cost the user a projection first
        check_output_dir(directory)
    except ArchlabError as exc:
        raise ArchlabError(f"--out: {exc}" if args.out else str(exc)) from None
    device = resolve_device(args.device)
    # The projection times steps with the thread count the runs will have (step timings
    # are cached per thread count): --threads, else the load-aware default.
    import torch

    from archlab.run import default_threads

    torch.set_num_threads(args.threads or default_threads(args.jobs))
    check_study_data(study, args.data_dir)  # cheap: present, right sizes; no image read
    dataset = None
    if not args.dry_run and (not directory.exists() or study.data.source is not None):
        # A new study trains everything: read and verify the data now, before any timing and
        # before the directory exists (an existing study loads it only if a run is missing;
        # a user's source always, as its content's fingerprint is part of the runs' ids).
        dataset = load_dataset(study.data.dataset, args.data_dir)
        _warn_skipped(dataset)
    lock = StudyLock(directory, command=f"archlab {shlex.join(sys.argv[1:])}")
    with contextlib.ExitStack() as held:
        if not args.dry_run and directory.is_dir():
            held.enter_context(lock)  # another process on this study: say so before timing
        if dataset is not None:
            study = study.with_dataset(dataset.info)  # derived from the data just loaded
        table = _compute_table(study, project=not args.no_timing, repeats=args.repeats,
                               device=device, retime=args.retime, jobs=args.jobs)
        _print_data(study)  # after the models are built: a refused study prints nothing else
        out.print(table)
        _check_search(study, project=not args.no_timing, device=device)
        _warn_projection(None if args.no_timing else projection_note())
        if args.dry_run:
            return 0
        held.enter_context(lock)  # reentrant: held until the tables and report are written
        return _train_and_report(study, args, device, dataset)


def _warn_skipped(dataset: RawDataset) -> None:
    """``on_bad_image: skip``: how many images were left out, and the first few."""
    if dataset.skipped:
        first = "; ".join(dataset.skipped[:3])
        more = f"; and {len(dataset.skipped) - 3} more" if len(dataset.skipped) > 3 else ""
        err.print(f"warning: skipped {len(dataset.skipped)} unreadable image"
                  f"{'s' if len(dataset.skipped) > 1 else ''} (on_bad_image: skip): "
                  f"{first}{more}", markup=False, soft_wrap=True)


def _train_and_report(study: Study, args: argparse.Namespace, device: str,
                      dataset: RawDataset | None) -> int:
    from archlab.analysis.results import collect
    from archlab.cli.progress import ProgressView
    from archlab.report.tables import write_tables
    from archlab.run import run_study

    progress: Any = None if args.quiet else ProgressView(err)
    if args.tensorboard:  # event files written live, beside the bars
        from archlab.run import study_dir
        from archlab.run.progress import Tee
        from archlab.tracking.tensorboard import TensorBoardWriter

        progress = Tee([progress, TensorBoardWriter(args.tensorboard, study,
                                                    study_dir(study, args.out))])
    with _StopOnCtrlC() as stop:
        if args.repeats is None and _races(study):
            from archlab.run.race import run_race

            outcome: StudyOutcome = run_race(
                study, args.out, budget=_race_budget(study, args), correction=args.correction,
                data_dir=args.data_dir, jobs=args.jobs, threads=args.threads, device=device,
                executor=_ray_executor(args), progress=progress, stop=stop, dataset=dataset,
                pack=not args.no_pack, precision=args.precision)
        else:
            outcome = run_study(study, args.out, data_dir=args.data_dir, repeats=args.repeats,
                                jobs=args.jobs, threads=args.threads, device=device,
                                executor=_ray_executor(args),
                                progress=progress, stop=stop,
                                dataset=dataset, pack=not args.no_pack,
                                precision=args.precision)
    directory = outcome.directory
    if outcome.skipped:
        out.print(f"{len(outcome.skipped)} run(s) already in the store were kept.")
    from archlab.store import Store

    with Store(directory) as store:  # results and the report use the run's correction
        store.set_meta(correction=args.correction)
    results = collect(directory, run_ids=[p.run_id for p in outcome.planned],
                      correction=args.correction)
    print_results(results)
    write_tables(results)
    if not args.no_report:
        from archlab.report import write_report

        try:
            paths = write_report(directory)
            out.print(f"report: {paths[0]}")
        except Exception as exc:  # noqa: BLE001 - training results are safe in the store
            if is_disk_full(exc):
                raise
            err.print(f"warning: the report failed ({exc.__class__.__name__}: {exc}); the "
                      f"results are in the store: retry with `archlab report {directory}`",
                      markup=False, soft_wrap=True)
    out.print(f"study directory: {directory}")
    _print_failures(outcome)
    if outcome.interrupted:
        err.print("interrupted: rerun the same command to resume")
        return 130
    return 1 if outcome.failed else 0


def _print_failures(outcome: StudyOutcome) -> None:
    """Which runs failed and why, on the console (the store has it too)."""
    if not outcome.failed:
        return
    names = {p.run_id: f"{p.model}#{p.repeat}" for p in outcome.planned}
    err.print(f"{len(outcome.failed)} run(s) failed:", markup=False)
    for rid in outcome.failed:
        why = " ".join(outcome.errors.get(rid, "no reason recorded").split())
        err.print(f"  {names.get(rid, rid)} (run {rid}): {why}", markup=False)
    err.print("rerun the same command to retry them; finished runs are kept", markup=False)


def add_parsers(sub: Any) -> None:
    r = sub.add_parser("run", help="train a study (skips runs already in the store)")
    r.add_argument("study", help="study file (YAML) or zoo:NAME")
    r.add_argument("--models", help="comma-separated model names (default: all)")
    r.add_argument("--epochs", type=int, help="override epochs for every model")
    r.add_argument("--batch-size", type=int, help="override batch size for every model")
    r.add_argument("--repeats", type=int, help="seeds per model (default: the study's; a "
                                                "number here turns a study's race off)")
    r.add_argument("--correction", choices=("holm", "bh", "none"), default="holm",
                   help="multiple-comparison correction over every pair of models: holm "
                        "(family-wise error rate; default), bh (Benjamini-Hochberg, false "
                        "discovery rate) or none; a race's drops use it too")
    r.add_argument("--budget", metavar="RUNS|HOURS",
                   help="for a race (repeats: {min, max, until: decided}): at most this many "
                        "runs (60) or hours of training (2h, 90min); no round is started that "
                        "would pass it")
    r.add_argument("--jobs", type=int, default=1, help="runs in parallel, one process each")
    r.add_argument("--threads", type=int,
                   help="torch threads per job, honoured exactly (default: the cores other "
                        "processes leave free, shared among the jobs; a resumed run keeps its "
                        "checkpoint's count)")
    r.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: this machine's processes (default); ray: each run a Ray task "
                        "(docs/ray.md)")
    r.add_argument("--address", help="with --executor ray: HOST:PORT of a Ray cluster's head "
                                     "(default: start a local Ray instance)")
    r.add_argument("--ray-cpus-per-run", type=int,
                   help="CPUs each run asks Ray for; also its torch threads (default 1)")
    r.add_argument("--ray-gpus-per-run", type=float,
                   help="GPUs each run asks Ray for; a fraction shares one (default 0)")
    r.add_argument("--ray-retries", type=int,
                   help="times a run whose Ray worker died is submitted again (default 2)")
    r.add_argument("--no-pack", action="store_true",
                   help="train repeats as separate runs, never packed (docs/packing.md)")
    r.add_argument("--data-dir", help="directory holding the dataset files")
    r.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N or auto (CUDA when torch sees it; default)")
    r.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 (default) or bf16 autocast (matmuls and convs in bfloat16; "
                        "part of the runs' identity, so bf16 runs are new runs)")
    r.add_argument("--out", help="study directory (default archlab-runs/NAME)")
    r.add_argument("--dry-run", action="store_true", help="validate, print compute, stop")
    r.add_argument("--no-timing", action="store_true",
                   help="skip the timed projection (step timings are cached per machine)")
    r.add_argument("--retime", action="store_true",
                   help="time the projection's steps again instead of reading the cache")
    r.add_argument("--no-report", action="store_true", help="skip report.html/report.md")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--tensorboard", metavar="DIR",
                   help="write TensorBoard event files live: one run per archlab run, "
                        "model/seed (docs/tracking.md)")
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check spec and shapes, print params and compute")
    v.add_argument("study")
    v.add_argument("--models")
    v.add_argument("--data-dir", help="directory holding the dataset files (checked, not read)")
    v.add_argument("--no-timing", action="store_true", help="skip the timed projection")
    v.add_argument("--retime", action="store_true",
                   help="time the projection's steps again instead of reading the cache")
    v.set_defaults(func=cmd_validate)
