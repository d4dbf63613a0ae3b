"""Datasets: MNIST and Fashion-MNIST from IDX files (found or downloaded), and an embedded sample.

Every IDX file is verified against the SHA-256 of its *decompressed* content before use, so the
gzip'd files of any mirror (whose compressed bytes differ) and plain files are both accepted.

Where `load_dataset` looks, in order:

1. the `data_dir` argument, else `$ARCHLAB_DATA_DIR` (if either is given, it must hold the files);
2. the user cache `<cache>/<name>/` (`cache_dir`, else `$ARCHLAB_CACHE_DIR`, else
   `~/.cache/archlab`);
3. a system place (`/usr/share/datasets/<name>`, e.g. Debian's `dataset-fashion-mnist`);
4. the mirrors, downloading `<file>.gz` atomically into the user cache.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import importlib.resources
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from archlab.errors import DataError

__all__ = [
    "DATASETS",
    "DEFAULT_MIRRORS",
    "SAMPLE_RESOURCE",
    "SYSTEM_DIRS",
    "DataFile",
    "RawDataset",
    "dataset_files",
    "default_cache_dir",
    "load_dataset",
]

log = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "mnist-sample")

ENV_DATA_DIR = "ARCHLAB_DATA_DIR"
ENV_CACHE_DIR = "ARCHLAB_CACHE_DIR"

#: Seconds to wait on a mirror (connect and each read) before trying the next one.
DOWNLOAD_TIMEOUT = 30.0
#: Largest download accepted (the largest file, Fashion-MNIST train images, is ~26 MB gzip'd).
MAX_DOWNLOAD_BYTES = 128 * 1024 * 1024

DEFAULT_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}

#: Directories where a system package may have installed the files (checked after the cache).
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "mnist": (Path("/usr/share/datasets/mnist"),),
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}

#: The embedded sample, relative to the `archlab` package.
SAMPLE_RESOURCE = ("data", "mnist_sample.npz")
SAMPLE_TRAIN = 5000
SAMPLE_TEST = 1000

_DIGITS = tuple(str(d) for d in range(10))
_FASHION = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": _DIGITS,
    "mnist-sample": _DIGITS,
    "fashion-mnist": _FASHION,
}

_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dims
_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dim


@dataclass(frozen=True)
class DataFile:
    """One canonical IDX file: its name (decompressed), SHA-256 of that content, kind and count."""

    name: str
    sha256: str
    kind: str  # "images" or "labels"
    count: int

    @property
    def gz_name(self) -> str:
        """The name of the gzip'd file the mirrors serve."""
        return self.name + ".gz"


def _files(shas: tuple[str, str, str, str]) -> tuple[DataFile, ...]:
    return (
        DataFile("train-images-idx3-ubyte", shas[0], "images", 60000),
        DataFile("train-labels-idx1-ubyte", shas[1], "labels", 60000),
        DataFile("t10k-images-idx3-ubyte", shas[2], "images", 10000),
        DataFile("t10k-labels-idx1-ubyte", shas[3], "labels", 10000),
    )


_FILES: dict[str, tuple[DataFile, ...]] = {
    # Decompressed MD5s match those published for the original files (see the shared README).
    "mnist": _files(
        (
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        )
    ),
    # Decompressed MD5s: f4a8712d7a061bf5bd6d2ca38dc4d50a, 9018921c3c673c538a1fc5bad174d6f9,
    # 8181f5470baa50b63fa0f6fddb340f0a, 15d484375f8d13e6eb1aabb0c3f46965 (the content of the
    # published .gz files whose MD5s are 8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...).
    "fashion-mnist": _files(
        (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        )
    ),
    "mnist-sample": (),
}


@dataclass(frozen=True, eq=False)
class RawDataset:
    """A dataset as loaded: uint8 images (N, H, W) and int64 labels (N,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str  # the directory it was loaded from, or "embedded"

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of one image."""
        return (int(self.x_train.shape[1]), int(self.x_train.shape[2]))


def dataset_files(name: str) -> tuple[DataFile, ...]:
    """The IDX files of dataset `name` (empty for the embedded `mnist-sample`)."""
    _check_name(name)
    return _FILES[name]


def default_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The user cache root: `cache_dir`, else `$ARCHLAB_CACHE_DIR`, else `~/.cache/archlab`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "archlab"


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
) -> RawDataset:
    """Load dataset `name`, looking in the places listed in this module's docstring."""
    _check_name(name)
    if name == "mnist-sample":
        return _load_sample()
    files = _FILES[name]

    explicit, origin = _explicit_dir(data_dir)
    if explicit is not None:
        missing = _missing(explicit, files)
        if missing:
            raise DataError(
                f"{name}: {origin} {explicit} lacks {', '.join(missing)} (each may be plain or .gz)"
            )
        return _load_dir(name, explicit, files)

    cache = default_cache_dir(cache_dir) / name
    if not _missing(cache, files):
        return _load_dir(name, cache, files)
    for system in SYSTEM_DIRS.get(name, ()):
        if not _missing(system, files):
            return _load_dir(name, system, files)

    failures: list[str] = []
    if download:
        urls = list(DEFAULT_MIRRORS[name] if mirrors is None else mirrors)
        if urls:
            failures = _download_missing(cache, files, urls)
            if not failures:
                return _load_dir(name, cache, files)
        else:
            failures = ["no mirrors given"]
    raise _not_found(name, cache, files, download, failures)


# -- resolution helpers -------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def _explicit_dir(data_dir: str | Path | None) -> tuple[Path | None, str]:
    if data_dir is not None:
        return Path(data_dir).expanduser(), "data directory"
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser(), f"${ENV_DATA_DIR}"
    return None, ""


def _find(directory: Path, f: DataFile) -> Path | None:
    """The plain file if present, else the .gz one, else None."""
    for candidate in (directory / f.name, directory / f.gz_name):
        if candidate.is_file():
            return candidate
    return None


def _missing(directory: Path, files: Sequence[DataFile]) -> list[str]:
    return [f.name for f in files if _find(directory, f) is None]


def _not_found(
    name: str, cache: Path, files: Sequence[DataFile], download: bool, failures: list[str]
) -> DataError:
    places = [f"a directory given as data_dir or ${ENV_DATA_DIR}", str(cache)]
    places += [str(p) for p in SYSTEM_DIRS.get(name, ())]
    names = ", ".join(f.name for f in files)
    msg = f"{name} not found: put {names} (plain or .gz) in one of: {'; '.join(places)}"
    if name == "fashion-mnist":
        msg += " (Debian: apt-get install dataset-fashion-mnist)"
    if not download:
        msg += "; downloading is disabled"
    elif failures:
        msg += "; download failed: " + "; ".join(failures)
    return DataError(_one_line(msg))


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- reading and verifying ------------------------------------------------------------------------


def _read_verified(path: Path, f: DataFile) -> bytes:
    """The decompressed content of `path`, or DataError if it is corrupt or does not match."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                _one_line(
                    f"checksum mismatch: {path} is not a valid gzip file "
                    f"(truncated or corrupt: {exc}); delete it and fetch it again"
                )
            ) from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != f.sha256:
        raise DataError(
            f"checksum mismatch: {path} has SHA-256 {digest}, expected {f.sha256} for {f.name} "
            "(truncated, corrupt or a different file); delete it and fetch it again"
        )
    return raw


def _parse_idx(data: bytes, path: Path | str, f: DataFile) -> np.ndarray:
    """Parse an IDX file of unsigned bytes, checking magic number, dimensions and length."""
    magic, ndim = (_IMAGES_MAGIC, 3) if f.kind == "images" else (_LABELS_MAGIC, 1)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise DataError(f"{path}: IDX magic number {got}, expected {magic} ({f.kind})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if dims[0] != f.count:
        raise DataError(f"{path}: {dims[0]} items, expected {f.count}")
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes, expected {expected} for shape {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _load_dir(name: str, directory: Path, files: Sequence[DataFile]) -> RawDataset:
    arrays: list[np.ndarray] = []
    for f in files:
        path = _find(directory, f)
        if path is None:  # pragma: no cover - callers check first
            raise DataError(f"{name}: {directory} lacks {f.name}")
        arrays.append(_parse_idx(_read_verified(path, f), path, f))
    x_train, y_train, x_test, y_test = arrays
    return _make(name, x_train, y_train, x_test, y_test, str(directory.resolve()))


def _make(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    source: str,
) -> RawDataset:
    classes = CLASS_NAMES[name]
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.dtype != np.uint8 or x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{name} ({source}): malformed {split} arrays")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataError(f"{name} ({source}): {split} labels outside 0..{len(classes) - 1}")
    return RawDataset(
        name=name,
        x_train=x_train,
        y_train=y_train.astype(np.int64),
        x_test=x_test,
        y_test=y_test.astype(np.int64),
        class_names=classes,
        source=source,
    )


def _load_sample() -> RawDataset:
    resource = importlib.resources.files("archlab").joinpath(*SAMPLE_RESOURCE)
    try:
        with importlib.resources.as_file(resource) as path, np.load(path) as npz:
            arrays = [npz[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"the embedded mnist-sample is missing or unreadable: {exc}") from exc
    sample = _make("mnist-sample", *arrays, source="embedded")
    if len(sample.x_train) != SAMPLE_TRAIN or len(sample.x_test) != SAMPLE_TEST:
        raise DataError("the embedded mnist-sample has unexpected sizes")
    return sample


# -- downloading ----------------------------------------------------------------------------------


class _DownloadError(Exception):
    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable  # the mirror itself failed: skip it for the other files


def _download_missing(cache: Path, files: Sequence[DataFile], mirrors: Sequence[str]) -> list[str]:
    """Download every file missing from `cache`; return the failures (empty if all arrived)."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [f"cannot create cache {cache}: {exc.strerror or exc}"]
    dead: dict[str, str] = {}  # mirror -> why it cannot be reached
    failures: list[str] = []
    incomplete = False
    for f in files:
        if _find(cache, f) is not None:
            continue
        for mirror in mirrors:
            if mirror in dead:
                continue
            url = mirror.rstrip("/") + "/" + f.gz_name
            try:
                _download_one(url, cache / f.gz_name, f)
            except _DownloadError as exc:
                log.info("could not fetch %s: %s", url, exc)
                if exc.unreachable:
                    dead[mirror] = str(exc)
                else:
                    failures.append(f"{url}: {exc}")
                continue
            break
        else:
            incomplete = True
    if not incomplete:
        return []
    return [f"{mirror}: {why}" for mirror, why in dead.items()] + failures


def _download_one(url: str, dest: Path, f: DataFile) -> None:
    """Fetch `url` to a temp file beside `dest`, verify it, then atomically rename it to `dest`."""
    log.info("downloading %s", url)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(url, out)
            out.flush()
            os.fsync(out.fileno())
        try:
            _verify_gz(tmp, f)
        except DataError as exc:
            raise _DownloadError(f"checksum mismatch ({exc})") from exc
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fetch(url: str, out: BinaryIO) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "archlab"})
    total = 0
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
            while chunk := response.read(1 << 20):
                total += len(chunk)
                if total > MAX_DOWNLOAD_BYTES:
                    raise _DownloadError(f"larger than {MAX_DOWNLOAD_BYTES} bytes")
                out.write(chunk)
            expected = response.headers.get("Content-Length")
            if expected and expected.isdigit() and int(expected) != total:
                raise _DownloadError(f"transfer cut off after {total} of {expected} bytes")
    except urllib.error.HTTPError as exc:
        raise _DownloadError(f"HTTP {exc.code}") from exc
    except urllib.error.URLError as exc:  # DNS, refused connection, TLS
        raise _DownloadError(str(exc.reason), unreachable=True) from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:  # timeouts, resets, cut-offs
        raise _DownloadError(str(exc) or type(exc).__name__, unreachable=True) from exc


def _verify_gz(path: Path, f: DataFile) -> None:
    """Check the decompressed SHA-256 of a downloaded .gz file, streaming."""
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"not a valid gzip file (truncated or corrupt: {exc})") from exc
    if digest.hexdigest() != f.sha256:
        raise DataError(f"SHA-256 of content {digest.hexdigest()}, expected {f.sha256}")
