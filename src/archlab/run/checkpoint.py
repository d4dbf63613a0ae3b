"""Checkpoints ⇄ TrainState, written and read side by side below (safetensors; never pickle).

A checkpoint is one safetensors file. Its tensors and its JSON metadata, key for key:

    model/<name>           the module's state_dict
    best/<name>            the best epoch's weights (``restore_best`` only)
    opt/<index>/<name>     optimizer state tensors, per parameter index
    rng/torch, rng/cuda    the global torch (and CUDA: dropout) RNG states
    rng/shuffle            the shuffling generator's state
    rng/augment            the augmentation generators' states (runs with augmentation)
    metadata "archlab":    format, epoch, history, best, best_epoch, wait, train_seconds,
                           param_groups, scalars (non-tensor optimizer state), sched,
                           engine: {threads, channels_last} (how the run computes: a resumed
                           run keeps both, so its float reductions are those it started with)

Loading checks the file against the model before changing anything, and raises
:class:`CheckpointError` for any file it cannot use (truncated, not safetensors, another
model's): the caller discards it and starts the run again from zero.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_tensors

from archlab.layout import set_channels_last, uses_channels_last
from archlab.store.layout import atomic_save
from archlab.train import CheckpointError, TrainState

__all__ = [
    "FORMAT",
    "META_KEYS",
    "load_checkpoint",
    "save_checkpoint",
    "save_weights",
]

FORMAT = 2  # bumped when the keys below change; an older file is then discarded, not misread
META_KEYS = ("format", "epoch", "history", "best", "best_epoch", "wait", "train_seconds",
             "param_groups", "scalars", "sched", "engine")


def save_weights(module: torch.nn.Module, path: Path, meta: dict[str, str] | None = None) -> None:
    atomic_save(dict(module.state_dict()), path, meta or {})


def save_checkpoint(path: Path, state: TrainState, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any,
                    generator: torch.Generator) -> None:
    """Everything needed to resume at this epoch boundary, bit for bit."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    if state.best_weights is not None:
        tensors.update({f"best/{k}": v for k, v in state.best_weights.items()})
    opt_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, per_param in opt_state["state"].items():
        for k, v in per_param.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt/{pid}/{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    tensors["rng/torch"] = torch.get_rng_state()
    device = next(model.parameters()).device
    if device.type == "cuda":
        tensors["rng/cuda"] = torch.cuda.get_rng_state(device)
    tensors["rng/shuffle"] = generator.get_state()
    if state.augment_rng is not None:
        tensors["rng/augment"] = state.augment_rng
    meta = {"format": FORMAT, "epoch": state.epoch, "history": state.history,
            "best": state.best_val_loss, "best_epoch": state.best_epoch, "wait": state.wait,
            "train_seconds": state.train_seconds, "param_groups": opt_state["param_groups"],
            "scalars": scalars,
            "sched": scheduler.state_dict() if scheduler is not None else None,
            "engine": {"threads": torch.get_num_threads(),
                       "channels_last": uses_channels_last(model)}}
    atomic_save(tensors, path, {"archlab": json.dumps(meta)})


def load_checkpoint(source: bytes | Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any,
                    generator: torch.Generator) -> TrainState:
    """Restore what :func:`save_checkpoint` wrote into the model, optimizer, scheduler and
    generators; return the TrainState to resume from. ``source``: the file, or better its
    bytes as :meth:`archlab.store.Store.read_verified` checked them."""
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"unreadable ({exc.strerror or exc})") from None
    tensors, meta = _read(data)
    _check(tensors, meta, model, optimizer)
    if (scheduler is None) != (meta["sched"] is None):
        raise CheckpointError("its learning-rate state is for another schedule")
    try:
        # The thread count and layout the run started with: same float reduction order.
        torch.set_num_threads(meta["engine"]["threads"])
        set_channels_last(model, meta["engine"]["channels_last"])
        model.load_state_dict(_prefixed(tensors, "model/"))
        per_param: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("opt/"):
                _, pid, name = k.split("/", 2)
                per_param.setdefault(int(pid), {})[name] = v
        for pid, values in meta["scalars"].items():
            per_param.setdefault(int(pid), {}).update(values)
        optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
        if scheduler is not None:
            scheduler.load_state_dict(meta["sched"])
        generator.set_state(tensors["rng/shuffle"])
        torch.set_rng_state(tensors["rng/torch"])
        device = next(model.parameters()).device
        if "rng/cuda" in tensors and device.type == "cuda":  # a CUDA run resumed on CUDA;
            torch.cuda.set_rng_state(tensors["rng/cuda"], device)  # elsewhere it is moot
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"does not fit this run ({_first_line(exc)})") from None
    return TrainState(epoch=meta["epoch"], history=meta["history"],
                      best_val_loss=meta["best"], best_epoch=meta["best_epoch"],
                      wait=meta["wait"], best_weights=_prefixed(tensors, "best/") or None,
                      train_seconds=meta["train_seconds"],
                      augment_rng=tensors.get("rng/augment"))


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:200] if text else ''}"


def _read(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and archlab metadata of a safetensors file, or CheckpointError."""
    try:
        tensors = load_tensors(data)
        # safetensors' layout: an 8-byte little-endian header length, then the JSON header.
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        meta = json.loads(header["__metadata__"]["archlab"])
    except Exception as exc:  # noqa: BLE001 - whatever the bytes are, the file is unusable
        raise CheckpointError(f"not an archlab checkpoint ({_first_line(exc)})") from None
    if not isinstance(meta, dict) or sorted(meta) != sorted(META_KEYS) \
            or meta["format"] != FORMAT:
        raise CheckpointError("not an archlab checkpoint of this version (metadata keys differ)")
    return tensors, meta


def _check(tensors: dict[str, torch.Tensor], meta: dict[str, Any], model: torch.nn.Module,
           optimizer: torch.optim.Optimizer) -> None:
    """Refuse a file that does not fit this run, before anything is modified."""
    expected = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    for prefix in ("model/", "best/"):
        found = {k: (tuple(v.shape), v.dtype) for k, v in _prefixed(tensors, prefix).items()}
        if (found and found != expected) or (prefix == "model/" and not found):
            extra = sorted(set(found) ^ set(expected))[:2]
            raise CheckpointError(f"holds another model's weights ({prefix}: "
                                  f"{', '.join(extra) or 'shapes or dtypes differ'})")
    n_params = sum(len(g["params"]) for g in optimizer.param_groups)
    groups = meta["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups) \
            or sum(len(g.get("params", ())) for g in groups) != n_params:
        raise CheckpointError("its optimizer state is for other parameters")
    engine = meta["engine"]
    if not isinstance(engine, dict) or not isinstance(engine.get("threads"), int) \
            or isinstance(engine["threads"], bool) or engine["threads"] < 1 \
            or not isinstance(engine.get("channels_last"), bool):
        raise CheckpointError("its engine settings (threads, layout) are unreadable")
    epoch, history = meta["epoch"], meta["history"]
    if not isinstance(epoch, int) or not isinstance(history, list) or len(history) != epoch \
            or "rng/shuffle" not in tensors or "rng/torch" not in tensors:
        raise CheckpointError("its training state is incomplete")
