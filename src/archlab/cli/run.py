"""`archlab run`: its flags checked, the study validated and projected (cli/validate.py), then
trained, with the CLI's Ctrl-C policy, and its tables and report written."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from archlab.cli.console import err, out
from archlab.cli.results import print_results
from archlab.cli.validate import (
    check_search,
    compute_table,
    load_study_args,
    print_data,
    races,
    warn_projection,
)
from archlab.errors import ArchlabError, is_disk_full

if TYPE_CHECKING:
    from archlab.data import RawDataset
    from archlab.run import StudyOutcome
    from archlab.run.race import Budget
    from archlab.run.ray_executor import RayExecutor
    from archlab.spec import Study


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


def _race_budget(study: Study, args: argparse.Namespace) -> Budget | None:
    """``--budget``, parsed; refused (one line) unless the study races (``repeats: {min,
    max, until: decided}``) and ``--repeats`` does not fix its seeds."""
    from archlab.run.race import Budget, race_limits

    if args.budget is None:
        return None
    if args.repeats is not None or not races(study):
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
    study = load_study_args(args.study, args.models, epochs=args.epochs, batch_size=args.batch_size)
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
        table = compute_table(study, project=not args.no_timing, repeats=args.repeats,
                               device=device, retime=args.retime, jobs=args.jobs)
        print_data(study)  # after the models are built: a refused study prints nothing else
        out.print(table)
        check_search(study, project=not args.no_timing, device=device)
        warn_projection(None if args.no_timing else projection_note())
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
        if args.repeats is None and races(study):
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
