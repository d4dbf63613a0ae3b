"""archlab.data.loader: finding a dataset (data_dir, env, cache, system dirs), loading and
verifying it, and the embedded sample."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from archlab.data import DatasetLocation, RawDataset, load_dataset, locate_dataset, sample_path
from archlab.datasets import dataset_info
from archlab.errors import DataError
from tests.data.conftest import with_record

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = [f.name for f in dataset_info("mnist").files]

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def check_mnist(ds: RawDataset) -> None:
    """The real MNIST, as loaded: shapes, dtypes, class counts, names."""
    assert ds.name == "mnist"
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.x_test.dtype == np.uint8
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == TRAIN_COUNTS
    assert np.bincount(ds.y_test).tolist() == TEST_COUNTS
    assert ds.class_names == tuple("0123456789")


def copy_mnist(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy(src / f"{name}.gz", dest)
    return dest


# -- local files ------------------------------------------------------------------------------


def test_load_real_mnist_dir(mnist_dir: Path) -> None:
    ds = load_dataset("mnist", mnist_dir, download=False)
    check_mnist(ds)
    assert ds.source == str(mnist_dir.resolve())
    assert ds.x_train.flags.writeable  # training code may normalize in place


def test_plain_and_gz_files_mixed(mnist_dir: Path, tmp_path: Path) -> None:
    for i, name in enumerate(FILES):
        src = mnist_dir / f"{name}.gz"
        if i % 2:
            shutil.copy(src, tmp_path / src.name)
        else:
            (tmp_path / name).write_bytes(gzip.decompress(src.read_bytes()))
    check_mnist(load_dataset("mnist", tmp_path, download=False))


def test_truncated_plain_file_is_refused_before_reading(mnist_dir: Path, tmp_path: Path) -> None:
    copy_mnist(mnist_dir, tmp_path)
    labels = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(labels[:-10])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: 9,998 bytes, expected 10,008"):
        locate_dataset("mnist", tmp_path)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: 9,998 bytes") as info:
        load_dataset("mnist", tmp_path, download=False)
    assert "\n" not in str(info.value)


def test_wrong_content_of_the_right_size_is_a_checksum_mismatch(mnist_dir: Path,
                                                                 tmp_path: Path) -> None:
    copy_mnist(mnist_dir, tmp_path)
    labels = bytearray(gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[-1] = (labels[-1] + 1) % 10  # one label changed: sizes all right
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    assert locate_dataset("mnist", tmp_path).directory == tmp_path  # cheap checks pass
    with pytest.raises(DataError, match="checksum mismatch.*t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", tmp_path, download=False)


def test_truncated_gz_is_refused(mnist_dir: Path, tmp_path: Path) -> None:
    copy_mnist(mnist_dir, tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: its gzip trailer records"):
        load_dataset("mnist", tmp_path, download=False)


def test_explicit_dir_missing_files_is_an_error(tmp_path: Path, serve) -> None:
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"")
    server = serve(tmp_path)  # a working mirror must not be used: no silent fall-through
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path, mirrors=[server.url], cache_dir=tmp_path / "c")
    msg = str(info.value)
    assert str(tmp_path) in msg and "\n" not in msg
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "train-labels-idx1-ubyte," not in msg
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("how", ["argument", "env"])
def test_data_dir_that_does_not_exist_is_one_line(how: str, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    if how == "env":
        monkeypatch.setenv("ARCHLAB_DATA_DIR", str(nowhere))
        given, origin = None, "$ARCHLAB_DATA_DIR"
    else:
        given, origin = nowhere, "data directory"
    for call in (locate_dataset, load_dataset):
        with pytest.raises(DataError) as info:
            call("mnist", given, cache_dir=tmp_path)
        msg = str(info.value)
        assert msg.startswith(f"mnist: {origin} {nowhere} does not exist")
        assert "train-images-idx3-ubyte" in msg and "\n" not in msg
    if how == "env":  # the embedded sample needs no directory: a stale variable is harmless
        assert locate_dataset("mnist-sample").embedded
    else:  # but a directory named on the command line is a typo whatever the dataset
        with pytest.raises(DataError, match=f"mnist-sample: data directory {nowhere} does not "
                           "exist$"):
            locate_dataset("mnist-sample", given)


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DataError, match=f"data directory {f} is not a directory"):
        locate_dataset("mnist", f)


def test_env_data_dir_is_honoured(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                  tmp_path: Path) -> None:
    monkeypatch.setenv("ARCHLAB_DATA_DIR", str(mnist_dir))
    ds = load_dataset("mnist", download=False, cache_dir=tmp_path)
    assert ds.source == str(mnist_dir.resolve())
    check_mnist(ds)


def test_system_dir_is_used_after_cache(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    with_record(monkeypatch, "mnist", system_dirs=(tmp_path / "none", mnist_dir))
    assert locate_dataset("mnist", cache_dir=tmp_path / "cache") == DatasetLocation(
        "mnist", mnist_dir)
    ds = load_dataset("mnist", download=False, cache_dir=tmp_path / "cache")
    assert ds.source == str(mnist_dir.resolve())
    copy_mnist(mnist_dir, tmp_path / "cache" / "mnist")  # a complete cache comes first
    assert locate_dataset("mnist", cache_dir=tmp_path / "cache").directory == (
        tmp_path / "cache" / "mnist")


def test_locate_reports_download_without_touching_the_network(tmp_path: Path) -> None:
    where = locate_dataset("mnist", cache_dir=tmp_path, mirrors=["http://192.0.2.1/"])
    assert where == DatasetLocation("mnist", tmp_path / "mnist", download=True)
    assert "will be downloaded into" in str(where)
    assert not (tmp_path / "mnist").exists()
    with pytest.raises(DataError, match="mnist not found.*downloading is disabled"):
        locate_dataset("mnist", cache_dir=tmp_path, download=False)


def test_unknown_dataset() -> None:
    for call in (load_dataset, locate_dataset):
        with pytest.raises(DataError, match="unknown dataset 'cifar'.*mnist-sample"):
            call("cifar")


# -- embedded sample and Fashion-MNIST --------------------------------------------------------


def test_mnist_sample_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    with_record(monkeypatch, "mnist", mirrors=())  # any network use would fail
    assert locate_dataset("mnist-sample") == DatasetLocation("mnist-sample", None)
    ds = load_dataset("mnist-sample", download=False)
    assert ds.source == "embedded"
    assert ds.x_train.shape == (5000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.x_test.dtype == np.uint8
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == [493, 557, 493, 526, 469, 441, 523, 525, 507,
                                                466]  # as documented in data/README.md
    assert ds.class_names == tuple("0123456789")


def test_sample_file_is_small() -> None:
    assert sample_path().stat().st_size <= 2 * 1024 * 1024
    with pytest.raises(DataError, match="mnist is not embedded"):
        sample_path("mnist")


def test_mnist_sample_is_a_real_subset(mnist_dir: Path) -> None:
    with np.load(sample_path()) as npz:
        train_index, test_index = npz["train_index"], npz["test_index"]
    rng = np.random.default_rng(0)  # the documented draw
    assert np.array_equal(train_index, np.sort(rng.choice(60000, 5000, replace=False)))
    assert np.array_equal(test_index, np.sort(rng.choice(10000, 1000, replace=False)))
    full = load_dataset("mnist", mnist_dir, download=False)
    sample = load_dataset("mnist-sample")
    assert np.array_equal(sample.x_train, full.x_train[train_index])
    assert np.array_equal(sample.y_train, full.y_train[train_index])
    assert np.array_equal(sample.x_test, full.x_test[test_index])
    assert np.array_equal(sample.y_test, full.y_test[test_index])


@pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason=f"{FASHION_DIR} absent (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_from_system_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with_record(monkeypatch, "fashion-mnist", system_dirs=(FASHION_DIR,))
    ds = load_dataset("fashion-mnist", download=False, cache_dir=tmp_path)
    assert ds.source == str(FASHION_DIR.resolve())
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.class_names == dataset_info("fashion-mnist").class_names
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
