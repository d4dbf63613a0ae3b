"""What data augmentation costs: one batch's transform, and an epoch with and without it.

    python benchmarks/augment.py [--threads 1] [--batch 128] [--repeat 5]

Prints the median time to augment one batch of mnist-sample images (rotation, translation and
zoom: one resampling), and the median epoch time of the quickstart's small CNN on mnist-sample
with and without that augmentation.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

import archlab
from archlab.augment import Augmenter
from archlab.data import load_dataset, prepare_tensors
from archlab.train import fit

AUGMENTATION = [{"RandomRotation": {"factor": 0.03}},
                {"RandomTranslation": {"height_factor": 0.1, "width_factor": 0.1}},
                {"RandomZoom": {"height_factor": 0.1}}]
LAYERS = [{"Conv2D": {"filters": 8, "kernel_size": 3, "activation": "relu"}},
          {"MaxPooling2D": {"pool_size": 2}}, "Flatten",
          {"Dense": {"units": 10, "activation": "softmax"}}]


def study(batch: int, augmentation: list[dict[str, Any]]) -> archlab.Study:
    return archlab.parse_study({"name": "bench", "seed": 1, "data": {"dataset": "mnist-sample"},
                                "train": {"batch_size": batch, "epochs": 1,
                                          "augmentation": augmentation},
                                "models": {"cnn": {"layers": LAYERS}}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    augmented = study(args.batch, AUGMENTATION)
    data = prepare_tensors(load_dataset("mnist-sample"), augmented.data, augmented.seed)
    augment = Augmenter(augmented.train.augmentation, 1)
    x = data.pre(data.x_train[:args.batch])  # the float NCHW batch the trainer augments
    batch_times = []
    for _ in range(args.repeat * 20):
        t0 = time.perf_counter()
        augment(x)
        batch_times.append(time.perf_counter() - t0)
    print(f"augment one batch of {args.batch}: {statistics.median(batch_times) * 1e3:.2f} ms")
    for name, s in (("without", study(args.batch, [])), ("with", augmented)):
        epochs = []
        for _ in range(args.repeat):
            built = archlab.build_model(s, "cnn", seed=1)
            epochs.append(fit(built, data, s.train, 1).train_seconds)
        print(f"epoch of {len(data.x_train)} images {name} augmentation: "
              f"{statistics.median(epochs):.2f} s")


if __name__ == "__main__":
    main()
