"""Checkpoints and weights: safetensors for every tensor, JSON metadata for the rest (never pickle).

A checkpoint is written and read side by side below, key for key."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from archlab.model import BuiltModel
from archlab.train import TrainState


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, meta: dict[str, str]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata=meta)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_weights(module: torch.nn.Module, path: Path, meta: dict[str, str] | None = None) -> None:
    atomic_save(dict(module.state_dict()), path, meta or {})


def save_checkpoint(path: Path, built: BuiltModel, state: TrainState, opt: torch.optim.Optimizer,
                     sched: Any, gen: torch.Generator) -> None:
    tensors = {f"model/{k}": v for k, v in built.module.state_dict().items()}
    opt_state = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in opt_state["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt/{pid}/{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    tensors["rng/torch"] = torch.get_rng_state()
    device = next(built.module.parameters()).device
    if device.type == "cuda":
        tensors["rng/cuda"] = torch.cuda.get_rng_state(device)
    tensors["rng/shuffle"] = gen.get_state()
    if state.best_weights is not None:
        tensors.update({f"best/{k}": v for k, v in state.best_weights.items()})
    meta = {"epoch": state.epoch, "history": state.history, "best": state.best_val_loss,
            "best_epoch": state.best_epoch, "wait": state.wait, "train_seconds":
            state.train_seconds, "param_groups": opt_state["param_groups"], "scalars": scalars,
            "sched": sched.state_dict() if sched is not None else None}
    atomic_save(tensors, path, {"archlab": json.dumps(meta)})


def load_checkpoint(path: Path, built: BuiltModel) -> tuple[TrainState, Callable[..., None]]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = json.loads(fh.metadata()["archlab"])
    tensors = load_file(str(path))
    built.module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")} or None
    state = TrainState(epoch=meta["epoch"], history=meta["history"], best_val_loss=meta["best"],
                       best_epoch=meta["best_epoch"], wait=meta["wait"], best_weights=best,
                       train_seconds=meta["train_seconds"])

    def restore(opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator) -> None:
        per_param: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("opt/"):
                _, pid, name = k.split("/", 2)
                per_param.setdefault(int(pid), {})[name] = v
        for pid, values in meta["scalars"].items():
            per_param.setdefault(int(pid), {}).update(values)
        opt.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
        if sched is not None and meta["sched"] is not None:
            sched.load_state_dict(meta["sched"])
        gen.set_state(tensors["rng/shuffle"])
        torch.set_rng_state(tensors["rng/torch"])
        if "rng/cuda" in tensors:
            device = next(built.module.parameters()).device
            torch.cuda.set_rng_state(tensors["rng/cuda"], device)

    return state, restore


