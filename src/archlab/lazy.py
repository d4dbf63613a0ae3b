"""torch, ``torch.nn`` and ``torch.nn.functional``, imported on first use.

The study schema (layers, optimizers, augmentations) names torch classes in its build code
only, so reading and validating a study file, ``archlab --help`` and ``archlab zoo list`` never
import torch (seconds); the first attribute looked up on one of these names imports it. Code
that runs per batch (the ``nn.Module`` classes of layers/_modules.py) imports torch itself.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["F", "LazyModule", "nn", "torch"]


class LazyModule:
    """A module imported the first time one of its attributes is looked up."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_module", None)

    def _load(self) -> ModuleType:
        module = self._module
        if module is None:
            module = importlib.import_module(self._name)
            object.__setattr__(self, "_module", module)
        return module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"


torch: Any = LazyModule("torch")
nn: Any = LazyModule("torch.nn")
F: Any = LazyModule("torch.nn.functional")
