"""archlab.data.images: one image file as (H, W, C) uint8 the way Keras makes it, and the
verified cache of a source's decoded images."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archlab.data.images import BadImage, decode_image, decode_listing
from archlab.datasets import FolderSource
from archlab.datasets.listing import list_folder
from archlab.errors import DataError
from tests.imagefiles import write_folder


def options(**kw: object) -> FolderSource:
    return FolderSource.model_validate({"folder": "/unused", **kw})


def test_colour_modes_convert_as_keras_decodes(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert decode_image(str(tmp_path / "c.png"), options()).shape == (4, 6, 3)
    grey = decode_image(str(tmp_path / "c.png"), options(color_mode="grayscale"))
    assert grey.shape == (4, 6, 1)
    assert int(grey[0, 0, 0]) == round(200 * 0.299 + 100 * 0.587 + 50 * 0.114)  # ITU-R 601
    rgba = decode_image(str(tmp_path / "c.png"), options(color_mode="rgba"))
    assert rgba.shape == (4, 6, 4) and (rgba[..., 3] == 255).all()


def test_palette_and_grey_alpha_images_decode_to_their_colours(tmp_path: Path) -> None:
    """P (GIF, palette PNG) and LA are converted exactly, as Keras's decoder converts them."""
    palette = Image.new("P", (5, 5))
    palette.putpalette([10, 20, 30, 200, 150, 100] + [0] * 762)
    palette.putpixel((2, 2), 1)
    palette.save(tmp_path / "p.gif")
    out = decode_image(str(tmp_path / "p.gif"), options())
    assert out[0, 0].tolist() == [10, 20, 30] and out[2, 2].tolist() == [200, 150, 100]
    la = Image.merge("LA", (Image.new("L", (3, 3), 90), Image.new("L", (3, 3), 40)))
    la.save(tmp_path / "la.png")
    assert decode_image(str(tmp_path / "la.png"), options(color_mode="grayscale"))[0, 0, 0] == 90
    assert decode_image(str(tmp_path / "la.png"), options(color_mode="rgba"))[0, 0].tolist() \
        == [90, 90, 90, 40]


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares ``width`` x ``height`` (an 8-bit grey image) and whose data
    is one compressed row: enough for a reader to see the size, nothing to decode."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1))) + chunk(b"IEND", b""))


@pytest.mark.parametrize(("case", "message"), [
    ("truncated", "not a readable image"),
    ("text", "not a readable image"),
    ("bomb", r"an image of 900,000,000 pixels, more than the 89,478,485 archlab decodes \(a "
             r"decompression bomb\?\); refused before decoding"),
    ("I;16", r"image mode I;16 .* convert it to 8-bit RGB or L first"),
    ("CMYK", r"image mode CMYK"),
])
def test_bad_images_are_one_line_naming_the_file(tmp_path: Path, case: str,
                                                  message: str) -> None:
    path = tmp_path / ("x.jpg" if case == "CMYK" else "x.png")
    if case == "truncated":
        noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
        Image.fromarray(noise).save(path)  # incompressible: the cut falls inside the pixels
        path.write_bytes(path.read_bytes()[:2000])
    elif case == "text":
        path.write_text("this is not a picture\n")
    elif case == "bomb":
        _png_header_only(path, 30000, 30000)
    elif case == "I;16":
        Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(path)
        assert Image.open(path).mode.startswith("I")
    else:
        Image.new("CMYK", (4, 4)).save(path)
    with pytest.raises(BadImage, match=message) as info:
        decode_image(str(path), options())
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_crop_and_pad_keep_the_aspect_ratio_around_the_centre(tmp_path: Path) -> None:
    wide = np.zeros((10, 20), np.uint8)
    wide[:, 5:15] = 255  # a white middle square in a black 20x10 field
    Image.fromarray(wide).save(tmp_path / "w.png")
    crop = decode_image(str(tmp_path / "w.png"), options(color_mode="grayscale",
                                                          crop_to_aspect_ratio=True), (10, 10))
    assert (crop == 255).all()  # the centre 10x10 crop is the square
    pad = decode_image(str(tmp_path / "w.png"), options(color_mode="grayscale",
                                                         pad_to_aspect_ratio=True), (20, 20))
    assert (pad[:5] == 0).all() and (pad[15:] == 0).all() and (pad[5:15, 5:15] == 255).all()
    squeeze = decode_image(str(tmp_path / "w.png"), options(color_mode="grayscale",
                                                             interpolation="nearest"), (10, 10))
    assert squeeze[:, 0].max() == 0 and squeeze[:, 5].min() == 255  # squeezed, not cropped


def test_the_cache_is_read_back_verified_and_renewed_when_a_file_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "d", 5, 2)
    source = FolderSource.model_validate({"folder": str(root), "color_mode": "grayscale"})
    first = decode_listing(list_folder(source), (28, 28))
    second = decode_listing(list_folder(source), (28, 28))
    assert not first.from_cache and second.from_cache
    assert np.array_equal(first.images, second.images) and first.sha256 == second.sha256
    manifest = json.loads(next((tmp_path / "cache" / "decoded").glob("*/manifest.json"))
                          .read_text())
    assert len(manifest["manifest"]) == 10 and manifest["arrays_sha256"]
    # a damaged cache array is not used: the images are decoded again
    cached = next((tmp_path / "cache" / "decoded").glob("*/images.npy"))
    data = bytearray(cached.read_bytes())
    data[-1] ^= 0xFF
    cached.write_bytes(bytes(data))
    again = decode_listing(list_folder(source), (28, 28))
    assert not again.from_cache and np.array_equal(again.images, first.images)
    # a changed image changes the content hash
    victim = root / "digit1" / "0005.png"
    Image.fromarray(np.full((28, 28), 7, np.uint8)).save(victim)
    changed = decode_listing(list_folder(source), (28, 28))
    assert not changed.from_cache and changed.sha256 != first.sha256


def test_a_bad_image_fails_the_load_or_is_skipped_when_asked(tmp_path: Path,
                                                              monkeypatch) -> None:
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "d", 5, 2)
    (root / "digit0" / "0001.png").write_text("not an image")
    (root / "digit1" / "0007.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    source = FolderSource.model_validate({"folder": str(root), "color_mode": "grayscale"})
    with pytest.raises(DataError, match=r"0001.png: not a readable image .* \(and 1 more\); "
                       "fix or remove it, or set data.dataset.on_bad_image: skip"):
        decode_listing(list_folder(source), (28, 28))
    skip = source.model_copy(update={"on_bad_image": "skip"})
    decoded = decode_listing(list_folder(skip), (28, 28))
    assert len(decoded.images) == 8 and len(decoded.skipped) == 2
    assert decoded.skipped[0].startswith(str(root / "digit0" / "0001.png"))
    assert decode_listing(list_folder(skip), (28, 28)).from_cache  # skips are cached too
