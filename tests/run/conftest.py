"""Fixtures of the run tests: :data:`tests.conftest.TINY` parsed, and its data, once a module."""

from __future__ import annotations

import pytest

import archlab
from archlab.data import Tensors, load_dataset, prepare_tensors
from tests.conftest import TINY


@pytest.fixture(scope="module")
def tiny() -> archlab.Study:
    return archlab.parse_study(TINY, "tiny.yaml")


@pytest.fixture(scope="module")
def data(tiny: archlab.Study) -> Tensors:
    return prepare_tensors(load_dataset("mnist-sample"), tiny.data, tiny.seed)
