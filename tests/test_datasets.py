"""archlab.datasets: one record per dataset, read by the loader, the model builder and the
study schema."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import archlab
from archlab.data import load_dataset, locate_dataset
from archlab.datasets import DATASET_NAMES, DATASETS, DataFile, DatasetInfo, dataset_info
from archlab.errors import DataError, SpecError


def test_every_record_is_consistent() -> None:
    assert DATASET_NAMES == ("mnist", "fashion-mnist", "mnist-sample")
    for name, info in DATASETS.items():
        assert info.name == name and info.description
        assert info.num_classes == len(info.class_names) == 10
        h, w, c = info.image_shape
        assert c == 1
        if info.is_embedded:
            assert info.files == () and info.mirrors == ()
            continue
        train_x, train_y, test_x, test_y = info.files
        assert train_x.shape == (info.train_size, h, w) and train_y.shape == (info.train_size,)
        assert test_x.shape == (info.test_size, h, w) and test_y.shape == (info.test_size,)
        assert [f.kind for f in info.files] == ["images", "labels", "images", "labels"]
        assert all(len(f.sha256) == 64 for f in info.files)
        assert info.mirrors and info.system_dirs


def test_file_sizes_are_header_plus_values() -> None:
    images, labels = dataset_info("mnist").files[:2]
    assert images.size == 16 + 60000 * 28 * 28 == 47_040_016  # the canonical file's length
    assert labels.size == 8 + 60000 == 60_008
    assert images.gz_name == "train-images-idx3-ubyte.gz" and images.count == 60000


def test_unknown_dataset_is_one_line() -> None:
    with pytest.raises(DataError, match=r"^unknown dataset 'cifar10'; known: mnist, "
                       "fashion-mnist, mnist-sample$"):
        dataset_info("cifar10")


def test_schema_choices_are_the_registry() -> None:
    schema = archlab.study_json_schema()
    assert schema["$defs"]["DataSpec"]["properties"]["dataset"]["enum"] == list(DATASETS)
    with pytest.raises(SpecError, match="field 'data.dataset': Expected 'mnist', "
                       "'fashion-mnist' or 'mnist-sample'"):
        archlab.parse_study({"name": "x", "data": {"dataset": "cifar"},
                             "models": {"a": {"layers": ["Flatten"]}}})


def test_model_builder_reads_shape_and_classes_from_the_record(
        monkeypatch: pytest.MonkeyPatch, tiny_study: archlab.Study) -> None:
    assert archlab.build_model(tiny_study, "mlp", device="meta").input_shape == (28, 28, 1)
    small = dataclasses.replace(DATASETS["mnist-sample"], image_shape=(14, 14, 1),
                                class_names=tuple("abcde"))
    monkeypatch.setitem(DATASETS, "mnist-sample", small)
    with pytest.raises(SpecError, match=r"Expected 5 outputs \(mnist-sample has 5 classes\), "
                       "received 10"):
        archlab.build_model(tiny_study, "mlp", device="meta")
    monkeypatch.setitem(DATASETS, "mnist-sample", dataclasses.replace(small,
                        class_names=tuple("0123456789")))
    built = archlab.build_model(tiny_study, "mlp", device="meta")
    assert built.input_shape == (14, 14, 1)
    assert built.total_params == (14 * 14 * 16 + 16) + (16 * 10 + 10)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def test_a_new_dataset_is_one_record(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A 3-class, 8x8 dataset: writing its files and its record is all the loader needs."""
    rng = np.random.default_rng(0)
    arrays: dict[str, Any] = {
        "train-images-idx3-ubyte": (rng.integers(0, 256, (30, 8, 8)), 2051),
        "train-labels-idx1-ubyte": (np.arange(30) % 3, 2049),
        "t10k-images-idx3-ubyte": (rng.integers(0, 256, (9, 8, 8)), 2051),
        "t10k-labels-idx1-ubyte": (np.arange(9) % 3, 2049),
    }
    files = []
    for name, (array, magic) in arrays.items():
        content = idx_bytes(array, magic)
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(content))
        files.append(DataFile(name, hashlib.sha256(content).hexdigest(),
                              "images" if magic == 2051 else "labels", array.shape))
    info = DatasetInfo(name="tiny-shapes", image_shape=(8, 8, 1),
                       class_names=("circle", "square", "star"), train_size=30, test_size=9,
                       files=tuple(files), description="a test dataset")
    assert [f.size for f in info.files] == [16 + 30 * 64, 8 + 30, 16 + 9 * 64, 8 + 9]
    monkeypatch.setitem(DATASETS, "tiny-shapes", info)

    assert locate_dataset("tiny-shapes", tmp_path).directory == tmp_path
    ds = load_dataset("tiny-shapes", tmp_path, download=False)
    assert ds.x_train.shape == (30, 8, 8) and ds.x_test.shape == (9, 8, 8)
    assert ds.class_names == ("circle", "square", "star") and ds.num_classes == 3
    assert np.array_equal(ds.x_train, arrays["train-images-idx3-ubyte"][0])
    assert math.prod(ds.image_shape) == 64
