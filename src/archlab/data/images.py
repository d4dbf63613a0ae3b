"""Image files to uint8 arrays: decoded once, in parallel, into a verified cache.

One image becomes (H, W, C) uint8 the way Keras's ``image_dataset_from_directory`` makes it:
decoded in the asked ``color_mode`` (grayscale, rgb, rgba; a palette or grey+alpha image is
converted, as Keras's decoder converts it), optionally cropped (``crop_to_aspect_ratio``) or
padded with zeros (``pad_to_aspect_ratio``) to the target's aspect ratio around its centre,
then resized with the asked filter (Pillow's: it smooths when it shrinks, TensorFlow's
resize does not, so resized pixels differ a little from Keras's). Images whose mode holds
values no colour mode can take without guessing (16-bit, float, CMYK, ...) are refused, as are
images larger than :data:`~archlab.datasets.listing.MAX_IMAGE_PIXELS` (before decoding).

The decoded arrays of a source are cached under ``<cache>/decoded/<key>/``: ``images.npy``,
``labels.npy`` and ``manifest.json`` (the listing's path, label, split, size and mtime per file,
its SHA-256, and the SHA-256 of each array). A later load whose listing hashes the same, and
whose arrays still hash as recorded, reads the arrays instead of decoding.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from archlab.datasets.listing import (
    MAX_IMAGE_PIXELS,
    ImageEntry,
    Listing,
    cache_root,
    common_size,
)
from archlab.datasets.sources import ImageOptions
from archlab.errors import DataError

__all__ = ["DecodedImages", "decode_image", "decode_listing", "sha256_of"]

#: Pillow modes archlab converts to any colour mode the way Keras's decoder does.
_MODES = ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "La")
_PIL_MODE = {"grayscale": "L", "rgb": "RGB", "rgba": "RGBA"}
_FILTERS = {"bilinear": "BILINEAR", "nearest": "NEAREST", "bicubic": "BICUBIC", "area": "BOX",
            "lanczos3": "LANCZOS"}
#: Bump when decoding changes what a file becomes: older caches are then decoded again.
CACHE_FORMAT = 1


class BadImage(Exception):
    """One image that cannot be used; the message is one line naming the file."""


def _resample(options: ImageOptions) -> Any:
    from PIL import Image

    return getattr(Image.Resampling, _FILTERS[options.interpolation])


def _fit(im: Any, options: ImageOptions, size: tuple[int, int]) -> Any:
    """``im`` cropped or padded to the aspect ratio of ``size`` (h, w), then resized to it."""
    from PIL import Image

    th, tw = size
    w, h = im.size
    if (w, h) == (tw, th):
        return im
    if options.crop_to_aspect_ratio:  # keras.preprocessing.image.smart_resize's box
        ch, cw = min(h, int(w * th / tw)), min(w, int(h * tw / th))
        top, left = int((h - ch) / 2), int((w - cw) / 2)
        return im.resize((tw, th), _resample(options), box=(left, top, left + cw, top + ch))
    if options.pad_to_aspect_ratio:  # Keras pads with zeros around the centre
        ph, pw = max(h, int(w * th / tw)), max(w, int(h * tw / th))
        if (ph, pw) != (h, w):
            canvas = Image.new(im.mode, (pw, ph), 0)
            canvas.paste(im, (int((pw - w) / 2), int((ph - h) / 2)))
            im = canvas
    return im.resize((tw, th), _resample(options))


def decode_image(path: str, options: ImageOptions,
                 size: tuple[int, int] | None = None) -> np.ndarray:
    """One image file as (H, W, C) uint8 per ``options`` (``size``: (h, w) to resize to,
    default ``options.image_size``, else the image's own). Raises :class:`BadImage`."""
    from PIL import Image, UnidentifiedImageError

    target = size if size is not None else options.image_size
    try:
        with warnings.catch_warnings():
            # Pillow warns, then decodes, between 89 and 179 million pixels: refuse instead.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise BadImage(_too_large(path, w * h))
                if im.mode not in _MODES:
                    raise BadImage(f"{path}: image mode {im.mode} (16-bit, float, CMYK and "
                                   "similar modes have no exact 8-bit grayscale/rgb/rgba "
                                   "form); convert it to 8-bit RGB or L first")
                im.load()  # a truncated file raises here (Pillow's default)
                if im.mode in ("P", "PA") and options.color_mode != "rgba":
                    im = im.convert("RGBA")  # the palette's colours, then the asked mode
                im = im.convert(_PIL_MODE[options.color_mode])
                if target is not None:
                    im = _fit(im, options, (int(target[0]), int(target[1])))
                arr = np.asarray(im, dtype=np.uint8)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses past twice its limit as it reads the header: its message says the size
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise BadImage(_too_large(path, int(found.group(1)) if found else None)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            MemoryError) as exc:
        detail = " ".join(str(exc).split()) or exc.__class__.__name__
        raise BadImage(f"{path}: not a readable image ({detail})") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def _too_large(path: str, pixels: int | None) -> str:
    size = f"of {pixels:,} pixels" if pixels else "too large"
    return (f"{path}: an image {size}, more than the {MAX_IMAGE_PIXELS:,} archlab decodes (a "
            "decompression bomb?); refused before decoding")


@dataclass(frozen=True, eq=False)
class DecodedImages:
    """The decoded images of a listing: (N, H, W, C) uint8 and int64 labels, the listing's
    entries they came from (bad ones left out when skipped), and which were skipped."""

    images: np.ndarray
    labels: np.ndarray
    entries: tuple[ImageEntry, ...]
    skipped: tuple[str, ...]  # "path: reason", in listing order
    from_cache: bool
    sha256: str  # of images, labels and the entries' (rel, split): the content's hash


def sha256_of(*arrays: np.ndarray) -> str:
    """SHA-256 over arrays' dtype, shape and bytes (no copy of a contiguous array)."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(memoryview(a).cast("B"))
    return digest.hexdigest()


def _decode_all(entries: Sequence[ImageEntry], options: ImageOptions, size: tuple[int, int],
                channels: int, workers: int) -> tuple[np.ndarray, list[str | None]]:
    out = np.empty((len(entries), size[0], size[1], channels), dtype=np.uint8)
    errors: list[str | None] = [None] * len(entries)

    def work(i: int) -> None:
        try:
            out[i] = decode_image(entries[i].path, options, size)
        except BadImage as exc:
            errors[i] = str(exc)

    if workers <= 1 or len(entries) < 64:
        for i in range(len(entries)):
            work(i)
    else:  # Pillow decodes and resizes with the GIL released: threads use every core
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, range(len(entries)), chunksize=64))
    return out, errors


def _cache_dir(listing: Listing) -> Path:
    key = json.dumps({"source": str(listing.source.path), "kind": listing.source.kind,
                      "options": listing.source.options(), "format": CACHE_FORMAT},
                     sort_keys=True)
    return cache_root() / "decoded" / hashlib.sha256(key.encode()).hexdigest()[:24]


def _content_hash(images: np.ndarray, labels: np.ndarray, entries: Sequence[ImageEntry],
                  classes: Sequence[str]) -> str:
    meta = json.dumps({"files": [[e.rel, e.split] for e in entries], "classes": list(classes)},
                      separators=(",", ":")).encode()
    return hashlib.sha256(sha256_of(images, labels).encode() + meta).hexdigest()


def _read_cache(directory: Path, listing: Listing) -> DecodedImages | None:
    """The cached arrays when their manifest matches ``listing`` and they hash as recorded."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        if manifest.get("manifest_sha256") != listing.manifest_hash():
            return None
        images = np.load(directory / "images.npy", allow_pickle=False)
        labels = np.load(directory / "labels.npy", allow_pickle=False)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if sha256_of(images, labels) != manifest.get("arrays_sha256"):
        return None  # damaged or altered since written: decode again
    kept = manifest.get("kept")
    entries = listing.entries if kept is None else tuple(listing.entries[i] for i in kept)
    if len(entries) != len(images) or len(labels) != len(images):
        return None
    return DecodedImages(images, labels, entries, tuple(manifest.get("skipped", [])),
                         from_cache=True, sha256=manifest["content_sha256"])


def _write_cache(directory: Path, listing: Listing, decoded: DecodedImages,
                 kept: list[int] | None) -> None:
    """Write the arrays and their manifest into a temporary folder, then rename it into
    place: a reader sees a whole cache or none. A full or read-only disk only costs speed."""
    parent = directory.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=parent))
    except OSError:
        return
    try:
        np.save(tmp / "images.npy", decoded.images, allow_pickle=False)
        np.save(tmp / "labels.npy", decoded.labels, allow_pickle=False)
        (tmp / "manifest.json").write_text(json.dumps({
            "format": CACHE_FORMAT, "source": str(listing.source.path),
            "options": listing.source.options(), "manifest_sha256": listing.manifest_hash(),
            "manifest": listing.manifest(), "kept": kept, "skipped": list(decoded.skipped),
            "arrays_sha256": sha256_of(decoded.images, decoded.labels),
            "content_sha256": decoded.sha256}))
        old = directory.with_name(f".{directory.name}.old.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    except OSError:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def decode_listing(listing: Listing, size: tuple[int, int] | None = None, *,
                   workers: int | None = None, use_cache: bool = True) -> DecodedImages:
    """Every image of ``listing`` as (N, H, W, C) uint8 at ``size`` (h, w; None: the source's
    ``image_size``, else the images' common size), from the cache when it is valid, else
    decoded in parallel (and cached). A bad image is a one-line :class:`DataError` naming it,
    unless the source says ``on_bad_image: skip``."""
    source = listing.source
    directory = _cache_dir(listing)
    if use_cache and (hit := _read_cache(directory, listing)) is not None:
        return hit  # its size is the one it was decoded at: the same files, the same options
    if size is None:
        size = source.image_size or common_size(listing)
    n_workers = workers if workers is not None else min(32, os.cpu_count() or 1)
    images, errors = _decode_all(listing.entries, source, size, source.channels, n_workers)
    bad = [i for i, e in enumerate(errors) if e is not None]
    labels = np.array([e.label for e in listing.entries], dtype=np.int64)
    entries = listing.entries
    kept: list[int] | None = None
    skipped: tuple[str, ...] = ()
    if bad:
        if source.on_bad_image == "error":
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise DataError(f"{errors[bad[0]]}{more}; fix or remove it, or set "
                            "data.dataset.on_bad_image: skip")
        kept = [i for i, e in enumerate(errors) if e is None]
        if not kept:
            raise DataError(f"{source.path}: no readable image ({errors[bad[0]]})")
        images, labels = images[kept], labels[kept]
        entries = tuple(entries[i] for i in kept)
        skipped = tuple(e for e in errors if e is not None)  # type: ignore[misc]
    decoded = DecodedImages(images, labels, entries, skipped, from_cache=False,
                            sha256=_content_hash(images, labels, entries, listing.class_names))
    if use_cache:
        _write_cache(directory, listing, decoded, kept)
    return decoded
