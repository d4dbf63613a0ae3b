"""A Python tuple in a YAML flow mapping (``{kernel_size: (3, 3)}``) splits at its comma into
``kernel_size: '(3'`` and an argument ``'3)'``: the one-line error says what to write."""

from __future__ import annotations

from pathlib import Path

import pytest

from archlab import SpecError, load_study

STUDY = """\
name: t
models:
  m:
    layers:
{layers}
      - Flatten
      - Dense: {{units: 10, activation: softmax}}
"""


@pytest.mark.parametrize("layer,where,hint", [
    ("      - Conv2D: {filters: 32, kernel_size: (3, 3), activation: relu}",
     "layer 1 (Conv2D)", "write kernel_size: [3, 3], not kernel_size: (3, 3)"),
    ("      - MaxPooling2D: {pool_size: (2,1)}",
     "layer 1 (MaxPooling2D)", "write pool_size: [2, 1]"),
    ("      - Add: {branches: [[], [{Conv2D: {filters: 1, kernel_size: 3, padding: same, "
     "strides: ( 1 , 1 )}}]]}",
     "layer 1 (Add), branch 2, layer 1 (Conv2D)", "write strides: [1, 1]"),
])
def test_a_python_tuple_gets_a_one_line_hint(tmp_path: Path, layer: str, where: str,
                                             hint: str) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(layers=layer))
    with pytest.raises(SpecError) as e:
        load_study(path)
    message = str(e.value)
    assert "\n" not in message
    assert where in message and "YAML has no tuples" in message and hint in message
