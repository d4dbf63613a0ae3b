"""How long does ``write_report`` take for a 30-model study?

Builds (once) a 30-model study on the embedded mnist-sample, 1 epoch per model: the cheap zoo
models (quickstart, depth-l2's small CNNs, mlp-hparams' MLPs) plus generated MLP and small-CNN
variants, one model that diverges and one stuck at chance, so every kind of report section is
exercised. Then times ``write_report`` on it (the dataset load, 30 rebuilt models predicted on
the test set, ~120 figures, both pages).

    python benchmarks/report_30_models.py [--out DIR] [--jobs N] [--repeat K]

Training is skipped when DIR already holds the finished runs (the store keeps them), so
re-running only re-times the report. This is a benchmark, not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ZOO = {  # study: models cheap enough to train for an epoch on a laptop CPU in seconds
    "quickstart": ["conv2", "conv3", "mlp32"],
    "depth-l2": ["conv2-l2", "conv5"],
    "mlp-hparams": ["mlp64", "mlp32-b128", "mlp32x3", "mlp128-drop", "mlp32-momentum",
                    "mlp32-lr09"],
}


def _dense(units: int, act: str = "relu") -> dict[str, Any]:
    return {"Dense": {"units": units, "activation": act}}


def _out() -> dict[str, Any]:
    return _dense(10, "softmax")


def study_config() -> dict[str, Any]:
    from archlab import load_study

    models: dict[str, Any] = {}
    for name, picks in ZOO.items():
        study = load_study(f"zoo:{name}")
        for model in picks:
            train = study.train_for(model).to_config()
            train.pop("repeats")
            spec = study.models[model].to_config()
            models[f"{name}.{model}"] = {"description": spec.get("description", ""),
                                         "train": train, "layers": spec["layers"]}
    for width in (16, 48, 96, 192):  # MLPs, 1 and 2 hidden layers
        for depth in (1, 2):
            models[f"mlp{width}x{depth}"] = {"layers": ["Flatten",
                                                        *[_dense(width)] * depth, _out()]}
    for filters in (4, 8, 12):  # one conv + pool, kernel 3 or 5
        for k in (3, 5):
            models[f"cnn{filters}k{k}"] = {"layers": [
                {"Conv2D": {"filters": filters, "kernel_size": k, "activation": "relu"}},
                {"MaxPooling2D": {"pool_size": 2}}, {"Dropout": {"rate": 0.25}}, "Flatten",
                _dense(32), _out()]}
    for filters in (4, 8, 12):  # two convs, same padding, BN
        models[f"cnn2x{filters}"] = {"layers": [
            {"Conv2D": {"filters": filters, "kernel_size": 3, "padding": "same",
                        "activation": "relu"}},
            {"MaxPooling2D": {"pool_size": 2}}, "BatchNormalization",
            {"Conv2D": {"filters": 2 * filters, "kernel_size": 3, "padding": "same",
                        "activation": "relu"}},
            {"MaxPooling2D": {"pool_size": 2}}, "Flatten", _dense(32), _out()]}
    models["diverges"] = {"description": "SGD with lr 1e4: the loss overflows",
                          "train": {"optimizer": {"name": "sgd", "learning_rate": 1.0e4}},
                          "layers": ["Flatten", _dense(64), _dense(64), _out()]}
    models["stuck"] = {"description": "SGD with lr 1e-6: learns nothing in an epoch",
                       "train": {"optimizer": {"name": "sgd", "learning_rate": 1.0e-6}},
                       "layers": ["Flatten", _dense(32, "sigmoid"), _out()]}
    assert len(models) == 30, len(models)
    return {"name": "report-bench-30", "description": "30 small models on mnist-sample, 1 "
            "epoch each, to time report generation", "seed": 0,
            "data": {"dataset": "mnist-sample", "validation": {"split": 0.1}},
            "train": {"optimizer": {"name": "adam"}, "batch_size": 128, "epochs": 1},
            "models": models}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="archlab-runs/report-bench-30", help="study directory")
    p.add_argument("--jobs", type=int, default=max(1, min(4, (os.cpu_count() or 1) // 2)),
                   help="training processes (training is not what is timed)")
    p.add_argument("--repeat", type=int, default=1, help="time write_report this many times")
    args = p.parse_args(argv)

    from archlab.cli import main as cli
    from archlab.report import write_report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "bench-study.yaml"
    spec.write_text(yaml.safe_dump(study_config(), sort_keys=False))
    t0 = time.perf_counter()
    rc = cli(["run", str(spec), "--epochs", "1", "--out", str(out), "--quiet", "--no-report",
              "--jobs", str(args.jobs)])
    print(f"training (skipped where already stored): {time.perf_counter() - t0:.1f} s, "
          f"exit {rc}", file=sys.stderr)
    times, cpu = [], []
    for _ in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        paths = write_report(out)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    html = paths[0].stat().st_size / 1e6
    pngs = list((out / "report_files").glob("*.png"))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"write_report, 30 models: {min(times):.1f} s wall, {min(cpu):.1f} s CPU (best of "
          f"{len(times)}; wall: {', '.join(f'{t:.1f}' for t in times)}; median "
          f"{statistics.median(times):.1f} s) on {os.cpu_count()} CPUs, load average {load}; "
          f"report.html {html:.1f} MB, {len(pngs)} PNGs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
