"""archlab.data.check: an empty validation or training split and a missing dataset are refused
before anything runs (what `archlab validate` and `archlab run` call)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import archlab
from archlab.data import DatasetLocation, check_study_data, split_bounds
from archlab.errors import DataError, SpecError


def study(config: dict[str, Any], **data: Any) -> archlab.Study:
    return archlab.parse_study({**config, "data": {**config["data"], **data}})


def test_bounds_follow_the_record() -> None:
    assert split_bounds("mnist-sample") == pytest.approx((0.001, 0.999))  # 10 / (2 * 5000)
    assert split_bounds("mnist") == pytest.approx((10 / 120000, 1 - 10 / 120000))


@pytest.mark.parametrize("fraction,empty", [(0.0001, "validation"), (0.001, "validation"),
                                            (0.9995, "training")])
def test_split_that_could_leave_a_side_empty_names_the_field(tiny_config: dict[str, Any],
                                                             fraction: float,
                                                             empty: str) -> None:
    with pytest.raises(SpecError) as info:
        check_study_data(study(tiny_config, validation={"split": fraction}))
    msg = str(info.value)
    assert msg.startswith("<memory>: field 'data.validation.split': Expected a fraction above "
                          "0.001 and below 0.999")
    assert f"received {fraction}" in msg and f"leave the {empty} set empty" in msg
    assert "mnist-sample has 5,000 training images in 10 classes" in msg and "\n" not in msg


def test_sensible_splits_and_test_validation_pass(tiny_config: dict[str, Any]) -> None:
    for fraction in (0.0012, 0.1, 0.5, 0.998):
        where = check_study_data(study(tiny_config, validation={"split": fraction}))
        assert where == DatasetLocation("mnist-sample", None)
    assert check_study_data(study(tiny_config, validation="test")).embedded


def test_missing_dataset_is_found_without_loading(tiny_config: dict[str, Any],
                                                  tmp_path: Path) -> None:
    s = study(tiny_config, dataset="mnist")
    with pytest.raises(DataError, match=f"mnist: data directory {tmp_path / 'no'} does not "
                       "exist"):
        check_study_data(s, tmp_path / "no")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="lacks train-images-idx3-ubyte, train-labels"):
        check_study_data(s, tmp_path / "empty")
    with pytest.raises(DataError, match="mnist not found.*downloading is disabled"):
        check_study_data(s, cache_dir=tmp_path, download=False)
    assert check_study_data(s, cache_dir=tmp_path).download  # online, `run` would fetch it


def test_present_dataset_is_located(tiny_config: dict[str, Any], mnist_dir: Path) -> None:
    where = check_study_data(study(tiny_config, dataset="mnist"), mnist_dir)
    assert where == DatasetLocation("mnist", mnist_dir)
