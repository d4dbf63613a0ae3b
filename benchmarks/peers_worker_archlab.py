"""peers.py worker: archlab's own trainer (archlab.train.fit on a model built from the spec).

The timed window is one ``fit`` epoch of ``steps`` batches (shuffled mini-batches, Keras's loss
and metrics, as every archlab run trains), after a warm-up epoch of ``warmup`` batches on the
same model. Validation and test sets are a few images, so the evaluation that closes an epoch
costs next to nothing; the final evaluation is skipped (the epoch hook stops fit there).

The data is what archlab trains on: uint8 images (N, 28, 28, 1) in memory, made float (x / 255)
and NCHW a batch at a time by the dataset's ``Preprocess``.

Variants (``job["variant"]``): ``eager`` (what archlab does), ``autograd`` (every step through
autograd: ``$ARCHLAB_DENSE_PLAN=0``, no written-out MLP step), ``compile`` (the model wrapped in
torch.compile before fit: forward and backward compiled by Inductor; benchmark only).
"""

from __future__ import annotations

import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers_worker_common import (  # noqa: E402
    Snapshot,
    cpu_window,
    read_job,
    report,
    synthetic_images,
)


class _Stop(Exception):
    pass


def main() -> None:
    job = read_job()
    variant = job.get("variant", "eager")
    if variant == "autograd":
        os.environ["ARCHLAB_DENSE_PLAN"] = "0"
    import torch

    from archlab import build_model, parse_study
    from archlab.data import Tensors
    from archlab.data.tensors import Preprocess
    from archlab.train import fit

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    else:  # archlab's own choice, as `archlab run` makes it: the cores others leave free
        from archlab.run.environment import default_threads

        torch.set_num_threads(default_threads(1))
    config = {"name": "peers", "data": {"dataset": "mnist", "validation": "test"},
              "train": {"optimizer": job["optimizer"], "batch_size": job["batch_size"],
                        "epochs": 1, "loss": "sparse_categorical_crossentropy"},
              "models": {"m": {"layers": job["layers"]}}}
    study = parse_study(config)
    train = study.train_for("m")
    built = build_model(study, "m", seed=job["seed"])
    if variant == "compile":
        built.module = torch.compile(built.module)
    elif variant not in ("eager", "autograd"):
        raise SystemExit(f"unknown variant {variant!r}")
    bs = job["batch_size"]

    def tensors(steps: int, seed: int) -> Tensors:
        x, y = synthetic_images(steps * bs + 8, seed)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        return Tensors(xt[:-8], yt[:-8], xt[-8:], yt[-8:], xt[-8:], yt[-8:],
                       tuple(str(i) for i in range(10)), True, Preprocess("scale"))

    seen: dict[str, object] = {}

    def stop(state, *_):  # the end of the epoch's training and its (tiny) validation
        seen["end"] = Snapshot.take(job["background_pid"])
        seen["train_seconds"] = state.train_seconds
        raise _Stop

    def epoch(data: Tensors) -> None:
        with contextlib.suppress(_Stop):
            fit(built, data, train, job["seed"], on_epoch_end=stop)

    warm, timed = tensors(job["warmup"], job["seed"] + 1), tensors(job["steps"], job["seed"])
    epoch(warm)
    profile = job.get("profile")
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            epoch(timed)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=profile)
        print(table, file=sys.stderr)
    start = Snapshot.take(job["background_pid"])
    epoch(timed)
    window = cpu_window(start, seen["end"])  # type: ignore[arg-type]
    report(job, window, train_seconds=seen["train_seconds"], torch=torch.__version__,
           threads=torch.get_num_threads(), variant=variant)


if __name__ == "__main__":
    main()
