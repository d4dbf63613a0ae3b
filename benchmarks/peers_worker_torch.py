"""peers.py worker: a plain PyTorch training loop, the model written with torch.nn by hand.

What a careful user writes without archlab: the same layers (PyTorch's defaults, NCHW), shuffled
index batches from in-memory tensors, forward, cross-entropy, backward, step, and the running
loss and accuracy read with ``.item()`` each batch (as Keras reports them). Timed: ``steps``
batches after ``warmup`` batches.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers_worker_common import (  # noqa: E402
    Snapshot,
    cpu_window,
    layer_items,
    read_job,
    report,
    synthetic_data,
)


def _pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def build(layers, torch):
    nn = torch.nn
    mods, c, hw, flat = [], 1, (28, 28), None
    for kind, a in layer_items(layers):
        if kind == "Conv2D":
            k = _pair(a["kernel_size"])
            same = a.get("padding", "valid") == "same"
            mods.append(nn.Conv2d(c, a["filters"], k, padding="same" if same else 0))
            c = a["filters"]
            if not same:
                hw = (hw[0] - k[0] + 1, hw[1] - k[1] + 1)
        elif kind == "MaxPooling2D":
            p = _pair(a.get("pool_size", 2))
            mods.append(nn.MaxPool2d(p))
            hw = (hw[0] // p[0], hw[1] // p[1])
        elif kind == "Dropout":
            mods.append(nn.Dropout(a["rate"]))
            continue
        elif kind == "Flatten":
            mods.append(nn.Flatten())
            flat = c * hw[0] * hw[1]
            continue
        elif kind == "BatchNormalization":
            mods.append(nn.BatchNorm1d(flat) if flat is not None else nn.BatchNorm2d(c))
            continue
        elif kind == "Dense":
            mods.append(nn.Linear(flat, a["units"]))
            flat = a["units"]
        else:
            raise SystemExit(f"plain torch peer: no {kind}")
        if a.get("activation") == "relu":
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)  # the last Dense's softmax is inside cross_entropy


def main() -> None:
    job = read_job()
    import torch
    import torch.nn.functional as F

    if job["threads"]:  # else torch's default: every core
        torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    model = build(job["layers"], torch)
    o = job["optimizer"]
    if o["name"] == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=o.get("learning_rate", 1e-3))
    elif o["name"] == "adadelta":
        opt = torch.optim.Adadelta(model.parameters(), lr=o.get("learning_rate", 1.0), rho=0.95,
                                   eps=1e-7)
    elif o["name"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=o.get("learning_rate", 0.01),
                              momentum=o.get("momentum", 0.0))
    else:
        raise SystemExit(f"plain torch peer: no optimizer {o['name']}")
    bs = job["batch_size"]

    def data(steps: int, seed: int):
        x, y = synthetic_data(steps * bs, seed, channels_last=False)
        return torch.from_numpy(x), torch.from_numpy(y), seed

    def epoch(x, y, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(x), generator=g)
        model.train()
        running, correct = 0.0, 0
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item() * len(idx)
            correct += (logits.argmax(1) == y[idx]).sum().item()

    epoch(*data(job["warmup"], job["seed"] + 1))
    timed = data(job["steps"], job["seed"])
    start = Snapshot.take(job["background_pid"])
    epoch(*timed)
    window = cpu_window(start, Snapshot.take(job["background_pid"]))
    report(job, window, torch=torch.__version__, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
