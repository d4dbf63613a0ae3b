"""archlab.data.sources: each kind of user source loaded as (N, H, W, C) uint8 with its
record, a content fingerprint, and one-line errors for bad files."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archlab.data import load_dataset
from archlab.datasets import CsvSource, FolderSource, IdxSource, NpzSource
from archlab.errors import DataError
from tests.imagefiles import digits, tinted, write_csv, write_folder, write_idx, write_npz


def test_a_grey_folder_loads_as_the_digits_it_was_written_from(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", 10, 3)
    raw = load_dataset(FolderSource.model_validate({"folder": str(root),
                                                    "color_mode": "grayscale"}))
    assert raw.x_train.shape == (24, 28, 28, 1) and raw.x_test.shape == (6, 28, 28, 1)
    assert raw.class_names == ("digit0", "digit1", "digit2") and raw.fingerprint
    x, y = digits(10, 3)  # the PNGs are lossless: every loaded image is one of these
    written = {img.tobytes(): int(label) for img, label in zip(x, y, strict=True)}
    for img, label in zip(raw.x_train[..., 0], raw.y_train, strict=True):
        assert written[img.tobytes()] == label


def test_an_rgb_folder_of_mixed_sizes_is_resized_in_colour(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", 6, 3, rgb=True, sizes=(28, 36, 44))
    raw = load_dataset(FolderSource.model_validate({"folder": str(root),
                                                    "image_size": [28, 28]}))
    assert raw.image_shape == (28, 28, 3)
    # the 28x28 images come back exactly, tinted by class
    x, y = digits(6, 3)
    exact = {tinted(img, int(label)).tobytes() for i, (img, label) in
             enumerate(zip(x, y, strict=True)) if i % 3 == 0}
    loaded = {img.tobytes() for img in np.concatenate([raw.x_train, raw.x_test])}
    assert exact <= loaded


def test_the_test_split_is_seeded_stratified_and_recorded(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", 10, 2)
    base = {"folder": str(root), "color_mode": "grayscale", "test_split": 0.3}
    a = load_dataset(FolderSource.model_validate(base))
    b = load_dataset(FolderSource.model_validate(base))
    c = load_dataset(FolderSource.model_validate({**base, "seed": 1}))
    assert np.bincount(a.y_test).tolist() == [3, 3]
    assert np.array_equal(a.x_test, b.x_test) and a.fingerprint == b.fingerprint
    assert not np.array_equal(a.x_test, c.x_test) and a.fingerprint != c.fingerprint


def test_the_fingerprint_follows_the_content_not_the_path(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", 4, 2)
    first = load_dataset(FolderSource.model_validate({"folder": str(root)})).fingerprint
    moved = shutil.copytree(root, tmp_path / "elsewhere" / "d")
    assert load_dataset(FolderSource.model_validate({"folder": str(moved)})).fingerprint \
        == first
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(root / "digit0" / "0000.png")
    assert load_dataset(FolderSource.model_validate({"folder": str(root)})).fingerprint != first
    other = load_dataset(FolderSource.model_validate({"folder": str(moved),
                                                      "interpolation": "nearest"}))
    assert other.fingerprint != first  # the image options are part of it


def test_a_csv_list_loads_with_its_split_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c", 8, 3, split_column=True)
    raw = load_dataset(CsvSource.model_validate({"csv": str(path), "color_mode": "grayscale"}))
    assert (len(raw.x_train), len(raw.x_test)) == (18, 6)


def test_an_npz_loads_keras_style_arrays(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "d.npz", 6, 3, rgb=True)
    raw = load_dataset(NpzSource.model_validate({"npz": str(path)}))
    assert raw.x_train.shape == (18, 28, 28, 3) and raw.y_train.shape == (18,)
    assert raw.class_names == ("digit0", "digit1", "digit2") and raw.y_train.dtype == np.int64
    grey = write_npz(tmp_path / "g.npz", 6, 3, column_labels=False, class_names=False)
    raw = load_dataset(NpzSource.model_validate({"npz": str(grey)}))
    assert raw.x_train.shape == (18, 28, 28, 1) and raw.class_names == ("0", "1", "2")


def _npz(path: Path, **changes: object) -> Path:
    x, y = digits(4, 3)
    arrays: dict[str, object] = {"x_train": x, "y_train": y, "x_test": x[:5], "y_test": y[:5]}
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(("case", "message"), [
    ("lengths", r"x_train holds 12 images but y_train 11 labels"),
    ("range", r"labels up to 12, but 3 class names"),
    ("object", r"array 'x_train' holds Python objects; archlab loads numeric arrays only"),
    ("pickle", r"a Python pickle, not an .npz; archlab never loads pickles"),
    ("float", r"x_train has dtype float32; expected uint8 images"),
    ("missing", r"no array 'y_test'"),
])
def test_bad_npz_files_are_one_line(tmp_path: Path, case: str, message: str) -> None:
    path = tmp_path / "bad.npz"
    x, y = digits(4, 3)
    if case == "lengths":
        _npz(path, y_train=y[:-1])
    elif case == "range":
        _npz(path, y_train=np.where(y == 2, 12, y), class_names=np.array(["a", "b", "c"]))
    elif case == "object":
        np.savez(path, x_train=np.array([x[0], "text"], dtype=object), y_train=y,
                 x_test=x, y_test=y)
    elif case == "pickle":
        path.write_bytes(pickle.dumps({"x_train": x, "y_train": y}))
    elif case == "float":
        _npz(path, x_train=x.astype(np.float32))
    else:
        np.savez(path, x_train=x, y_train=y, x_test=x)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(NpzSource.model_validate({"npz": str(path)}))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_an_idx_directory_loads_plain_or_gzipped_and_transposed(tmp_path: Path) -> None:
    plain = write_idx(tmp_path / "p", 5, 3, gz=False)
    raw = load_dataset(IdxSource.model_validate({"idx": str(plain)}))
    assert raw.x_train.shape == (15, 28, 28, 1)
    stored_t = write_idx(tmp_path / "t", 5, 3, prefix="emnist-digits-", transpose=True)
    back = load_dataset(IdxSource.model_validate({"idx": str(stored_t), "transpose": True}))
    assert np.array_equal(back.x_train, raw.x_train)  # EMNIST's layout undone
    (plain / "t10k-labels-idx1-ubyte").write_bytes(
        (plain / "t10k-labels-idx1-ubyte").read_bytes()[:-2])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: 4 labels, its header says 6"):
        load_dataset(IdxSource.model_validate({"idx": str(plain)}))
