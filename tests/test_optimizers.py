"""make_optimizer gives Keras's optimizers (names, defaults, update rules) and preprocess gives
Keras's input preprocessing.

Update rules are checked step by step against Keras 2's formulas (keras/optimizers.py of
Keras 2.2, which the seed notebooks ran; Keras 3 has the same rules for SGD, Adam, Adadelta),
written out below in float64, and against a few hand-computed steps.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import torch

from archlab import DataSpec, SpecError, TrainSpec, parse_study
from archlab.data import preprocess
from archlab.optim import make_optimizer


def _spec(optimizer: Any) -> Any:
    return TrainSpec.model_validate({"optimizer": optimizer}).optimizer


def _make(optimizer: Any, w0: float = 1.0) -> tuple[torch.nn.Parameter, Any, Any]:
    p = torch.nn.Parameter(torch.tensor([w0], dtype=torch.float64))
    opt, sched = make_optimizer(_spec(optimizer), [p])
    return p, opt, sched


def _steps(optimizer: Any, grads: list[float], w0: float = 1.0) -> list[float]:
    """Apply the gradients one step at a time, as fit() does (step, then scheduler step)."""
    p, opt, sched = _make(optimizer, w0)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        if sched is not None:
            sched.step()
        out.append(p.item())
    return out


# ---------------------------------------------------------------------------------------------
# Defaults and arguments

DEFAULTS = [
    ("sgd", torch.optim.SGD, {"lr": 0.01, "momentum": 0.0, "nesterov": False}),
    ("adam", torch.optim.Adam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7,
                                "amsgrad": False}),
    ("adadelta", torch.optim.Adadelta, {"lr": 1.0, "rho": 0.95, "eps": 1e-7}),
    ("rmsprop", torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "momentum": 0.0,
                                      "centered": False}),
    ("adagrad", torch.optim.Adagrad, {"lr": 0.01, "initial_accumulator_value": 0.1,
                                      "eps": 1e-7}),
    ("nadam", torch.optim.NAdam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7,
                                  "momentum_decay": 4e-3}),
]


@pytest.mark.parametrize("name,cls,expected", DEFAULTS, ids=[d[0] for d in DEFAULTS])
@pytest.mark.parametrize("form", ["bare", "upper", "dict"])
def test_keras_defaults(name: str, cls: type, expected: dict[str, Any], form: str) -> None:
    given = {"bare": name, "upper": name.upper(), "dict": {"name": name}}[form]
    p, opt, sched = _make(given)
    assert isinstance(opt, cls)
    assert sched is None
    group = opt.param_groups[0]
    for key, value in expected.items():
        assert group[key] == pytest.approx(value, rel=1e-12), key
    # regularizers are losses in Keras, never optimizer weight decay
    assert group.get("weight_decay", 0.0) == 0.0


def test_adagrad_accumulator_starts_at_initial_value() -> None:
    p, opt, _ = _make("adagrad")
    torch.testing.assert_close(opt.state[p]["sum"], torch.tensor([0.1], dtype=torch.float64))


@pytest.mark.parametrize("name", [d[0] for d in DEFAULTS])
def test_lr_alias(name: str) -> None:
    _, opt, _ = _make({"name": name, "lr": 0.123})
    assert opt.param_groups[0]["lr"] == 0.123
    _, opt, _ = _make({"name": name, "learning_rate": 0.123})
    assert opt.param_groups[0]["lr"] == 0.123


def test_lr_and_learning_rate_together_is_an_error() -> None:
    with pytest.raises(SpecError, match="received both"):
        parse_study({"name": "t", "train": {"optimizer": {"name": "sgd", "lr": 0.1,
                                                          "learning_rate": 0.1}},
                     "models": {"m": {"layers": ["Flatten", {"Dense": {
                         "units": 10, "activation": "softmax"}}]}}})


def test_sgd_momentum_nesterov_and_other_arguments_are_honoured() -> None:
    _, opt, _ = _make({"name": "sgd", "momentum": 0.9, "nesterov": True})
    assert (opt.param_groups[0]["momentum"], opt.param_groups[0]["nesterov"]) == (0.9, True)
    _, opt, _ = _make({"name": "rmsprop", "rho": 0.8, "momentum": 0.5, "centered": True})
    g = opt.param_groups[0]
    assert (g["alpha"], g["momentum"], g["centered"]) == (0.8, 0.5, True)
    _, opt, _ = _make({"name": "adam", "beta_1": 0.8, "beta_2": 0.99, "amsgrad": True})
    assert opt.param_groups[0]["betas"] == (0.8, 0.99) and opt.param_groups[0]["amsgrad"]


# ---------------------------------------------------------------------------------------------
# Hand-computed steps on a scalar parameter (w0 = 1, gradients 1, -0.5, 2)

GRADS = [1.0, -0.5, 2.0]


def test_sgd_momentum_hand_computed() -> None:
    # Keras: v = 0.9·v - 0.1·g; w = w + v
    # v1 = -0.1, w1 = 0.9; v2 = -0.09 + 0.05 = -0.04, w2 = 0.86; v3 = -0.036 - 0.2 = -0.236,
    # w3 = 0.624
    got = _steps({"name": "sgd", "lr": 0.1, "momentum": 0.9}, GRADS)
    np.testing.assert_allclose(got, [0.9, 0.86, 0.624], rtol=1e-14)


def test_sgd_nesterov_hand_computed() -> None:
    # Keras: v = 0.9·v - 0.1·g; w = w + 0.9·v - 0.1·g
    # w1 = 1 - 0.09 - 0.1 = 0.81; w2 = 0.81 - 0.036 + 0.05 = 0.824;
    # w3 = 0.824 - 0.2124 - 0.2 = 0.4116
    got = _steps({"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}, GRADS)
    np.testing.assert_allclose(got, [0.81, 0.824, 0.4116], rtol=1e-14)


def test_adadelta_hand_computed() -> None:
    # Keras: a = 0.95·a + 0.05·g²; u = g·√(d + ε)/√(a + ε); w = w - lr·u; d = 0.95·d + 0.05·u²
    eps = 1e-7
    a1 = 0.05
    u1 = math.sqrt(eps) / math.sqrt(a1 + eps)
    d1 = 0.05 * u1**2
    a2 = 0.95 * a1 + 0.05 * 0.25
    u2 = -0.5 * math.sqrt(d1 + eps) / math.sqrt(a2 + eps)
    got = _steps("adadelta", GRADS[:2])
    np.testing.assert_allclose(got, [1 - u1, 1 - u1 - u2], rtol=1e-14)
    assert got[0] == pytest.approx(1 - 1.41421e-3, abs=1e-8)  # √(1e-7/0.05) ≈ 1.41421e-3


def test_sgd_decay_hand_computed() -> None:
    # Keras 2: the step after k steps uses lr / (1 + decay·k): 0.1, 0.1/1.5, 0.1/2
    p, opt, sched = _make({"name": "sgd", "lr": 0.1, "decay": 0.5})
    w = 1.0
    for k in range(4):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / (1 + 0.5 * k), rel=1e-12)
        p.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
        sched.step()
        w -= 0.1 / (1 + 0.5 * k)
        assert p.item() == pytest.approx(w, rel=1e-14)


# ---------------------------------------------------------------------------------------------
# Keras 2's update rules, written out (float64), against several steps of make_optimizer


def keras_reference(cfg: dict[str, Any], grads: list[float], w: float = 1.0) -> list[float]:
    name = cfg["name"]
    lr0 = cfg.get("learning_rate", {"sgd": 0.01, "adadelta": 1.0, "adagrad": 0.01}.get(
        name, 1e-3))
    decay = cfg.get("decay", 0.0)
    eps = cfg.get("epsilon", 1e-7)
    b1, b2 = cfg.get("beta_1", 0.9), cfg.get("beta_2", 0.999)
    rho = cfg.get("rho", {"adadelta": 0.95}.get(name, 0.9))
    mom = cfg.get("momentum", 0.0)
    m = v = vhat = d = 0.0
    a = cfg.get("initial_accumulator_value", 0.1) if name == "adagrad" else 0.0
    m_schedule = 1.0
    out = []
    for it, g in enumerate(grads):
        lr = lr0 / (1 + decay * it)
        t = it + 1
        if name == "sgd":
            v = mom * v - lr * g
            w = w + (mom * v - lr * g if cfg.get("nesterov") else v)
        elif name == "adam":
            lr_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            vhat = max(vhat, v)
            w = w - lr_t * m / (math.sqrt(vhat if cfg.get("amsgrad") else v) + eps)
        elif name == "adadelta":
            a = rho * a + (1 - rho) * g * g
            u = g * math.sqrt(d + eps) / math.sqrt(a + eps)
            w = w - lr * u
            d = rho * d + (1 - rho) * u * u
        elif name == "rmsprop":  # Keras 2 (and tf.keras 2 without momentum): ε outside the √
            a = rho * a + (1 - rho) * g * g
            w = w - lr * g / (math.sqrt(a) + eps)
        elif name == "adagrad":
            a = a + g * g
            w = w - lr * g / (math.sqrt(a) + eps)
        elif name == "nadam":  # Keras 2: momentum schedule 0.96^(0.004·t)
            mu_t = b1 * (1 - 0.5 * 0.96 ** (0.004 * t))
            mu_t1 = b1 * (1 - 0.5 * 0.96 ** (0.004 * (t + 1)))
            m_schedule_new = m_schedule * mu_t
            m_schedule_next = m_schedule_new * mu_t1
            m_schedule = m_schedule_new
            g_prime = g / (1 - m_schedule_new)
            m = b1 * m + (1 - b1) * g
            m_prime = m / (1 - m_schedule_next)
            v = b2 * v + (1 - b2) * g * g
            v_prime = v / (1 - b2**t)
            m_bar = (1 - mu_t) * g_prime + mu_t1 * m_prime
            w = w - lr * m_bar / (math.sqrt(v_prime) + eps)
        out.append(w)
    return out


RULES = [
    {"name": "sgd"},
    {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9},
    {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
    {"name": "sgd", "learning_rate": 0.09, "momentum": 0.9, "decay": 0.1},
    {"name": "sgd", "learning_rate": 0.09, "momentum": 0.9, "nesterov": True, "decay": 0.3},
    {"name": "adam"},
    {"name": "adam", "amsgrad": True},
    {"name": "adam", "learning_rate": 0.01, "decay": 0.2},
    {"name": "adadelta"},
    {"name": "adadelta", "learning_rate": 0.5, "rho": 0.9, "decay": 0.1},
    {"name": "rmsprop"},
    {"name": "adagrad"},
    {"name": "nadam"},
]
GRAD_SEQUENCES = {
    "mixed": [1.0, -0.5, 2.0, 0.3, -1.2, 0.0, 0.7, 5.0],
    # tiny gradients: where Keras's ε placement (ε added to √v, not to √v̂) shows
    "tiny": [1e-7, -2e-7, 3e-8, 1e-7, 5e-8, -1e-7, 2e-7, 1e-7],
}


@pytest.mark.parametrize("grads", list(GRAD_SEQUENCES))
@pytest.mark.parametrize("cfg", RULES, ids=lambda c: "-".join(
    f"{k}={v}" if k != "name" else v for k, v in c.items()))
def test_update_rules_match_keras(cfg: dict[str, Any], grads: str) -> None:
    seq = GRAD_SEQUENCES[grads]
    expected = keras_reference(cfg, seq)
    got = _steps(cfg, seq)
    # compare the movement from w0 = 1 (tiny-gradient steps would vanish in a comparison of w);
    # torch keeps Nadam's momentum-schedule product in float32 (~1e-8 relative)
    rtol, atol = (1e-7, 1e-10) if cfg["name"] == "nadam" else (1e-9, 1e-18)
    np.testing.assert_allclose(np.array(got) - 1.0, np.array(expected) - 1.0, rtol=rtol,
                               atol=atol)


@pytest.mark.parametrize("cfg", [
    {"name": "adam"},
    {"name": "sgd", "learning_rate": 0.09, "momentum": 0.9, "decay": 0.1},
    {"name": "adadelta", "decay": 0.05},
], ids=["adam", "sgd-momentum-decay", "adadelta-decay"])
def test_resume_from_saved_state_continues_the_same_trajectory(cfg: dict[str, Any]) -> None:
    """A checkpoint (state dicts, param groups through JSON as the run store keeps them)."""
    seq = GRAD_SEQUENCES["mixed"]
    expected = keras_reference(cfg, seq)
    p, opt, sched = _make(cfg)
    for g in seq[:3]:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        if sched is not None:
            sched.step()
    state = opt.state_dict()
    state["param_groups"] = json.loads(json.dumps(state["param_groups"]))
    sched_state = sched.state_dict() if sched is not None else None
    q = torch.nn.Parameter(p.detach().clone())
    opt2, sched2 = make_optimizer(_spec(cfg), [q])
    opt2.load_state_dict(state)
    if sched2 is not None:
        sched2.load_state_dict(sched_state)
    got = []
    for g in seq[3:]:
        q.grad = torch.tensor([g], dtype=torch.float64)
        opt2.step()
        if sched2 is not None:
            sched2.step()
        got.append(q.item())
    np.testing.assert_allclose(np.array(got) - 1, np.array(expected[3:]) - 1, rtol=1e-9)


def test_optimizer_trains_a_model_parameter_set() -> None:
    # Several parameters of different shapes step together (Adam's ε hook handles groups).
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt, _ = make_optimizer(_spec("adam"), model.parameters())
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    first = None
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    assert opt.param_groups[0]["eps"] == pytest.approx(1e-7 / math.sqrt(1 - 0.999**20))


# ---------------------------------------------------------------------------------------------
# Preprocessing


def keras_normalize(x: np.ndarray, axis: int, order: int) -> np.ndarray:
    """keras.utils.normalize (Keras 2 and 3), on the raw array as the notebook called it."""
    norm = np.atleast_1d(np.linalg.norm(x, order, axis))
    norm[norm == 0] = 1
    return x / np.expand_dims(norm, axis)


def _raw_images() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 28, 28)).astype(np.uint8)
    x[:, :3, :] = 0  # empty rows: their norm 0 becomes 1
    x[:, :, -2:] = 0  # empty columns
    x[2] = 0  # an empty image
    x[3, 10, :] = 255
    return x


@pytest.mark.parametrize("axis", [1, 2])
@pytest.mark.parametrize("order", [1, 2])
def test_normalize_is_keras_utils_normalize(axis: int, order: int) -> None:
    x = _raw_images()
    spec = DataSpec.model_validate({"preprocessing": {"normalize": {"axis": axis,
                                                                    "order": order}}})
    out = preprocess(x, spec)
    assert out.dtype == torch.float32 and tuple(out.shape) == (6, 1, 28, 28)
    expected = keras_normalize(x, axis, order).astype(np.float32)  # fit() feeds float32
    np.testing.assert_array_equal(out[:, 0].numpy(), expected)
    assert not np.isnan(out.numpy()).any()


def test_normalize_default_is_l2_along_axis_1() -> None:
    # axis 1 of the raw (N, H, W) array is the height: each column x[n, :, w] gets unit L2 norm
    x = _raw_images()
    out = preprocess(x, DataSpec.model_validate({"preprocessing": {"normalize": {}}}))
    norms = np.linalg.norm(out[:, 0].numpy().astype(np.float64), axis=1)
    nonzero = np.linalg.norm(x.astype(np.float64), axis=1) > 0
    np.testing.assert_allclose(norms[nonzero], 1.0, rtol=1e-6)
    assert (norms[~nonzero] == 0).all()


def test_scale_is_x_over_255() -> None:
    x = _raw_images()
    for spec in (DataSpec(), DataSpec.model_validate({"preprocessing": "scale"})):
        out = preprocess(x, spec)
        assert out.dtype == torch.float32 and tuple(out.shape) == (6, 1, 28, 28)
        np.testing.assert_array_equal(out[:, 0].numpy(), x.astype(np.float32) / 255)
        assert out.max().item() == 1.0
