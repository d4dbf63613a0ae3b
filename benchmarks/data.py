"""Loading a folder of images: cold (decoded) and warm (the verified cache) against the same
images as an .npz, and the peak memory of training on them.

It writes a folder of ``--images`` 32x32 RGB PNGs in 10 class folders (real MNIST digits
from ../shared/datasets/mnist, resized to 32x32 and tinted per class, so they decode like
photographs of that size, not like noise), and the same images as an .npz. Each measurement
runs in a fresh process (peak RSS from ``resource.getrusage``): the folder with an empty cache
(cold: list, decode in parallel, hash, write the cache), the folder again (warm: stat every
file, read and verify the cache), the .npz, and one epoch of a small CNN on the folder. The
training case first trains the same model for an epoch on 512 images of the same size and
evaluates it on 2,048 (torch's allocator, oneDNN's buffers, a full evaluation chunk and the model
settle at their peak), then loads the folder and
trains on it: the peak RSS that the dataset adds is the second peak less the first, and is held
against twice the dataset's uint8 size.

    python benchmarks/data.py [--images 50000] [--rounds 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MNIST = HERE.parent.parent / "shared" / "datasets" / "mnist"


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build(root: Path, n: int) -> tuple[Path, Path]:
    """``n`` tinted 32x32 digits as PNGs in ``root/images/<class>/`` and as ``root/d.npz``."""
    import numpy as np
    from PIL import Image

    from archlab.data import load_dataset

    raw = load_dataset("mnist", MNIST)
    x, y = raw.x_train[:n, :, :, 0], raw.y_train[:n]
    tints = np.array([[255, 80, 80], [80, 255, 80], [80, 80, 255], [255, 255, 80],
                      [255, 80, 255], [80, 255, 255], [255, 160, 60], [160, 60, 255],
                      [60, 160, 255], [200, 200, 200]], dtype=np.float64)
    images = np.empty((n, 32, 32, 3), np.uint8)
    folder = root / "images"
    for i in range(n):
        pic = Image.fromarray(x[i]).resize((32, 32), Image.Resampling.BILINEAR)
        rgb = np.rint(np.asarray(pic, np.float64)[..., None] / 255 * tints[y[i]])
        images[i] = rgb.astype(np.uint8)
        path = folder / f"c{y[i]}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(path)
    test = np.arange(n) % 5 == 0
    np.savez(root / "d.npz", x_train=images[~test], y_train=y[~test], x_test=images[test],
             y_test=y[test])
    return folder, root / "d.npz"


def worker(mode: str, target: str, cache: str, threads: int) -> dict:
    """One measurement in this (fresh) process."""
    os.environ["ARCHLAB_CACHE_DIR"] = cache
    import torch

    torch.set_num_threads(threads)
    from archlab.data import load_dataset
    from archlab.datasets import FolderSource, NpzSource

    source = (NpzSource.model_validate({"npz": target}) if mode == "npz"
              else FolderSource.model_validate({"folder": target}))
    if mode == "train":
        return train_worker(source)
    before = current_rss()
    t0 = time.perf_counter()
    raw = load_dataset(source)
    seconds = time.perf_counter() - t0
    return {"mode": mode, "seconds": seconds, "from_cache": raw.from_cache,
            "images": len(raw.x_train) + len(raw.x_test), "uint8_bytes": raw.nbytes,
            "rss_before": before, "peak_rss": peak_rss()}


def train_worker(source: Any) -> dict:
    """An epoch on 512 images (the model's and torch's own peak), then on the whole folder."""
    import dataclasses

    import numpy as np

    from archlab import build_model, parse_study
    from archlab.data import load_dataset, prepare_tensors
    from archlab.data.loader import RawDataset
    from archlab.train import fit

    study = parse_study({"name": "bench", "data": {"dataset": source.model_dump()},
                         "train": {"optimizer": {"name": "adam"}, "batch_size": 128,
                                   "epochs": 1},
                         "models": {"cnn": {"layers": [
                             {"Conv2D": {"filters": 16, "kernel_size": 3, "activation": "relu"}},
                             {"MaxPooling2D": {"pool_size": 2}},
                             {"Conv2D": {"filters": 32, "kernel_size": 3, "activation": "relu"}},
                             {"MaxPooling2D": {"pool_size": 2}}, "Flatten",
                             {"Dense": {"units": 10, "activation": "softmax"}}]}}})
    info = study.data.info  # from the listing: no pixel read yet
    rng = np.random.default_rng(0)
    # as many test images as one evaluation chunk holds: the evaluation's peak is reached too
    n_train, n_test = 512, 2048
    small = RawDataset(dataclasses.replace(info, train_size=n_train, test_size=n_test),
                       rng.integers(0, 256, (n_train, *info.image_shape), dtype=np.uint8),
                       np.arange(n_train) % 10,
                       rng.integers(0, 256, (n_test, *info.image_shape), dtype=np.uint8),
                       np.arange(n_test) % 10, "synthetic")
    built = build_model(study, "cnn", seed=0)
    fit(built, prepare_tensors(small, study.data, 0), study.train_for("cnn"), 0)
    settled = peak_rss()
    raw = load_dataset(source)
    built = build_model(study.with_dataset(raw.info), "cnn", seed=0)
    data = prepare_tensors(raw, study.data, 0)
    t0 = time.perf_counter()
    fit(built, data, study.train_for("cnn"), 0)
    return {"mode": "train", "train_seconds": time.perf_counter() - t0,
            "uint8_bytes": raw.nbytes, "settled_rss": settled, "peak_rss": peak_rss(),
            "model_bytes": built.memory.total_bytes}


def run_worker(mode: str, target: Path, cache: Path, threads: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", mode, str(target), str(cache),
                           str(threads)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each case (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", help="build the images here and keep them (reused if there)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, target, cache, threads = args.worker
        print(json.dumps(worker(mode, target, cache, int(threads))))
        return
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="archlab-data-"))
    try:
        if not (root / "d.npz").is_file():
            t0 = time.perf_counter()
            build(root, args.images)
            print(f"wrote {args.images:,} PNGs and the .npz in {time.perf_counter() - t0:.0f} s")
        folder, npz = root / "images", root / "d.npz"
        rows: dict[str, list[dict]] = {"folder, cold": [], "folder, warm": [], ".npz": []}
        for _ in range(args.rounds):  # interleaved: a busy spell hits every case alike
            cache = root / "cache"
            shutil.rmtree(cache, ignore_errors=True)
            rows["folder, cold"].append(run_worker("folder", folder, cache, args.threads))
            rows["folder, warm"].append(run_worker("folder", folder, cache, args.threads))
            rows[".npz"].append(run_worker("npz", npz, cache, args.threads))
        train = run_worker("train", folder, root / "cache", args.threads)
        load = os.getloadavg()[0]
        print(f"\n{cpu_name()}, {os.cpu_count()} CPUs, {args.threads} threads, load average "
              f"{load:.1f}; {args.images:,} 32x32 RGB PNGs in 10 folders; median of "
              f"{args.rounds}\n")
        print(f"{'case':<14} {'load (s)':>9} {'peak RSS':>10} {'RSS added':>10} {'from cache':>11}")
        for name, runs in rows.items():
            secs = statistics.median(r["seconds"] for r in runs)
            peak = statistics.median(r["peak_rss"] for r in runs)
            added = statistics.median(r["peak_rss"] - r["rss_before"] for r in runs)
            print(f"{name:<14} {secs:>9.2f} {mib(peak):>10} {mib(added):>10} "
                  f"{str(runs[0]['from_cache']):>11}")
        data = train["uint8_bytes"]
        added = train["peak_rss"] - train["settled_rss"]
        print(f"\ntraining one epoch of a small CNN on the folder: {train['train_seconds']:.1f} "
              f"s; dataset {mib(data)} as uint8; peak RSS {mib(train['settled_rss'])} after an "
              f"epoch on 512 images, {mib(train['peak_rss'])} after the folder's epoch: the "
              f"dataset added {mib(added)} = {added / data:.2f} x its uint8 size (target: at "
              f"most 2 x, plus the model's {mib(train['model_bytes'])} training estimate)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
