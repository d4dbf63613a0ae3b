"""archlab.datasets.listing and scan: a user's source listed and its record derived, without
decoding."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import archlab
from archlab.datasets import FolderSource, record_of
from archlab.datasets.listing import (
    image_extensions,
    list_csv,
    list_folder,
    list_images,
    split_counts,
)
from archlab.errors import DataError, SpecError
from tests.imagefiles import write_csv, write_folder, write_idx, write_npz


def folder(path: Path, **options: object) -> FolderSource:
    return FolderSource.model_validate({"folder": str(path), **options})


def png(path: Path, size: tuple[int, int] = (8, 6), mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)
    return path


def test_files_are_found_recursively_sorted_hidden_skipped_extensions_any_case(
        tmp_path: Path) -> None:
    for rel in ("b/2.PNG", "b/1.jpg", "b/deep/0.bmp", "b/.hidden.png", "b/.dot/x.png",
                "b/notes.txt", "b/z.Gif", "b/y.webp", "b/x.tiff"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".txt"):
            path.write_text("not an image")
        else:
            fmt = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP",
                   ".tiff": "TIFF"}[path.suffix.lower()]
            Image.new("L", (4, 4)).save(path, format=fmt)
    found = [p.relative_to(tmp_path / "b").as_posix()
             for p in list_images(tmp_path / "b", image_extensions())]
    assert found == ["1.jpg", "2.PNG", "deep/0.bmp", "x.tiff", "y.webp", "z.Gif"]


def test_classes_are_sorted_folders_or_the_given_list(tmp_path: Path) -> None:
    for name in ("zebra", "ant", "moth"):
        png(tmp_path / name / "0.png")
    png(tmp_path / ".git" / "0.png")  # hidden: not a class
    assert list_folder(folder(tmp_path)).class_names == ("ant", "moth", "zebra")
    chosen = list_folder(folder(tmp_path, class_names=["zebra", "ant"]))
    assert chosen.class_names == ("zebra", "ant")  # order fixed, moth left out
    assert sorted({e.label for e in chosen.entries}) == [0, 1]
    with pytest.raises(DataError, match=r"field 'class_names': Expected class folders "
                       r"\(ant, moth, zebra\), received 'bee'"):
        list_folder(folder(tmp_path, class_names=["ant", "bee"]))


def test_train_and_test_folders_are_the_test_set(tmp_path: Path) -> None:
    write_folder(tmp_path / "d", 6, 3, split_dirs=True)
    listing = list_folder(folder(tmp_path / "d"))
    assert listing.has_test and listing.test_split is None
    assert {e.split for e in listing.entries} == {"train", "test"}
    assert listing.entries[0].rel.startswith("train/digit0/")
    info = record_of(folder(tmp_path / "d", color_mode="grayscale"))
    assert (info.train_size, info.test_size) == (18, 9)
    assert info.image_shape == (28, 28, 1) and info.class_counts == (6, 6, 6)


def test_without_a_test_folder_a_stratified_test_split_is_held_out(tmp_path: Path) -> None:
    write_folder(tmp_path / "d", 10, 3)
    info = record_of(folder(tmp_path / "d", test_split=0.3))
    assert (info.train_size, info.test_size) == (21, 9)  # round(0.3 * 10) of each class
    assert info.image_shape == (28, 28, 3)  # Keras's default color_mode is rgb
    assert split_counts([0] * 10 + [1] * 5, 2, 0.2) == ([8, 4], [2, 1])


@pytest.mark.parametrize(("layout", "message"), [
    ("empty", r"digit1: an empty class folder"),
    ("single", r"Expected at least 2 class folders \(one per class\), received only 'digit0'"),
    ("sizes", r"images of different sizes .*set data.dataset.image_size"),
    ("missing", r"no such directory \(data.dataset.folder\)"),
])
def test_bad_folders_are_one_line_naming_the_place(tmp_path: Path, layout: str,
                                                    message: str) -> None:
    root = tmp_path / "d"
    if layout == "empty":
        png(root / "digit0" / "0.png")
        (root / "digit1").mkdir()
    elif layout == "single":
        png(root / "digit0" / "0.png")
    elif layout == "sizes":
        png(root / "a" / "0.png", (8, 8))
        png(root / "b" / "0.png", (9, 8))
    with pytest.raises(DataError, match=message) as info:
        record_of(folder(root))
    assert "\n" not in str(info.value) and str(root) in str(info.value)


def test_a_symlink_loop_is_one_line(tmp_path: Path) -> None:
    png(tmp_path / "d" / "a" / "0.png")
    png(tmp_path / "d" / "b" / "0.png")
    os.symlink(tmp_path / "d" / "a", tmp_path / "d" / "a" / "again")
    with pytest.raises(DataError, match=r"a symbolic link loop"):
        list_folder(folder(tmp_path / "d"))


def test_header_sizes_are_cached_by_path_size_and_mtime(tmp_path: Path, own_cache: Path) -> None:
    write_folder(tmp_path / "d", 4, 2)
    assert record_of(folder(tmp_path / "d")).image_shape == (28, 28, 3)
    scans = list((own_cache / "scans").glob("*.json"))
    assert len(scans) == 1
    victim = next((tmp_path / "d" / "digit1").iterdir())
    Image.new("L", (30, 30)).save(victim)  # a different size: seen despite the cache
    with pytest.raises(DataError, match="different sizes"):
        record_of(folder(tmp_path / "d"))


def test_csv_lists_paths_and_labels_relative_to_its_folder(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c", 5, 3, split_column=True)
    listing = list_csv(archlab.datasets.CsvSource.model_validate({"csv": str(path)}))
    assert listing.class_names == ("digit0", "digit1", "digit2") and listing.has_test
    assert [e.rel for e in listing.entries][:2] == ["images/0000.png", "images/0001.png"]
    assert sum(e.split == "test" for e in listing.entries) == 4


@pytest.mark.parametrize(("row", "message"), [
    ("images/nothere.png,a", r"row 2: 'images/nothere.png': no such image file"),
    ("../outside.png,a", r"row 2: '../outside.png' points outside the CSV's folder"),
    ("/etc/passwd,a", r"row 2: '/etc/passwd' is an absolute path"),
    ("images/x.png", r"row 2: 1 columns, expected 2"),
])
def test_bad_csv_rows_are_one_line_naming_the_row(tmp_path: Path, row: str,
                                                   message: str) -> None:
    png(tmp_path / "outside.png")
    png(tmp_path / "c" / "images" / "x.png")
    path = tmp_path / "c" / "labels.csv"
    path.write_text(f"path,label\n{row}\nimages/x.png,b\n")
    with pytest.raises(DataError, match=message) as info:
        list_csv(archlab.datasets.CsvSource.model_validate({"csv": str(path)}))
    assert str(path) in str(info.value)


def test_npz_and_idx_records_come_from_headers_and_labels(tmp_path: Path) -> None:
    npz = write_npz(tmp_path / "d.npz", 5, 4, rgb=True)
    info = record_of(archlab.datasets.NpzSource.model_validate({"npz": str(npz)}))
    assert info.image_shape == (28, 28, 3) and info.num_classes == 4
    assert info.class_names[0] == "digit0" and (info.train_size, info.test_size) == (20, 8)
    idx = write_idx(tmp_path / "k", 5, 3, prefix="emnist-x-", transpose=True)
    info = record_of(archlab.datasets.IdxSource.model_validate({"idx": str(idx)}))
    assert info.class_names == ("0", "1", "2") and info.image_shape == (28, 28, 1)


def test_relative_paths_are_taken_from_the_study_file(tmp_path: Path) -> None:
    write_folder(tmp_path / "imgs", 2, 2)
    study_file = tmp_path / "s.yaml"
    study_file.write_text("name: s\ndata: {dataset: {folder: imgs}}\nmodels:\n"
                          "  m: {layers: [Flatten, {Dense: {units: 2, activation: softmax}}]}\n")
    study = archlab.load_study(study_file)
    assert study.data.dataset.folder == str(tmp_path / "imgs")  # type: ignore[union-attr]
    assert study.data.dataset_name == "folder:imgs"
    built = archlab.build_model(study, "m", device="meta")
    assert built.input_shape == (28, 28, 3) and built.total_params == 28 * 28 * 3 * 2 + 2


@pytest.mark.parametrize(("dataset", "message"), [
    ({"folder": "x", "csv": "y"}, r"Expected a built-in dataset name or exactly one of"),
    ({"folder": "x", "color_mode": "rgbx"}, r"field 'data.dataset.color_mode': Expected "),
    ({"folder": "x", "crop_to_aspect_ratio": True, "pad_to_aspect_ratio": True},
     r"Expected at most one of crop_to_aspect_ratio and pad_to_aspect_ratio"),
    ({"npz": "x", "image_size": 3}, r"Unknown field 'image_size'"),
    ({"folder": "x", "test_split": 1.5}, r"field 'data.dataset.test_split'"),
])
def test_source_fields_are_checked_with_one_line(dataset: dict[str, object],
                                                 message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        archlab.parse_study({"name": "s", "data": {"dataset": dataset},
                             "models": {"m": {"layers": ["Flatten"]}}})
    assert "\n" not in str(info.value)


def test_derived_records_match_the_loaded_data(tmp_path: Path) -> None:
    write_folder(tmp_path / "d", 10, 3, rgb=True, sizes=(28, 40))
    source = folder(tmp_path / "d", image_size=[32, 32])
    derived = record_of(source)
    raw = archlab.load_dataset(source)
    assert raw.image_shape == derived.image_shape == (32, 32, 3)
    assert (len(raw.x_train), len(raw.x_test)) == (derived.train_size, derived.test_size)
    assert np.bincount(raw.y_train).tolist() == list(derived.class_counts)
