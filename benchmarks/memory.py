"""Peak memory of training one big model: kernels-padding's m10 (38 M parameters, Adadelta,
batch 128) for a few batches, then the evaluation passes a real run makes; one fresh process
per measurement, peak RSS from ``resource.getrusage``.

The data: mnist-sample's images, the validation set tiled to exactly one full evaluation
chunk (the model's own, ``archlab.engine.eval_batch_for``, or a fixed one such as the old
2,000), so that the biggest evaluation a full-MNIST run makes is measured without paying for
the whole 6,000-image pass; 100 test images. Each case prints its peak and what the process
held before training (interpreter, torch, data, model).

    python benchmarks/memory.py [--batches 1] [--model zoo:kernels-padding:m10]
           [--eval-batch N ...]   # also measure with evaluation chunks of N (the old 2000)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

LIMIT = 2 * 1024**3  # the requirement: m10 trains within 2 GB


def peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def measure(source: str, batches: int, eval_batch: int | None, threads: int) -> dict:
    """Runs in its own process: train ``batches`` batches, evaluate, report peaks."""
    import torch

    import archlab.train as train_mod
    from archlab import build_model, load_study, parse_study
    from archlab.data import load_dataset, prepare_tensors
    from archlab.spec import override_training

    torch.set_num_threads(threads)
    study_src, model = source.rsplit(":", 1)
    config = load_study(study_src).to_config()
    config["data"].update(dataset="mnist-sample", validation={"split": 0.1})
    study = override_training(parse_study(config).select([model]), epochs=1)
    train = study.train_for(model)
    data = prepare_tensors(load_dataset("mnist-sample"), study.data, 0)
    built = build_model(study, model, seed=0)
    if eval_batch is not None:  # a fixed chunk size, as before per-model chunks
        train_mod.eval_batch_for = lambda built: eval_batch  # type: ignore[assignment]
    chunk = train_mod.eval_batch_for(built)
    n = batches * train.batch_size
    data.x_train, data.y_train = data.x_train[:n], data.y_train[:n]
    reps = -(-chunk // len(data.x_val))
    data.x_val = data.x_val.repeat(reps, 1, 1, 1)[:chunk]
    data.y_val = data.y_val.repeat(reps)[:chunk]
    data.x_test, data.y_test = data.x_test[:100], data.y_test[:100]
    before = peak_rss()
    result = train_mod.fit(built, data, train, 0)
    return {"before": before, "peak": peak_rss(), "params": built.total_params,
            "train_seconds": result.train_seconds, "eval_chunk": chunk,
            "channels_last": train_mod.uses_channels_last(built.module)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zoo:kernels-padding:m10")
    ap.add_argument("--batches", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-batch", type=int, action="append", default=[],
                    help="also measure with this fixed evaluation chunk (repeatable)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        eb = None if args.child == "model" else int(args.child)
        print(json.dumps(measure(args.model, args.batches, eb, args.threads)))
        return
    print(f"{args.model}: {args.batches} training batch(es), then evaluation (one full "
          f"validation chunk, twice; train; 100 test images); {args.threads} thread(s); one "
          f"process per case; load average {os.getloadavg()[0]:.2f}")
    print(f"{'evaluation chunk':<22}{'before fit':>12}{'peak RSS':>12}{'within 2 GB':>13}"
          f"{'layout':>8}")
    for case in ["model", *map(str, args.eval_batch)]:
        out = subprocess.run([sys.executable, __file__, "--child", case, "--model", args.model,
                              "--batches", str(args.batches), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"{case:<22} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        label = (f"{r['eval_chunk']} (per model)" if case == "model"
                 else f"{r['eval_chunk']} (fixed)")
        print(f"{label:<22}{r['before'] / 2**20:>10.0f}MB{r['peak'] / 2**20:>10.0f}MB"
              f"{'yes' if r['peak'] <= LIMIT else 'NO':>13}"
              f"{'NHWC' if r['channels_last'] else 'NCHW':>8}")


if __name__ == "__main__":
    main()
