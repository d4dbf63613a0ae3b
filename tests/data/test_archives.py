"""The new built-ins (CIFAR-10/100, KMNIST, EMNIST) downloaded from a local HTTP mirror
serving archives built to the real layouts from synthetic data, checked against digests the
test injects for them (the records keep the published ones: tests/test_datasets.py)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from archlab.data import load_dataset, locate_dataset
from archlab.datasets import DATASETS, DataFile
from archlab.errors import DataError
from tests.data.conftest import with_record
from tests.imagefiles import idx_bytes

RNG = np.random.default_rng(7)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _cifar10(directory: Path, per_batch: int) -> tuple[Path, dict[str, np.ndarray]]:
    """cifar-10-binary.tar.gz: cifar-10-batches-bin/data_batch_1..5.bin and test_batch.bin,
    each record one label byte then the red, green and blue 32x32 planes."""
    members, images, labels = {}, [], []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        y = RNG.integers(0, 10, per_batch).astype(np.uint8)
        x = RNG.integers(0, 256, (per_batch, 32, 32, 3)).astype(np.uint8)  # (H, W, C)
        planes = x.transpose(0, 3, 1, 2).reshape(per_batch, 3072)
        members[f"cifar-10-batches-bin/{name}"] = np.concatenate([y[:, None], planes], 1) \
            .tobytes()
        images.append(x)
        labels.append(y)
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\nautomobile\n"
    path = _tar(directory / "cifar-10-binary.tar.gz", members)
    return path, {"x_train": np.concatenate(images[:5]), "y_train": np.concatenate(labels[:5]),
                  "x_test": images[5], "y_test": labels[5]}


def _cifar_record(mp: pytest.MonkeyPatch, name: str, path: Path, per_file: dict[str, int],
                  width: int) -> None:
    """The record of ``name`` resized to the synthetic archive at ``path``, with its MD5."""
    info = DATASETS[name]
    files = tuple(DataFile(f.name, None, "records", (per_file[f.name], width))
                  for f in info.files)
    train = sum(f.count for f in files if "test" not in f.name.rsplit("/", 1)[-1])
    with_record(mp, name, files=files, archive=dataclasses.replace(info.archive, md5=_md5(path)),
                train_size=train, test_size=sum(f.count for f in files) - train)


def test_cifar10_downloads_verifies_and_reads_the_binary_records(
        tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    path, expected = _cifar10(mirror, per_batch=4)
    per_file = {f.name: 4 for f in DATASETS["cifar10"].files}
    _cifar_record(monkeypatch, "cifar10", path, per_file, 3073)
    server = serve(mirror)
    where = locate_dataset("cifar10", mirrors=[server.url], cache_dir=tmp_path / "cache")
    assert where.download and where.directory == tmp_path / "cache" / "cifar10"
    raw = load_dataset("cifar10", mirrors=[server.url], cache_dir=tmp_path / "cache")
    assert raw.x_train.shape == (20, 32, 32, 3) and raw.x_test.shape == (4, 32, 32, 3)
    for key in ("x_train", "x_test"):
        assert np.array_equal(getattr(raw, key), expected[key])
    assert np.array_equal(raw.y_train, expected["y_train"])
    assert raw.class_names[:2] == ("airplane", "automobile")
    # the second load reads the cached archive: no mirror needed
    server.stop()
    again = load_dataset("cifar10", mirrors=[], cache_dir=tmp_path / "cache")
    assert np.array_equal(again.x_train, raw.x_train)


def test_a_local_copy_of_the_archive_is_used_and_a_wrong_one_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path, expected = _cifar10(data, per_batch=3)
    per_file = {f.name: 3 for f in DATASETS["cifar10"].files}
    _cifar_record(monkeypatch, "cifar10", path, per_file, 3073)
    raw = load_dataset("cifar10", data, download=False)
    assert np.array_equal(raw.x_test, expected["x_test"])
    path.write_bytes(path.read_bytes()[:-10])  # truncated: the MD5 says so
    with pytest.raises(DataError, match=r"checksum mismatch: .*cifar-10-binary.tar.gz has MD5"):
        load_dataset("cifar10", data, download=False)


def test_a_mirror_serving_a_different_archive_is_refused(
        tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    path, _ = _cifar10(mirror, per_batch=2)
    per_file = {f.name: 2 for f in DATASETS["cifar10"].files}
    _cifar_record(monkeypatch, "cifar10", path, per_file, 3073)
    wrong = dataclasses.replace(DATASETS["cifar10"].archive, md5="0" * 32)
    with_record(monkeypatch, "cifar10", archive=wrong)
    with pytest.raises(DataError, match=r"cifar10 not found: put the archive "
                       r"cifar-10-binary.tar.gz in one of: .*download failed: .*checksum "
                       "mismatch"):
        load_dataset("cifar10", mirrors=[serve(mirror).url], cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "cifar10").iterdir())  # nothing half-written kept


@pytest.mark.parametrize("name", ["cifar100", "cifar100-coarse"])
def test_cifar100_fine_and_coarse_labels_come_from_one_archive(
        tmp_path: Path, serve, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    n = {"train.bin": 6, "test.bin": 3}
    coarse = {k: RNG.integers(0, 20, v).astype(np.uint8) for k, v in n.items()}
    fine = {k: RNG.integers(0, 100, v).astype(np.uint8) for k, v in n.items()}
    pixels = {k: RNG.integers(0, 256, (v, 3072)).astype(np.uint8) for k, v in n.items()}
    path = _tar(mirror / "cifar-100-binary.tar.gz", {
        f"cifar-100-binary/{k}": np.concatenate([coarse[k][:, None], fine[k][:, None],
                                                 pixels[k]], 1).tobytes() for k in n})
    _cifar_record(monkeypatch, name, path, {f"cifar-100-binary/{k}": v for k, v in n.items()}, 3074)
    raw = load_dataset(name, mirrors=[serve(mirror).url], cache_dir=tmp_path / "cache")
    want = coarse if name == "cifar100-coarse" else fine
    assert raw.y_train.tolist() == want["train.bin"].tolist()
    assert raw.num_classes == (20 if name == "cifar100-coarse" else 100)
    assert np.array_equal(raw.x_test[0, :, :, 1], pixels["test.bin"][0, 1024:2048]
                          .reshape(32, 32))  # the green plane
    assert (tmp_path / "cache" / "cifar100" / "cifar-100-binary.tar.gz").is_file()


def test_emnist_splits_come_from_the_zip_transposed_and_letters_from_zero(
        tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    arrays = {}
    with zipfile.ZipFile(mirror / "gzip.zip", "w") as zf:
        for split, top in (("digits", 10), ("letters", 27)):
            for part, n in (("train", 8), ("test", 4)):
                x = RNG.integers(0, 256, (n, 28, 28)).astype(np.uint8)
                y = RNG.integers(1 if split == "letters" else 0, top, n).astype(np.uint8)
                arrays[(split, part)] = (x, y)
                stem = f"gzip/emnist-{split}-{part}"
                zf.writestr(f"{stem}-images-idx3-ubyte.gz", gzip.compress(idx_bytes(x)))
                zf.writestr(f"{stem}-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(y)))
    md5 = _md5(mirror / "gzip.zip")
    server = serve(mirror)
    for split in ("digits", "letters"):
        info = DATASETS[f"emnist-{split}"]
        files = tuple(DataFile(f.name, None, f.kind, (8 if "train" in f.name else 4,
                                                      *f.shape[1:])) for f in info.files)
        with_record(monkeypatch, info.name, files=files, train_size=8, test_size=4,
                    archive=dataclasses.replace(info.archive, md5=md5))
        raw = load_dataset(info.name, mirrors=[server.url], cache_dir=tmp_path / "cache")
        x, y = arrays[(split, "train")]
        assert np.array_equal(raw.x_train[..., 0], x.transpose(0, 2, 1))  # stored transposed
        assert raw.y_train.tolist() == (y - (split == "letters")).tolist()
    # one download serves every split
    assert [p.name for p in (tmp_path / "cache" / "emnist").iterdir()] == ["gzip.zip"]


def test_kmnist_files_are_checked_against_the_served_files_md5(
        tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    info = DATASETS["kmnist"]
    files, arrays = [], {}
    for f in info.files:
        n = 6 if f.name.startswith("train") else 3
        array = RNG.integers(0, 256 if f.kind == "images" else 10,
                             (n, 28, 28) if f.kind == "images" else (n,)).astype(np.uint8)
        arrays[f.name] = array
        (mirror / f.gz_name).write_bytes(gzip.compress(idx_bytes(array)))
        files.append(DataFile(f.name, None, f.kind, array.shape,
                              md5=_md5(mirror / f.gz_name)))
    with_record(monkeypatch, "kmnist", files=tuple(files), train_size=6, test_size=3)
    raw = load_dataset("kmnist", mirrors=[serve(mirror).url], cache_dir=tmp_path / "cache")
    assert np.array_equal(raw.x_train[..., 0], arrays["train-images-idx3-ubyte"])
    assert raw.class_names[:3] == ("o", "ki", "su")
    damaged = tmp_path / "cache" / "kmnist" / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8))))  # right size, wrong
    with pytest.raises(DataError, match=r"checksum mismatch: .*t10k-labels-idx1-ubyte.gz has "
                       "MD5"):
        load_dataset("kmnist", cache_dir=tmp_path / "cache", download=False)
