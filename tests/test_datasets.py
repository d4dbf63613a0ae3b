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
    assert DATASET_NAMES == ("mnist", "fashion-mnist", "mnist-sample", "kmnist", "cifar10",
                             "cifar100", "cifar100-coarse", "emnist-digits", "emnist-letters",
                             "emnist-balanced")
    classes = {"cifar100": 100, "cifar100-coarse": 20, "emnist-letters": 26,
               "emnist-balanced": 47}
    for name, info in DATASETS.items():
        assert info.name == name and info.description and info.is_builtin
        assert info.num_classes == len(info.class_names) == classes.get(name, 10)
        assert len(set(info.class_names)) == info.num_classes
        h, w, c = info.image_shape
        assert c == (3 if name.startswith("cifar") else 1)
        if info.is_embedded:
            assert info.files == () and info.mirrors == ()
            continue
        assert info.mirrors
        if info.archive is not None:  # published MD5s of the archives
            assert len(info.archive.md5) == 32 and info.archive.max_bytes > 100e6
            images = [f for f in info.files if f.kind != "labels"]
            n_train = sum(f.count for f in images if "test" not in f.name.rsplit("/")[-1])
            n_test = sum(f.count for f in images if "test" in f.name.rsplit("/")[-1])
            assert (n_train, n_test) == (info.train_size, info.test_size)
            continue
        train_x, train_y, test_x, test_y = info.files
        assert train_x.shape == (info.train_size, h, w) and train_y.shape == (info.train_size,)
        assert test_x.shape == (info.test_size, h, w) and test_y.shape == (info.test_size,)
        assert [f.kind for f in info.files] == ["images", "labels", "images", "labels"]
        assert all(len(f.sha256 or "") == 64 or len(f.md5 or "") == 32 for f in info.files)


def test_published_checksums_are_in_the_records() -> None:
    """The digests the issue and the datasets' pages publish (the download test injects its
    own for synthetic archives; these stay)."""
    assert dataset_info("cifar10").archive.md5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert dataset_info("cifar100").archive.md5 == "03b5dce01913d631647c71ecec9e9cb8"
    assert dataset_info("cifar100-coarse").archive == dataset_info("cifar100").archive
    assert {dataset_info(f"emnist-{s}").archive.md5 for s in ("digits", "letters", "balanced")} \
        == {"58c8d27c78d21e728a6bc7b3cc06412e"}
    assert [f.md5 for f in dataset_info("kmnist").files] == [
        "bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
        "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"]
    # only the binary and IDX versions: never the Python pickles
    assert dataset_info("cifar10").archive.name == "cifar-10-binary.tar.gz"
    assert dataset_info("cifar100").archive.name == "cifar-100-binary.tar.gz"


def test_file_sizes_are_header_plus_values() -> None:
    images, labels = dataset_info("mnist").files[:2]
    assert images.size == 16 + 60000 * 28 * 28 == 47_040_016  # the canonical file's length
    assert labels.size == 8 + 60000 == 60_008
    assert images.gz_name == "train-images-idx3-ubyte.gz" and images.count == 60000
    record = dataset_info("cifar10").files[0]
    assert record.size == 10000 * 3073 and record.header_size == 0


def test_unknown_dataset_is_one_line() -> None:
    with pytest.raises(DataError, match=r"^unknown dataset 'cifar'; known: mnist, "
                       "fashion-mnist, mnist-sample, kmnist, cifar10, .*emnist-balanced$"):
        dataset_info("cifar")


def test_schema_choices_are_the_registry() -> None:
    schema = archlab.study_json_schema()
    dataset = schema["$defs"]["DataSpec"]["properties"]["dataset"]
    choices = [m for m in dataset["oneOf"] if "enum" in m]
    assert choices[0]["enum"] == list(DATASETS)
    with pytest.raises(SpecError, match="field 'data.dataset': Expected a built-in dataset "
                       r"\(mnist, fashion-mnist, .*\) or a source such as \{folder: PATH\}, "
                       "received 'cifar' \\(did you mean 'cifar10'\\?\\)"):
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
    assert ds.x_train.shape == (30, 8, 8, 1) and ds.x_test.shape == (9, 8, 8, 1)
    assert ds.class_names == ("circle", "square", "star") and ds.num_classes == 3
    assert np.array_equal(ds.x_train[..., 0], arrays["train-images-idx3-ubyte"][0])
    assert math.prod(ds.image_shape) == 64
