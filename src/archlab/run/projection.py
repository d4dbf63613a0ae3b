"""Projected training time: a few timed steps on synthetic input, scaled to the whole run."""

from __future__ import annotations

import time

import numpy as np
import torch

from archlab.datasets import dataset_info
from archlab.model import build_model
from archlab.spec import Study


def projected_seconds(study: Study, model: str, *, steps: int = 3,
                      device: str = "cpu") -> float:
    """Time a few training steps on synthetic input; project the model's whole training.

    Counts the training steps of every epoch plus the evaluation passes (validation each
    epoch, train/val/test at the end; a forward pass costs about a third of a training step).
    """
    from archlab.train import make_optimizer, prefer_channels_last

    train = study.train_for(model)
    built = build_model(study, model, seed=0)
    built.module.to(device)
    prefer_channels_last(built.module)  # as fit() trains it
    opt, _ = make_optimizer(train.optimizer, built.module.parameters())
    info = dataset_info(study.data.dataset)
    n_train, n_test = info.train_size, info.test_size
    split = study.data.validation
    n_val = n_test if split == "test" else round(n_train * split.split)  # type: ignore[union-attr]
    n_train -= 0 if split == "test" else n_val
    bs = train.batch_size
    h, w, c = built.input_shape
    gen = torch.Generator().manual_seed(0)
    xb = torch.rand(bs, c, h, w, generator=gen).to(device)
    yb = torch.randint(0, built.output_shape[0], (bs,), generator=gen).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(built.module(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t0)
    per_sample = float(np.median(times[2:])) / bs  # the first steps pay one-off costs
    forward_samples = n_val * train.epochs + n_train + n_val + n_test
    return per_sample * (n_train * train.epochs + forward_samples / 3)
