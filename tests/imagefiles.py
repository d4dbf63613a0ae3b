"""Test data in the user's formats, made from real MNIST digits: PNG folders (grey, or tinted
RGB at mixed sizes), a CSV list, an .npz of Keras's load_data arrays, an IDX directory."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from archlab.data import load_dataset

#: A tint per class: colour that carries no class information a grey digit lacks... except it
#: does here on purpose in `tinted`: digits are tinted by class, so colour is learnable.
TINTS = np.array([[255, 80, 80], [80, 255, 80], [80, 80, 255], [255, 255, 80], [255, 80, 255],
                  [80, 255, 255], [255, 160, 60], [160, 60, 255], [60, 160, 255],
                  [200, 200, 200]], dtype=np.float64)


def digits(n_per_class: int, classes: int = 3, split: str = "train",
           offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_class`` real MNIST digits (28x28 uint8) of each of the first ``classes``
    digits, from the embedded sample, with their labels."""
    raw = load_dataset("mnist-sample")
    x = raw.x_train[..., 0] if split == "train" else raw.x_test[..., 0]
    y = raw.y_train if split == "train" else raw.y_test
    picks = np.concatenate([np.flatnonzero(y == c)[offset:offset + n_per_class]
                            for c in range(classes)])
    return x[picks], y[picks]


def tinted(image: np.ndarray, label: int) -> np.ndarray:
    """A grey digit as RGB: the digit's strokes in its class's tint on black."""
    return np.rint(image[..., None].astype(np.float64) / 255.0 * TINTS[label]).astype(np.uint8)


def write_folder(root: Path, n_per_class: int = 20, classes: int = 3, *, rgb: bool = False,
                 sizes: tuple[int, ...] = (28,), split_dirs: bool = False,
                 ext: str = ".png") -> Path:
    """A Keras-style folder: ``root/<class>/<i>.png`` (or ``root/train|test/<class>/...``),
    class names 'digit0', 'digit1', ...; with several ``sizes`` the images are resized in
    turn (mixed sizes: the study must then give image_size)."""
    parts = [("train", 0), ("test", n_per_class)] if split_dirs else [("", 0)]
    for part, offset in parts:
        x, y = digits(n_per_class if not split_dirs or part == "train" else
                      max(2, n_per_class // 2), classes, offset=offset)
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            folder = root / part / f"digit{label}" if part else root / f"digit{label}"
            folder.mkdir(parents=True, exist_ok=True)
            pic = Image.fromarray(tinted(img, int(label)) if rgb else img)
            size = sizes[i % len(sizes)]
            if size != 28:
                pic = pic.resize((size, size), Image.Resampling.BILINEAR)
            pic.save(folder / f"{i:04d}{ext}")
    return root


def write_csv(root: Path, n_per_class: int = 20, classes: int = 3, *,
              split_column: bool = False) -> Path:
    """PNG files under ``root/images`` listed in ``root/labels.csv`` (path,label[,split])."""
    x, y = digits(n_per_class, classes)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        Image.fromarray(img).save(root / "images" / f"{i:04d}.png")
        row = [f"images/{i:04d}.png", f"digit{label}"]
        if split_column:
            row.append("test" if i % 4 == 0 else "train")
        rows.append(row)
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"] + (["split"] if split_column else []))
        writer.writerows(rows)
    return root / "labels.csv"


def write_npz(path: Path, n_per_class: int = 20, classes: int = 3, *, rgb: bool = False,
              column_labels: bool = True, class_names: bool = True) -> Path:
    """Keras's load_data arrays in an .npz: x (N, 28, 28[, 3]) uint8, y (N, 1) like CIFAR's."""
    xtr, ytr = digits(n_per_class, classes)
    xte, yte = digits(max(2, n_per_class // 2), classes, split="test")
    if rgb:
        xtr = np.stack([tinted(i, int(c)) for i, c in zip(xtr, ytr, strict=True)])
        xte = np.stack([tinted(i, int(c)) for i, c in zip(xte, yte, strict=True)])
    arrays = {"x_train": xtr, "y_train": ytr[:, None] if column_labels else ytr,
              "x_test": xte, "y_test": yte[:, None] if column_labels else yte}
    if class_names:
        arrays["class_names"] = np.array([f"digit{c}" for c in range(classes)])
    np.savez(path, **arrays)
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    magic = 2051 if array.ndim == 3 else 2049
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def write_idx(root: Path, n_per_class: int = 20, classes: int = 3, *, prefix: str = "",
              gz: bool = True, transpose: bool = False) -> Path:
    """An MNIST-format directory: (prefix)train-images-idx3-ubyte(.gz) and the other three."""
    root.mkdir(parents=True, exist_ok=True)
    xtr, ytr = digits(n_per_class, classes)
    xte, yte = digits(max(2, n_per_class // 2), classes, split="test")
    if transpose:
        xtr, xte = xtr.transpose(0, 2, 1), xte.transpose(0, 2, 1)
    for name, array in ((f"{prefix}train-images-idx3-ubyte", xtr),
                        (f"{prefix}train-labels-idx1-ubyte", ytr),
                        (f"{prefix}t10k-images-idx3-ubyte", xte),
                        (f"{prefix}t10k-labels-idx1-ubyte", yte)):
        data = idx_bytes(array)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return root
