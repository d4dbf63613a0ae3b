"""A user's image source (a folder, a CSV list) listed: its files, classes, splits and each
file's size and modification time, without decoding a pixel; and each image's size from its
header, cached by path, size and mtime (a second look at 50,000 images costs their ``stat``
calls). The pixels are decoded by :mod:`archlab.data.images`, from the same :class:`Listing`.

Every problem is a one-line :class:`~archlab.errors.DataError` that names the file.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from archlab.datasets.sources import DEFAULT_TEST_SPLIT, CsvSource, FolderSource
from archlab.errors import DataError

__all__ = [
    "ENV_CACHE_DIR",
    "MAX_IMAGE_PIXELS",
    "ImageEntry",
    "Listing",
    "cache_root",
    "common_size",
    "image_extensions",
    "image_headers",
    "list_csv",
    "list_folder",
    "list_images",
    "listing_of",
    "read_header",
    "split_counts",
    "stratified_split",
]

ENV_CACHE_DIR = "ARCHLAB_CACHE_DIR"
#: Keras's extensions; Pillow reads these three too where it was built with their codecs.
_KERAS_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_PILLOW_EXTENSIONS = (".webp", ".tif", ".tiff")
#: The largest image archlab opens, in pixels (Pillow's own decompression-bomb limit): a
#: larger header is refused before a byte of pixels is decoded.
MAX_IMAGE_PIXELS = 89_478_485
#: CSV files bigger than this are refused (a list of a million images is ~50 MB).
MAX_CSV_BYTES = 256 << 20
Split = Literal["train", "test"]


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The user cache root: ``cache_dir``, else ``$ARCHLAB_CACHE_DIR``, else ~/.cache/archlab."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "archlab"


def image_extensions() -> tuple[str, ...]:
    """The file extensions taken as images (lower case): Keras's five, plus WebP and TIFF
    where this Pillow reads them."""
    from PIL import Image

    Image.init()
    readable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return _KERAS_EXTENSIONS + tuple(e for e in _PILLOW_EXTENSIONS if e in readable)


# -- listing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageEntry:
    """One image file of a listing: where it is, its class and split, and its stat."""

    path: str  # absolute
    rel: str  # relative to the source's folder (the CSV's folder): the manifest's key
    label: int
    split: Split | None  # None: the source has no test set of its own
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Listing:
    """The image files of a folder or CSV source, in sorted (folder) or row (CSV) order."""

    source: FolderSource | CsvSource
    class_names: tuple[str, ...]
    entries: tuple[ImageEntry, ...]
    has_test: bool  # the source names its own test set (train/ and test/; a split column)

    @property
    def test_split(self) -> float | None:
        """The held-out fraction when the source has no test set; None when it has one."""
        if self.has_test:
            return None
        split = self.source.test_split
        return DEFAULT_TEST_SPLIT if split is None else split

    def manifest(self) -> list[list[Any]]:
        """(rel, label, split, size, mtime_ns) per file: what the decoded cache is valid for."""
        return [[e.rel, e.label, e.split, e.size, e.mtime_ns] for e in self.entries]

    def manifest_hash(self) -> str:
        """SHA-256 of the manifest, the class names and the source's options."""
        blob = json.dumps({"manifest": self.manifest(), "classes": list(self.class_names),
                           "options": self.source.options()}, sort_keys=True,
                          separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def labels(self, split: Split | None = None) -> list[int]:
        return [e.label for e in self.entries if split is None or e.split == split]


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _scan_images(root: str, extensions: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of the image files under ``root``, recursively, in sorted
    order; hidden files and folders skipped; symbolic links followed, a link back into its own
    ancestry refused. One ``stat`` per file (``os.scandir``): 50,000 files in a fraction of a
    second."""
    found: list[tuple[str, int, int]] = []

    def walk(directory: str, ancestors: frozenset[tuple[int, int]]) -> None:
        try:
            st = os.stat(directory)
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if exc.errno == 40:  # ELOOP: a link that points to itself
                raise DataError(f"{directory}: a symbolic link loop") from None
            raise DataError(f"cannot read {directory}: {exc.strerror or exc}") from None
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            raise DataError(f"{directory}: a symbolic link loop (it leads back to a folder "
                            "that contains it)")
        inside = ancestors | {key}
        for entry in entries:
            if _hidden(entry.name):
                continue
            try:
                if entry.is_dir():
                    walk(entry.path, inside)
                elif entry.name.lower().endswith(extensions):
                    info = entry.stat()  # follows a link; a dangling one raises
                    found.append((entry.path, info.st_size, info.st_mtime_ns))
            except FileNotFoundError:
                continue  # a dangling link, or a file removed meanwhile
            except OSError as exc:
                if exc.errno == 40:
                    raise DataError(f"{entry.path}: a symbolic link loop") from None
                raise DataError(f"{entry.path}: {exc.strerror or exc}") from None

    walk(os.fspath(root), frozenset())
    return found


def list_images(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Image files under ``root``, recursively, in sorted order (see :func:`_scan_images`)."""
    return [Path(p) for p, _, _ in _scan_images(str(root), extensions)]


def _stat(path: Path, where: str) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise DataError(f"{where}: cannot read {path} ({exc.strerror or exc})") from None


def _class_dirs(root: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(root) if not _hidden(n) and (root / n).is_dir())
    except OSError as exc:
        raise DataError(f"cannot read {root}: {exc.strerror or exc}") from None


def _chosen_classes(found: list[str], given: list[str] | None, where: Path,
                    what: str) -> tuple[str, ...]:
    if given is None:
        return tuple(found)
    if len(set(given)) != len(given):
        dup = next(c for c in given if given.count(c) > 1)
        raise DataError(f"{where}: field 'class_names': Expected distinct names, received "
                        f"'{dup}' twice")
    missing = [c for c in given if c not in found]
    if missing:
        raise DataError(f"{where}: field 'class_names': Expected {what} "
                        f"({', '.join(found) or 'none found'}), received '{missing[0]}'")
    return tuple(given)


def _folder_entries(root: Path, classes: tuple[str, ...], split: Split | None,
                    extensions: tuple[str, ...]) -> list[ImageEntry]:
    entries: list[ImageEntry] = []
    # a path's key in the manifest: relative to the source's folder (train/... when split)
    base = str(root.parent if split else root) + os.sep
    for label, name in enumerate(classes):
        files = _scan_images(str(root / name), extensions)
        if not files:
            raise DataError(f"{root / name}: an empty class folder (no {', '.join(extensions)} "
                            "file); remove it or list the classes to use in class_names")
        for path, size, mtime in files:
            rel = path[len(base):] if path.startswith(base) else os.path.relpath(path, base)
            entries.append(ImageEntry(path, rel.replace(os.sep, "/"), label, split, size,
                                      mtime))
    return entries


def list_folder(source: FolderSource) -> Listing:
    """The images of a folder source: one sub-folder per class, or train/ and test/ folders
    each holding one sub-folder per class (Hugging Face's imagefolder layout)."""
    root = source.path
    if not root.is_dir():
        raise DataError(f"{root}: " + ("not a directory" if root.exists()
                                       else "no such directory") + " (data.dataset.folder)")
    extensions = image_extensions()
    top = _class_dirs(root)
    if "train" in top and "test" in top:
        found = _class_dirs(root / "train")
        classes = _chosen_classes(found, source.class_names, root / "train",
                                  "class folders of train/")
        extra = [c for c in _class_dirs(root / "test") if c not in found]
        if extra:
            raise DataError(f"{root / 'test' / extra[0]}: a class folder that train/ does not "
                            f"have (train/ has {', '.join(found)})")
        _enough(classes, root / "train")
        entries = (_folder_entries(root / "train", classes, "train", extensions)
                   + _test_entries(root / "test", classes, extensions))
        return Listing(source, classes, tuple(entries), has_test=True)
    classes = _chosen_classes(top, source.class_names, root, "class folders")
    _enough(classes, root)
    return Listing(source, classes, tuple(_folder_entries(root, classes, None, extensions)),
                   has_test=False)


def _test_entries(root: Path, classes: tuple[str, ...],
                  extensions: tuple[str, ...]) -> list[ImageEntry]:
    present = [c for c in classes if (root / c).is_dir()]
    entries = _folder_entries(root, tuple(present), "test", extensions)
    index = {c: i for i, c in enumerate(classes)}
    return [ImageEntry(e.path, e.rel, index[present[e.label]], e.split, e.size, e.mtime_ns)
            for e in entries]


def _enough(classes: tuple[str, ...], where: Path) -> None:
    if len(classes) < 2:
        found = f"only '{classes[0]}'" if classes else "none"
        raise DataError(f"{where}: Expected at least 2 class folders (one per class), "
                        f"received {found}")


def list_csv(source: CsvSource) -> Listing:
    """The images of a CSV source: a header row with ``path`` and ``label`` (and optionally
    ``split``: train or test), paths relative to the CSV's folder and inside it."""
    path = source.path
    st = _stat(path, "data.dataset.csv")
    if st.st_size > MAX_CSV_BYTES:
        raise DataError(f"{path}: {st.st_size:,} bytes, more than the {MAX_CSV_BYTES:,} a CSV "
                        "list may have")
    folder = path.parent
    real_folder = os.path.realpath(folder)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise DataError(f"{path}: empty; expected a header row 'path,label'")
    header = [h.strip().lower() for h in rows[0]]
    if "path" not in header or "label" not in header:
        raise DataError(f"{path}, row 1: Expected a header with columns 'path' and 'label' "
                        f"(and optionally 'split'), received {','.join(rows[0])!r}")
    col = {name: header.index(name) for name in ("path", "label", "split") if name in header}
    extensions = image_extensions()
    raw: list[tuple[str, str, Split | None, Path, int]] = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise DataError(f"{path}, row {number}: {len(row)} columns, expected {len(header)}")
        rel, label = row[col["path"]].strip(), row[col["label"]].strip()
        split: Split | None = None
        if "split" in col:
            value = row[col["split"]].strip().lower()
            if value not in ("train", "test"):
                raise DataError(f"{path}, row {number}, column 'split': Expected 'train' or "
                                f"'test', received {value!r}")
            split = value  # type: ignore[assignment]
        if not rel or not label:
            raise DataError(f"{path}, row {number}: an empty path or label")
        if os.path.isabs(rel):
            raise DataError(f"{path}, row {number}: {rel!r} is an absolute path; paths are "
                            "relative to the CSV's folder")
        image = folder / rel
        real = os.path.realpath(image)
        if os.path.commonpath([real, real_folder]) != real_folder:
            raise DataError(f"{path}, row {number}: {rel!r} points outside the CSV's folder "
                            f"{folder}")
        if not image.is_file():
            raise DataError(f"{path}, row {number}: {rel!r}: no such image file ({image})")
        if not rel.lower().endswith(extensions):
            raise DataError(f"{path}, row {number}: {rel!r} is not an image file (expected "
                            f"{', '.join(extensions)})")
        raw.append((rel, label, split, image, number))
    if not raw:
        raise DataError(f"{path}: no image rows under the header")
    found = sorted({label for _, label, _, _, _ in raw})
    classes = _chosen_classes(found, source.class_names, path, "labels of the CSV")
    _enough(classes, path)
    index = {c: i for i, c in enumerate(classes)}
    entries = []
    for rel, label, split, image, _ in raw:
        if label not in index:
            continue  # class_names picked a subset
        st = _stat(image, str(path))
        entries.append(ImageEntry(str(image), Path(rel).as_posix(), index[label], split,
                                  st.st_size, st.st_mtime_ns))
    has_test = "split" in col
    if has_test and not any(e.split == "test" for e in entries):
        raise DataError(f"{path}: the 'split' column names no 'test' row")
    return Listing(source, classes, tuple(entries), has_test=has_test)


def stratified_split(labels: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """Indices (kept, held out): ``round(fraction * n)`` of each class's ``n`` images held out,
    chosen with ``seed``; both sorted. The validation split and a source's test split."""
    import numpy as np

    rng = np.random.default_rng(seed)
    held: list[Any] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        held.append(idx[: int(round(fraction * len(idx)))])
    out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[out] = False
    return np.flatnonzero(mask), out


def split_counts(labels: list[int], classes: int, fraction: float) -> tuple[list[int], list[int]]:
    """(train, test) images per class when ``fraction`` of each class is held out, as
    :func:`stratified_split` holds it out (``round(fraction * n)``)."""
    per = Counter(labels)
    test = [int(round(fraction * per.get(c, 0))) for c in range(classes)]
    return [per.get(c, 0) - t for c, t in enumerate(test)], test


# -- image headers ------------------------------------------------------------------------------


def _header_cache_path(root: str) -> Path:
    key = hashlib.sha256(root.encode()).hexdigest()[:24]
    return cache_root() / "scans" / f"{key}.json"


def read_header(path: str) -> tuple[int, int, str]:
    """(width, height, mode) of one image from its header (no pixel decoded)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return int(im.size[0]), int(im.size[1]), str(im.mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{path}: an image of more than {MAX_IMAGE_PIXELS:,} pixels "
                        "(a decompression bomb?); refused before decoding") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        detail = " ".join(str(exc).split()) or exc.__class__.__name__
        raise DataError(f"{path}: not a readable image ({detail})") from None


def image_headers(listing: Listing) -> dict[str, tuple[int, int, str] | str]:
    """(width, height, mode) of every image of ``listing`` by absolute path, or the one-line
    reason it cannot be read. Cached per source folder by path, size and mtime."""
    root = str(listing.source.path)
    cache_path = _header_cache_path(root)
    cached: dict[str, list[Any]] = {}
    with contextlib.suppress(OSError, ValueError, TypeError):
        loaded = json.loads(cache_path.read_text())
        if isinstance(loaded, dict) and loaded.get("root") == root:
            cached = loaded.get("headers", {})
    out: dict[str, tuple[int, int, str] | str] = {}
    fresh: dict[str, list[Any]] = {}
    for e in listing.entries:
        hit = cached.get(e.path)
        if hit is not None and hit[:2] == [e.size, e.mtime_ns] and len(hit) == 5:
            out[e.path] = (int(hit[2]), int(hit[3]), str(hit[4]))
        else:
            try:
                out[e.path] = read_header(e.path)
            except DataError as exc:
                out[e.path] = str(exc)
                continue
        w, h, mode = out[e.path]  # type: ignore[misc]
        fresh[e.path] = [e.size, e.mtime_ns, w, h, mode]
    if fresh != cached:
        with contextlib.suppress(OSError):
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"root": root, "headers": fresh}))
            os.replace(tmp, cache_path)
    return out


def common_size(listing: Listing) -> tuple[int, int]:
    """(height, width) shared by every readable image; a one-line error when they differ."""
    headers = image_headers(listing)
    sizes: Counter[tuple[int, int]] = Counter()
    example: dict[tuple[int, int], str] = {}
    for path, header in headers.items():
        if isinstance(header, str):
            if listing.source.on_bad_image == "error":
                raise DataError(header)
            continue
        w, h, _ = header
        sizes[(h, w)] += 1
        example.setdefault((h, w), path)
    if not sizes:
        raise DataError(f"{listing.source.path}: no readable image")
    if len(sizes) > 1:
        (a, na), (b, _) = sizes.most_common(2)
        raise DataError(f"{listing.source.path}: images of different sizes ({na:,} are "
                        f"{a[1]}x{a[0]}, {example[b]} is {b[1]}x{b[0]}); set data.dataset."
                        "image_size: [height, width] to resize them")
    return next(iter(sizes))


def listing_of(source: FolderSource | CsvSource) -> Listing:
    """The listing of an image source."""
    return list_folder(source) if isinstance(source, FolderSource) else list_csv(source)
