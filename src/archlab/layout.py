"""NHWC or NCHW, per model: the layout a conv model trains in here (:func:`prefer_channels_last`),
chosen by timing both (:func:`channels_last_faster`), cached per machine beside the step
timings, and recorded on the module (:func:`uses_channels_last`) for its checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time

import torch

from archlab.machine import cpu_model, load_per_core, put_cache, read_cache, timings_cache_path

__all__ = [
    "CHANNELS_LAST_ENV",
    "LAYOUT_BUDGET_S",
    "LAYOUT_CACHE_FILE",
    "LAYOUT_MARGIN",
    "channels_last_faster",
    "prefer_channels_last",
    "set_channels_last",
    "uses_channels_last",
]


LAYOUT_CACHE_FILE = "layouts.json"
#: NHWC is chosen only when its steps are at least this much faster (ties keep plain NCHW).
LAYOUT_MARGIN = 0.05
#: Seconds of timed steps per probe, both layouts together (at least one step each).
LAYOUT_BUDGET_S = 2.0
_layouts: dict[str, bool] = {}  # this process's decisions: one model, one layout


def _layout_key(module: torch.nn.Module, input_shape: tuple[int, ...], batch: int,
                device: str) -> str:
    ident = {"module": repr(module), "input": list(input_shape), "batch": batch,
             "device": device, "threads": torch.get_num_threads(), "torch": torch.__version__,
             "cpu": cpu_model()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def _time_layouts(module: torch.nn.Module, input_shape: tuple[int, ...], batch: int,
                  device: torch.device) -> dict[bool, float]:
    """Median seconds of a forward+backward step per layout, on copies of ``module``."""
    import copy

    h, w, c = input_shape
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, c, h, w, generator=gen).to(device)
    # One copy, switched between layouts outside the timed region: a big model (m10's 38 M
    # parameters) must not hold two extra copies and their gradients.
    m = copy.deepcopy(module).train()
    inputs = {False: x, True: x.contiguous(memory_format=torch.channels_last)}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(cl: bool) -> float:
        m.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        xb = inputs[cl]
        t0 = time.perf_counter()
        m(xb).float().logsumexp(1).mean().backward()
        sync()
        m.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    times: dict[bool, list[float]] = {False: [], True: []}
    for cl in (False, True):
        step(cl)  # warm-up: allocation, oneDNN kernel selection
    started = time.perf_counter()
    for r in range(7):  # interleaved, alternating order: drift hits both layouts alike
        for cl in ((False, True) if r % 2 == 0 else (True, False)):
            times[cl].append(step(cl))
        if time.perf_counter() - started > LAYOUT_BUDGET_S:
            break
    return {cl: statistics.median(ts) for cl, ts in times.items()}


def _layout_draws(module: torch.nn.Module, input_shape: tuple[int, ...]) -> bool:
    """Whether a random layer of ``module`` (Dropout, GaussianNoise) sees a 4-D input: its
    draws then fill memory order (``bernoulli_``, ``randn_like``), so NHWC and NCHW draw
    different masks from the same seed, and the layout would change the run's numbers."""
    import copy

    probe = copy.deepcopy(module).eval()  # shapes only: eval draws nothing
    seen: list[int] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dim()))
             for m in probe.modules()
             if isinstance(m, torch.nn.Dropout | torch.nn.AlphaDropout)  # archlab's too
             or "Noise" in type(m).__name__]
    if not hooks:
        return False
    h, w, c = input_shape
    device = next(probe.parameters()).device
    with torch.no_grad():
        probe(torch.zeros(2, c, h, w, device=device))
    return any(d >= 4 for d in seen)


def channels_last_faster(module: torch.nn.Module, input_shape: tuple[int, ...],
                         batch_size: int) -> bool:
    """Whether ``module`` should train in NHWC rather than NCHW here.

    A model whose random layers see 4-D activations keeps NHWC, as archlab always trained
    conv models (:func:`_layout_draws`: the layout decides its dropout masks, so choosing it
    by a timing would change the run's numbers). Any other model gets whichever layout ran
    faster: forward+backward steps timed both ways (interleaved) on a copy and synthetic
    input (batch up to 32), NHWC only when :data:`LAYOUT_MARGIN` faster; the global RNG is
    forked, so the run's dropout stream is untouched. Either way the layout changes the
    run's numbers by float rounding only. Cached like step timings (a JSON file beside them,
    and in this process), keyed by the module, input shape, batch, device, torch threads,
    torch version and CPU model.
    """
    try:
        device = next(module.parameters()).device
    except StopIteration:
        return False
    batch = max(1, min(batch_size, 32))
    key = _layout_key(module, tuple(input_shape), batch, str(device))
    if key in _layouts:
        return _layouts[key]
    path = timings_cache_path().with_name(LAYOUT_CACHE_FILE)
    cached = read_cache(path).get(key)
    if isinstance(cached, dict) and isinstance(cached.get("channels_last"), bool):
        _layouts[key] = cached["channels_last"]
        return _layouts[key]
    if _layout_draws(module, tuple(input_shape)):
        _layouts[key] = True
        return True
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        t = _time_layouts(module, tuple(input_shape), batch, device)
    choice = t[True] < t[False] * (1 - LAYOUT_MARGIN)
    _layouts[key] = choice
    put_cache(path, key, {"channels_last": choice, "nchw_s": t[False], "nhwc_s": t[True],
                           "load_per_core": load_per_core(), "measured_at": time.time()})
    return choice


#: Set to 0 or 1 to force the layout of every conv model (benchmarks; no probe is timed).
CHANNELS_LAST_ENV = "ARCHLAB_CHANNELS_LAST"
_LAYOUT_ATTR = "archlab_channels_last"  # the layout chosen for a module, as it was set


def set_channels_last(module: torch.nn.Module, on: bool) -> None:
    """Put ``module``'s 4-D weights in NHWC ("channels last") or NCHW order and remember
    which (:func:`uses_channels_last`; checkpoints record it). Values are unchanged."""
    module.to(memory_format=torch.channels_last if on else torch.contiguous_format)
    module.__dict__[_LAYOUT_ATTR] = on


def uses_channels_last(module: torch.nn.Module) -> bool:
    """Whether :func:`set_channels_last` put ``module`` in NHWC order."""
    return bool(module.__dict__.get(_LAYOUT_ATTR, False))


def prefer_channels_last(module: torch.nn.Module, input_shape: tuple[int, ...] | None = None,
                         batch_size: int = 128) -> bool:
    """Train a conv model in whichever layout, NHWC or NCHW, its steps run faster here.

    NHWC weights make oneDNN pick NHWC activations too: faster for some models, slower for
    others (layout copies around Flatten and dropout). Which one is measured per model by
    :func:`archlab.layout.channels_last_faster` (a few timed steps each way on
    synthetic input of ``input_shape`` (H, W, C), cached per machine); without
    ``input_shape`` a conv model gets NHWC. ``$ARCHLAB_CHANNELS_LAST`` (0 or 1) forces it.
    Returns the choice. A run's checkpoint records it, so a resumed run keeps its layout.
    """
    forced = os.environ.get(CHANNELS_LAST_ENV, "").strip()
    if not any(isinstance(m, torch.nn.Conv2d) for m in module.modules()):
        choice = False
    elif forced in ("0", "1"):
        choice = forced == "1"
    elif input_shape is None:
        choice = True
    else:
        choice = channels_last_faster(module, input_shape, batch_size)
    set_channels_last(module, choice)
    return choice
