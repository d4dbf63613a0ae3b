"""Real images in, model input out: the MNIST recipe, then the study's own preprocessing.

MNIST's digits were made from scanned NIST digits like this (LeCun et al.): grey, light digit
on a dark background, cropped to the digit, fitted into a 20x20 box keeping the aspect ratio
(anti-aliased), then placed in a 28x28 field so that the centre of mass of the pixels lies at
its centre. :func:`mnist_format` does the same to any picture of one digit, photographed or
drawn, either polarity (a light background is inverted; the background is read from the
border pixels). Fashion-MNIST's recipe differs in the box only: the longest side is fitted to
the whole 28 pixels and the product is centred by its bounding box.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from archlab.data.tensors import preprocess
from archlab.datasets import ImageOptions
from archlab.errors import ArchlabError
from archlab.inference.load import TrainedModel
from archlab.spec import DataSpec

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "CONTENT_FLOOR",
    "FIELD",
    "MAX_PIXELS",
    "MIN_CONTRAST",
    "RECIPES",
    "ImageError",
    "load_images",
    "mnist_format",
    "preprocess_images",
    "read_image",
]

#: (box, centre by centre of mass?) per dataset, for a 28x28 field.
RECIPES: dict[str, tuple[int, bool]] = {
    "mnist": (20, True), "mnist-sample": (20, True), "fashion-mnist": (28, False),
    # Kuzushiji characters fill their frame; EMNIST centres each character by its box in a
    # 24x24 area (Cohen et al. 2017: 2 pixels of padding on each side)
    "kmnist": (28, False), "emnist-digits": (24, False), "emnist-letters": (24, False),
    "emnist-balanced": (24, False)}
FIELD = 28
#: Below this fraction of the brightest pixel (after the background is taken away) a pixel
#: does not count as content when cropping: scanner noise, JPEG ringing, paper texture.
CONTENT_FLOOR = 0.1
#: Largest image read (width x height), checked from the header before decoding: a phone
#: camera's photo fits; a 12000x12000 one (144 MP, about 2 GB while decoded) does not.
MAX_PIXELS = 64_000_000
#: Grey levels of contrast below which an image is called blank.
MIN_CONTRAST = 8.0


class ImageError(ArchlabError):
    """An image cannot be read, or holds nothing to classify."""


def read_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` as float32 grey levels 0-255, shape (H, W).

    Transparent pixels are laid on white when the visible strokes are dark, on black when they
    are light; EXIF rotation is applied; 16-bit and float images are scaled to 0-255.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if p.is_dir():
        raise ImageError(f"{p}: a directory, not an image file")
    if not p.is_file():
        raise ImageError(f"{p}: no such image file")
    try:
        with warnings.catch_warnings():
            # Pillow's warnings are not for the user's console: the bomb warning (Pillow decodes
            # up to 179 MP after it) becomes the one-line refusal below, the rest are dropped.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:  # reads the header only
                _check_size(p, im.size)
                im.load()
                im = ImageOps.exif_transpose(im)
                return _grey(im)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise ImageError(_too_large(p, int(found.group(1)) if found else None)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        detail = " ".join(str(exc).split()) or exc.__class__.__name__
        raise ImageError(f"{p}: not a readable image ({detail})") from None


def _check_size(path: Path, size: tuple[int, int]) -> None:
    """Refuse an image too large to decode, from its header's size alone."""
    if size[0] * size[1] > MAX_PIXELS:
        raise ImageError(_too_large(path, size[0] * size[1], f"{size[0]}x{size[1]}, "))


def _too_large(path: Path, pixels: int | None, dims: str = "") -> str:
    got = f" ({dims}{pixels / 1e6:.1f} megapixels)" if pixels else ""
    return (f"{path}: Expected an image of at most {MAX_PIXELS // 1_000_000} megapixels (one "
            f"digit needs far fewer: scale it down), received a larger one{got}; not decoded")


def _grey(im: Image.Image) -> np.ndarray:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = a.max()
        return (a * (255.0 / top) if top > 255 else a).astype(np.float32)
    has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
    if not has_alpha:
        return np.asarray(im.convert("L"), dtype=np.float32)
    rgba = np.asarray(im.convert("LA"), dtype=np.float32)
    grey, alpha = rgba[..., 0], rgba[..., 1] / 255.0
    seen = alpha.sum()
    strokes = (grey * alpha).sum() / seen if seen > 0 else 0.0
    under = 255.0 if strokes < 127.5 else 0.0  # dark strokes on a light page, or the reverse
    return grey * alpha + under * (1.0 - alpha)


def _border(g: np.ndarray) -> np.ndarray:
    if min(g.shape) < 3:
        return g.ravel()
    return np.concatenate([g[0], g[-1], g[1:-1, 0], g[1:-1, -1]])


def mnist_format(image: np.ndarray, *, dataset: str = "mnist") -> np.ndarray:
    """One grey image (H, W) of any size and polarity as MNIST's (28, 28) uint8: light
    content on black, cropped, fitted into the dataset's box, centred (see the module doc)."""
    from PIL import Image

    g = np.asarray(image, dtype=np.float32)
    if g.ndim == 3 and g.shape[-1] in (3, 4):  # RGB(A) arrays: ITU-R 601 luma, like Pillow
        g = g[..., 0] * 0.299 + g[..., 1] * 0.587 + g[..., 2] * 0.114
    if g.ndim != 2 or g.size == 0:
        raise ImageError(f"Expected a grey (H, W) image, received shape {tuple(g.shape)}")
    box, by_mass = RECIPES.get(dataset, RECIPES["mnist"])
    lo, hi = float(g.min()), float(g.max())
    background = float(np.median(_border(g)))
    if background - lo > hi - background:  # light background: make the content light
        g, background = 255.0 - g, 255.0 - background
    g = np.clip(g - background, 0.0, None)
    peak = float(g.max())
    if peak < MIN_CONTRAST:
        raise ImageError("blank image: nothing stands out from the background")
    g *= 255.0 / peak
    rows = np.flatnonzero((g > CONTENT_FLOOR * 255.0).any(axis=1))
    cols = np.flatnonzero((g > CONTENT_FLOOR * 255.0).any(axis=0))
    g = g[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = g.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    crop = Image.fromarray(np.ascontiguousarray(g, dtype=np.float32))
    fitted = np.asarray(crop.resize(size, Image.Resampling.LANCZOS))
    fitted = np.clip(fitted, 0.0, 255.0)
    fh, fw = fitted.shape
    if by_mass and fitted.sum() > 0:
        ys, xs = np.indices(fitted.shape)
        cy, cx = (fitted * ys).sum() / fitted.sum(), (fitted * xs).sum() / fitted.sum()
        top, left = round(FIELD / 2 - cy), round(FIELD / 2 - cx)
    else:
        top, left = (FIELD - fh) // 2, (FIELD - fw) // 2
    top, left = min(max(top, 0), FIELD - fh), min(max(left, 0), FIELD - fw)
    out = np.zeros((FIELD, FIELD), dtype=np.float32)
    out[top:top + fh, left:left + fw] = fitted
    return np.rint(out).astype(np.uint8)


class _Target:
    """What images must become for a model: the dataset's name, input shape (C, H, W), its
    preprocessing and numbers, and how a file is decoded (a user's image source's options)."""

    def __init__(self, model: TrainedModel | DataSpec) -> None:
        if isinstance(model, DataSpec):
            info = model.info
            h, w, c = info.image_shape
            self.dataset, self.input_shape = model.dataset_name, (c, h, w)
            self.preprocessing: Any = model.preprocessing
            self.stats = None
            source = model.source
            self.options = ImageOptions.model_validate({
                "color_mode": {1: "grayscale", 3: "rgb", 4: "rgba"}[c],
                **({k: v for k, v in source.options().items()
                    if k in ImageOptions.model_fields} if isinstance(source, ImageOptions)
                   else {}), "image_size": [h, w]})
        else:
            info_ = model.info
            self.dataset, self.input_shape = info_.dataset, info_.input_shape
            self.preprocessing, self.stats = info_.preprocessing, info_.stats
            self.options = info_.image_options

    @property
    def mnist_like(self) -> bool:
        """Grey 28x28 digits or characters: images get the MNIST recipe (:func:`mnist_format`)."""
        return self.dataset in RECIPES and self.input_shape == (1, FIELD, FIELD)

    def to_input(self, x: np.ndarray) -> torch.Tensor:
        """uint8 images (N, H, W[, C]) as the model's float32 (N, C, H, W) input."""
        if self.preprocessing == "standardize" and self.stats is None:
            raise ImageError("this model standardizes its input with its training split's mean "
                             "and std, which its weights file does not hold (a run from before "
                             "archlab 0.3?); train it again")
        return preprocess(x, self.preprocessing, self.stats)


def preprocess_images(images: np.ndarray | Sequence[np.ndarray], model: TrainedModel | DataSpec,
                      *, mnist_style: bool = True) -> torch.Tensor:
    """The input ``model`` expects, float32 (N, C, H, W), from images.

    For an MNIST-like dataset (grey 28x28: mnist, fashion-mnist, kmnist, emnist-*), with
    ``mnist_style`` (the default) each image, any size and polarity, first goes through
    :func:`mnist_format`; without it, ``images`` must already be MNIST-like (N, 28, 28) uint8
    (light on dark, 0-255; or (N, 28, 28, 1) as datasets load), as the datasets are. For any
    other dataset, ``images`` must already
    have the model's size: uint8 (N, H, W) or (N, H, W, C) (:func:`load_images` resizes files
    as the dataset's source says). Then the study's own preprocessing applies: ``scale``
    (x/255), ``standardize`` (the training split's per-channel mean and std) or Keras's
    ``utils.normalize``. ``model`` is a :func:`archlab.load_trained` model or the study's
    :class:`archlab.DataSpec`.
    """
    target = _Target(model)
    if not target.mnist_like:
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[..., None]
        c, h, w = target.input_shape
        if x.ndim != 4 or x.shape[1:] != (h, w, c) or x.dtype != np.uint8:
            raise ImageError(f"Expected uint8 images of shape (N, {h}, {w}, {c}), received "
                             f"{x.dtype} {tuple(x.shape)}; load_images reads and resizes files")
        return target.to_input(x)
    if mnist_style:
        x = np.stack([mnist_format(im, dataset=target.dataset) for im in images]) \
            if len(images) else np.zeros((0, FIELD, FIELD), np.uint8)
    else:
        x = np.asarray(images)
        if x.ndim == 4 and x.shape[3] == 1:  # (N, 28, 28, 1), as the datasets load
            x = x[..., 0]
        if x.ndim != 3 or x.shape[1:] != (FIELD, FIELD):
            raise ImageError(f"Expected MNIST-like images of shape (N, {FIELD}, {FIELD}), "
                             f"received {tuple(x.shape)}; pass mnist_style=True to convert")
    return target.to_input(x)


def _decoded(path: str | Path, target: _Target) -> np.ndarray:
    """An image file decoded and resized as the model's dataset was (a user's folder: its own
    color_mode, interpolation, crop or pad; a built-in such as cifar10: RGB, bilinear)."""
    from archlab.data.images import BadImage, decode_image

    p = Path(path)
    if p.is_dir():
        raise ImageError(f"{p}: a directory, not an image file")
    if not p.is_file():
        raise ImageError(f"{p}: no such image file")
    c, h, w = target.input_shape
    try:
        return decode_image(str(p), target.options, (h, w))
    except BadImage as exc:
        raise ImageError(str(exc)) from None


def load_images(paths: Sequence[str | Path], model: TrainedModel | DataSpec) -> torch.Tensor:
    """Read and prepare image files for ``model``: float32 (N, C, H, W). MNIST-like datasets
    get the MNIST recipe (any size, either polarity); others are decoded and resized as the
    dataset's source says. A bad image's error names its file."""
    target = _Target(model)
    c, h, w = target.input_shape
    if not target.mnist_like:
        x = np.stack([_decoded(p, target) for p in paths]) if len(paths) \
            else np.zeros((0, h, w, c), np.uint8)
        return target.to_input(x)
    fielded = []
    for path in paths:
        try:
            fielded.append(mnist_format(read_image(path), dataset=target.dataset))
        except ImageError as exc:
            msg = str(exc)
            raise ImageError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    return target.to_input(np.stack(fielded) if fielded else
                           np.zeros((0, FIELD, FIELD), np.uint8))
