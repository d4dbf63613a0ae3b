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


def test_the_dataset_is_in_the_memory_estimate(tiny_config: dict[str, Any]) -> None:
    from archlab.data.check import check_data_memory, data_memory_bytes

    cifar = study(tiny_config, dataset="cifar10")
    info = cifar.data.info
    uint8 = 60000 * 32 * 32 * 3
    train = 50000 * 32 * 32 * 3  # the validation split copies every training image once
    assert data_memory_bytes(info, cifar.data) == uint8 + train
    normalize = study(tiny_config, dataset="cifar10",
                      preprocessing={"normalize": {"axis": 1, "order": 2}})
    assert data_memory_bytes(info, normalize.data) == uint8 + 4 * uint8 + 4 * train
    assert check_data_memory(cifar, 10**9) == 10**9 - (uint8 + train)
    with pytest.raises(DataError, match=r"field 'data.dataset': Expected a dataset that fits "
                       r"in the 100.0 MiB of memory available, received cifar10, which needs "
                       r"322.3 MiB \(50,000 \+ 10,000 images of 32x32x3 as uint8"):
        check_data_memory(cifar, 100 * 2**20)


def test_validate_refuses_a_dataset_too_big_for_memory(tiny_config: dict[str, Any],
                                                       tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    import yaml

    from archlab.cli import main

    monkeypatch.setattr("archlab.model.available_memory", lambda device="cpu": 50 * 2**20)
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump({**tiny_config, "data": {"dataset": "cifar100"}}))
    assert main(["validate", str(path), "--no-timing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "which needs 322.3 MiB" in err[0] and "cifar100" in err[0]
