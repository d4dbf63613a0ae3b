"""archlab's trainer against a plain hand-written PyTorch loop: samples/s, side by side.

Same model (built by archlab), same batch size, same threads, same data (the embedded
mnist-sample, 4,500 training images), interleaved rounds; prints medians and the ratio.
The plain loop is what a careful user writes by hand for the same job (train loss and
accuracy per epoch, as Keras reports them): shuffled index batches from in-memory tensors,
forward, loss, backward, step, and `.item()` per batch for the running loss and accuracy.

    python benchmarks/trainer_vs_plain.py [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from archlab import build_model, load_study, parse_study
from archlab.data import load_dataset, prepare_tensors
from archlab.optim import make_optimizer
from archlab.spec import override_training
from archlab.train import fit

CASES = [("zoo:keras-mnist-cnn", "cnn"), ("zoo:depth-l2", "conv3-wide"),
         ("zoo:mlp-hparams", "mlp32")]


def plain_loop(study, model, data, seed: int) -> float:
    train = study.train_for(model)
    built = build_model(study, model, seed=seed)
    module = built.module
    opt, _ = make_optimizer(train.optimizer, module.parameters())
    g = torch.Generator().manual_seed(seed)
    # a hand-written loop holds the whole training set as float NCHW, made once (untimed)
    x = data.pre(data.x_train).contiguous()
    y, bs = data.y_train, train.batch_size
    t0 = time.perf_counter()
    module.train()
    running, correct = 0.0, 0
    perm = torch.randperm(len(x), generator=g)
    for i in range(0, len(x), bs):
        idx = perm[i:i + bs]
        logits = module(x[idx])
        loss = F.cross_entropy(logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        running += loss.item() * len(idx)
        correct += (logits.argmax(1) == y[idx]).sum().item()
    return len(x) / (time.perf_counter() - t0)


def archlab_loop(study, model, data, seed: int) -> float:
    train = study.train_for(model)
    built = build_model(study, model, seed=seed)
    result = fit(built, data, train, seed)
    return result.samples_per_second  # training time only, as for the plain loop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    raw = load_dataset("mnist-sample")
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds, "
          "mnist-sample (4,500 train images), 1 epoch per round")
    print(f"{'model':<28}{'batch':>6}{'plain (samples/s)':>20}{'archlab (samples/s)':>22}"
          f"{'archlab/plain':>15}")
    for source, model in CASES:
        config = load_study(source).to_config()
        config["data"].update(dataset="mnist-sample", validation={"split": 0.1})
        study = override_training(parse_study(config), epochs=1)
        data = prepare_tensors(raw, study.data, 0)
        plain, ours = [], []
        for r in range(args.rounds):  # interleave so drift in machine load hits both
            plain.append(plain_loop(study, model, data, r))
            ours.append(archlab_loop(study, model, data, r))
        p, o = statistics.median(plain), statistics.median(ours)
        print(f"{source[4:] + ':' + model:<28}{study.train_for(model).batch_size:>6}"
              f"{p:>20,.0f}{o:>22,.0f}{o / p:>15.2f}")


if __name__ == "__main__":
    main()
