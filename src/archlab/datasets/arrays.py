"""The arrays of a user's .npz file or IDX directory, looked at without reading the images: the
.npy headers and the labels of an .npz (read with ``allow_pickle=False``: a pickle or an object
array is refused), the four files of an IDX directory and their headers and labels.

Every problem is a one-line :class:`~archlab.errors.DataError` that names the file.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import zipfile
from pathlib import Path
from typing import Any

from archlab.datasets._record import IDX_MAGIC
from archlab.errors import DataError

__all__ = ["NPZ_ARRAYS", "find_idx_files", "idx_header", "labels_classes", "npz_labels",
           "npz_members", "read_idx_labels"]

NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


# -- .npz ---------------------------------------------------------------------------------------


def _pickle_or_not_zip(path: Path) -> DataError:
    with contextlib.suppress(OSError), path.open("rb") as fh:
        if fh.read(1) == b"\x80":
            return DataError(f"{path}: a Python pickle, not an .npz; archlab never loads "
                             "pickles (save the arrays with numpy.savez)")
    return DataError(f"{path}: not an .npz file (a zip of .npy arrays written by numpy.savez)")


def npz_members(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each array of an .npz as (shape, dtype string), from the .npy headers only."""
    import numpy as np

    if not path.is_file():
        raise DataError(f"{path}: " + ("not a file" if path.exists() else "no such file")
                        + " (data.dataset.npz)")
    try:
        with zipfile.ZipFile(path) as zf:
            out: dict[str, tuple[tuple[int, ...], str]] = {}
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as fh:
                    version = np.lib.format.read_magic(fh)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(fh)
                out[name[:-4]] = (tuple(int(d) for d in shape), dtype.str
                                  if not dtype.hasobject else "object")
            return out
    except zipfile.BadZipFile:
        raise _pickle_or_not_zip(path) from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz ({' '.join(str(exc).split())})") from None


def labels_classes(labels: list[Any], given: list[str] | None, stored: list[str] | None,
                    where: Path) -> tuple[str, ...]:
    """Class names: the source's list, else the file's own, else "0" .. str(max label)."""
    import numpy as np

    top = max(int(np.max(y)) if len(y) else -1 for y in labels) + 1
    names = given if given is not None else stored
    if names is None:
        names = [str(i) for i in range(top)]
    if top > len(names):
        raise DataError(f"{where}: labels up to {top - 1}, but {len(names)} class names")
    if len(names) < 2:
        raise DataError(f"{where}: Expected at least 2 classes, received {len(names)}")
    return tuple(names)


def npz_labels(path: Path) -> tuple[list[Any], list[str] | None]:
    """The y_train and y_test arrays of an .npz (flattened, checked integer), and its
    class_names array as a list (None when it has none)."""
    import numpy as np

    members = npz_members(path)
    missing = [a for a in NPZ_ARRAYS if a not in members]
    if missing:
        raise DataError(f"{path}: no array '{missing[0]}' (Keras's load_data arrays: "
                        f"{', '.join(NPZ_ARRAYS)}; found {', '.join(members) or 'none'})")
    objects = [a for a, (_, dtype) in members.items() if dtype == "object"]
    if objects:
        raise DataError(f"{path}: array '{objects[0]}' holds Python objects; archlab loads "
                        "numeric arrays only (allow_pickle=False)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            ys = []
            for name in ("y_train", "y_test"):
                y = npz[name]
                if y.ndim == 2 and y.shape[1] == 1:
                    y = y[:, 0]  # Keras's CIFAR loaders return (N, 1)
                if y.ndim != 1 or y.dtype.kind not in "iu":
                    raise DataError(f"{path}: array '{name}' has shape {y.shape} and dtype "
                                    f"{y.dtype}; expected integer labels (N,) or (N, 1)")
                if len(y) and int(y.min()) < 0:
                    raise DataError(f"{path}: array '{name}' holds negative labels")
                ys.append(y)
            stored = None
            if "class_names" in npz.files:
                names = npz["class_names"]
                if names.dtype.kind not in "US" or names.ndim != 1:
                    raise DataError(f"{path}: array 'class_names' must be a 1-D array of "
                                    f"strings, received dtype {names.dtype}")
                stored = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz ({' '.join(str(exc).split())})") from None
    return ys, stored


# -- IDX directories ----------------------------------------------------------------------------

#: The four files of an IDX directory, by the words their names contain.
_IDX_ROLES = (("train images", ("train-images",)), ("train labels", ("train-labels",)),
              ("test images", ("t10k-images", "test-images")),
              ("test labels", ("t10k-labels", "test-labels")))


def find_idx_files(directory: Path) -> list[Path]:
    """Train images, train labels, test images, test labels of an IDX directory (plain or
    .gz; named like MNIST's or EMNIST's files)."""
    if not directory.is_dir():
        raise DataError(f"{directory}: " + ("not a directory" if directory.exists()
                                            else "no such directory") + " (data.dataset.idx)")
    names = sorted(n for n in os.listdir(directory) if not n.startswith(".")
                   and (directory / n).is_file())
    found = []
    for role, words in _IDX_ROLES:
        hits = [n for n in names if any(w in n for w in words)]
        if not hits:
            raise DataError(f"{directory}: no {role} file (a name containing "
                            f"{' or '.join(repr(w) for w in words)}, plain or .gz)")
        plain = {h.removesuffix(".gz") for h in hits}
        if len(plain) > 1:
            raise DataError(f"{directory}: more than one {role} file ({', '.join(hits)})")
        found.append(directory / (next(h for h in hits if not h.endswith(".gz"))
                                  if any(not h.endswith(".gz") for h in hits) else hits[0]))
    return found


def idx_header(path: Path) -> tuple[str, tuple[int, ...]]:
    """The kind ("images" or "labels") and dimensions an IDX file's header declares."""
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as fh:  # type: ignore[operator]
            head = fh.read(4)
            if len(head) < 4:
                raise DataError(f"{path}: too short for an IDX header")
            magic = int.from_bytes(head, "big")
            kinds = {v: k for k, v in IDX_MAGIC.items()}
            if magic not in kinds:
                raise DataError(f"{path}: IDX magic number {magic}, expected 2051 (images) or "
                                "2049 (labels) of unsigned bytes")
            ndim = magic & 0xFF
            raw = fh.read(4 * ndim)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: not a readable IDX file ({' '.join(str(exc).split())})") \
            from None
    if len(raw) < 4 * ndim:
        raise DataError(f"{path}: too short for an IDX header")
    dims = tuple(int.from_bytes(raw[4 * i:4 * i + 4], "big") for i in range(ndim))
    return kinds[magic], dims


def read_idx_labels(path: Path, count: int) -> Any:
    """The labels of an IDX labels file (bounded: header plus ``count`` bytes)."""
    import numpy as np

    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:  # type: ignore[operator]
            data = fh.read(8 + count + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: not a readable IDX file ({' '.join(str(exc).split())})") \
            from None
    if len(data) != 8 + count:
        raise DataError(f"{path}: {max(0, len(data) - 8):,} labels, its header says {count:,}")
    return np.frombuffer(data, dtype=np.uint8, offset=8)
