"""docs/spec.md documents what the schema accepts: every activation, early stopping, the best
epoch and the limits."""

from __future__ import annotations

import re
from pathlib import Path

from archlab.fields import MAX_NAME_LENGTH, MAX_REPEATS, MAX_SIZE
from archlab.layers import ACTIVATIONS
from archlab.spec import EarlyStopping, TrainSpec
from archlab.spec.io import MAX_DEPTH

SPEC_MD = Path(__file__).resolve().parents[2] / "docs" / "spec.md"


def _bullet(text: str, start: str) -> str:
    """The Markdown bullet starting with ``- start`` (its continuation lines joined)."""
    match = re.search(rf"^- {re.escape(start)}.*?(?=^\S|^- |^$)", text, re.M | re.S)
    assert match, f"no '- {start}' bullet in {SPEC_MD}"
    return " ".join(match.group(0).split())


def test_every_activation_is_documented() -> None:
    bullet = _bullet(SPEC_MD.read_text(encoding="utf-8"), "activations")
    listed = set(re.findall(r"\b[a-z][a-z0-9]*\b", bullet.split(":", 1)[1].split("(null")[0]))
    assert set(ACTIVATIONS) <= listed, set(ACTIVATIONS) - listed
    assert "null = linear" in bullet


def test_training_fields_are_documented() -> None:
    text = SPEC_MD.read_text(encoding="utf-8")
    for field in ("early_stopping", "restore_best", *EarlyStopping.model_fields):
        assert f"`{field}" in text or f"{field}:" in text, field
    assert set(TrainSpec.model_fields) <= set(re.findall(r"^  (\w+):", text, re.M)) | {
        "early_stopping", "restore_best"}


def test_limits_are_documented_with_their_values() -> None:
    text = " ".join(SPEC_MD.read_text(encoding="utf-8").split())
    assert "## Limits" in SPEC_MD.read_text(encoding="utf-8")
    for fact in (f"at most {MAX_NAME_LENGTH} characters", str(MAX_SIZE),
                 f"`repeats` at most {MAX_REPEATS}", f"at most {MAX_DEPTH} levels",
                 "100,000 values", "billion laughs", "MemAvailable", "× 2", "-3 to 2",
                 "`.inf` and `.nan` are refused"):
        assert fact in text, fact
