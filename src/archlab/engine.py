"""How the trainer runs a model's steps on this machine, never changing its numbers: the size of
evaluation chunks, glibc's malloc kept from unmapping freed buffers, an MLP's written-out step
(the dense plan), and a conv's ReLU moved after its max pooling. The memory layout (NCHW or
NHWC) is chosen in :mod:`archlab.layout`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from archlab.dense_plan import SingleDensePlan
from archlab.model import ACTIVATION_FACTOR, BuiltModel

__all__ = [
    "DENSE_PLAN_ENV",
    "EVAL_BATCH",
    "EVAL_MEMORY",
    "eval_batch_for",
    "keep_freed_memory",
    "release_freed_memory",
    "relu_after_pool",
    "single_dense_plan",
]

EVAL_BATCH = 2000
#: What one evaluation chunk's activations may take, by the model's own estimate: a model
#: with big activations evaluates fewer than EVAL_BATCH images at a time (kernels-padding's
#: m10: 475 images, so that it trains within 2 GB; measured in docs/cpu-trainer.md).
EVAL_MEMORY = 768 << 20


def eval_batch_for(built: BuiltModel) -> int:
    """Images per evaluation chunk: :data:`EVAL_BATCH`, or as many as fit in
    :data:`EVAL_MEMORY` counting every layer's output per image (an upper bound for a no-grad
    pass, which frees each output once the next layer has read it). Fixed per model: the
    same chunks, hence the same float sums, on every run of it."""
    mem = built.memory
    per_image = sum(m.activation_bytes for m in mem.layers) / max(1, mem.batch_size) \
        / ACTIVATION_FACTOR
    return max(1, min(EVAL_BATCH, int(EVAL_MEMORY // max(1.0, per_image))))


_LIBC: Any = None  # glibc, once keep_freed_memory has tuned its malloc


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the
    system (once per process; False where it cannot: not glibc, or refused, or
    ``$ARCHLAB_KEEP_FREED_MEMORY=0``).

    A training step frees and allocates the same large activation buffers every batch, and an
    evaluation chunk hundreds of megabytes of them. By default glibc serves each allocation
    over its mmap threshold (dynamic, at most 32 MiB) with a fresh mmap and unmaps it on free,
    and trims the heap's free top, so those buffers are page-faulted anew each time: a 2-epoch
    keras-mnist-cnn study on 2 threads spent 20.6 s of system time (70.7 s wall). With both
    thresholds at 1 GiB freed blocks are reused (what tcmalloc or jemalloc do, and
    TensorFlow's own allocator): 1.0 s of system time, 57.3 s wall. The heap then keeps what
    it held at its peak; :func:`release_freed_memory` hands the free part back between
    training and evaluation (docs/performance.md: the peak memory this costs)."""
    global _LIBC
    if _LIBC is not None:
        return True
    if os.environ.get("ARCHLAB_KEEP_FREED_MEMORY", "").strip() == "0":  # benchmarks
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        ok = libc.mallopt(m_mmap_threshold, 1 << 30) == 1 \
            and libc.mallopt(m_trim_threshold, 1 << 30) == 1
    except (OSError, AttributeError):
        ok = False
    if ok:
        _LIBC = libc
    return ok


def release_freed_memory() -> None:
    """Hand the heap's free memory back to the system (``malloc_trim``), where
    :func:`keep_freed_memory` kept it: between training steps and an evaluation, so that the
    heap's peak is the larger of the two, not their sum."""
    if _LIBC is not None and os.environ.get("ARCHLAB_KEEP_FREED_MEMORY", "") != "notrim":
        _LIBC.malloc_trim(0)


#: Set to 0 to train every model through autograd (benchmarks, tests): no dense plan.
DENSE_PLAN_ENV = "ARCHLAB_DENSE_PLAN"


def single_dense_plan(built: BuiltModel) -> Any:
    """The written-out step of :class:`archlab.dense_plan.SingleDensePlan` for ``built``, or None
    where its step goes through autograd: a model that is not a stack of Dense layers, bf16
    autocast, or ``$ARCHLAB_DENSE_PLAN=0``. Its gradients are autograd's bit for bit, so the
    choice never changes a run's numbers and needs no timing."""
    first = next(built.module.parameters(), None)
    if first is None or os.environ.get(DENSE_PLAN_ENV, "").strip() == "0" \
            or torch.is_autocast_enabled(first.device.type):
        return None
    return SingleDensePlan.of(built)


class _PoolReLU(torch.nn.Module):
    """MaxPooling2D, then the ReLU of the conv before it (:func:`relu_after_pool`), in place:
    the pool's backward reads its input and indices, not its output."""

    def __init__(self, pool: torch.nn.Module, relu: torch.nn.Module) -> None:
        super().__init__()
        self.pool, self.relu = pool, relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu_(self.pool(x))


@contextlib.contextmanager
def relu_after_pool(module: torch.nn.Module) -> Iterator[int]:
    """While it lasts, a Conv2D with ReLU followed directly by MaxPooling2D computes
    ``relu(pool(conv))`` instead of ``pool(relu(conv))``: the same numbers (ReLU is
    non-decreasing, so it commutes with a max; where a window's max is not positive both
    give 0 and both send it no gradient), forward and backward bit for bit, with the ReLU and
    its backward on a quarter of the values. Yields how many pairs it moved; the module is
    put back as it was on exit (its structure is what summaries, exports and layer-by-layer
    tests see). The ReLUs that stay in their block run in place meanwhile."""
    moved: list[tuple[torch.nn.Module, str, torch.nn.Module, torch.nn.Module]] = []
    for seq in module.modules():
        if not isinstance(seq, torch.nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:], strict=False):
            block, pool = seq._modules[a], seq._modules[b]
            if (type(block).__name__ == "_Block" and type(block.act) is torch.nn.ReLU
                    and block.activity is None and isinstance(block.core, torch.nn.Conv2d)
                    and type(pool) is torch.nn.MaxPool2d and not pool.ceil_mode
                    and pool.padding == 0):
                relu = block.act
                block.act = None
                seq._modules[b] = _PoolReLU(pool, relu)
                moved.append((seq, b, block, relu))
    # A block's own ReLU (conv or Dense, without an activity regularizer) runs in place: its
    # core's backward reads its input and weights, never its output, so the values and
    # gradients are the same, with one activation-sized tensor less to write per layer.
    inplace = [m.act for m in module.modules()
               if type(m).__name__ == "_Block" and type(m.act) is torch.nn.ReLU
               and m.activity is None and not m.act.inplace
               and isinstance(m.core, torch.nn.Conv2d | torch.nn.Linear)]
    for relu in inplace:
        relu.inplace = True
    try:
        yield len(moved)
    finally:
        for relu in inplace:
            relu.inplace = False
        for seq, b, block, relu in moved:
            seq._modules[b] = seq._modules[b].pool  # type: ignore[union-attr]
            block.act = relu
