"""A huge image is refused from its header, before decoding, as one line (no Pillow warning)."""

from __future__ import annotations

import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import pytest

from archlab.inference import read_image
from archlab.inference.images import MAX_PIXELS


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` 8-bit grey pixels, with one row of data:
    what a decompression bomb looks like to a reader that trusts the header."""
    idat = zlib.compress(b"\0" * (width + 1))
    return _png(path, width, height, idat)


def png_black(path: Path, width: int, height: int) -> Path:
    """A whole, valid black PNG of ``width`` x ``height`` grey pixels: kilobytes on disk, one
    byte a pixel once decoded (compressed row by row: the test never holds the pixels)."""
    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte 0, then the row
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return _png(path, width, height, idat)


def _png(path: Path, width: int, height: int, idat: bytes) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


#: Reads a PNG in a fresh interpreter; prints the peak resident memory (KiB)
#: before and after, and the error. Pillow decodes in C buffers that tracemalloc never sees.
PROBE = """
import resource, sys, warnings
from archlab.inference import ImageError, read_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
warnings.simplefilter("error")  # any warning that escapes fails
try:
    read_image(sys.argv[1])
    message = "read"
except ImageError as exc:
    message = str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after)
print(message)
"""


@pytest.mark.parametrize(("width", "height"), [
    (12000, 12000),  # 144 MP: Pillow warns, then decodes (~2 GB)
    (9000, 8000),  # 72 MP: over archlab's limit, under Pillow's warning
])
def test_huge_images_are_refused_before_decoding(tmp_path: Path, width: int,
                                                 height: int) -> None:
    path = png_black(tmp_path / "big.png", width, height)
    done = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    sizes, message = done.stdout.splitlines()
    before, after = map(int, sizes.split())
    assert "\n" not in message and message.startswith(str(path))
    assert f"at most {MAX_PIXELS // 1_000_000} megapixels" in message
    assert f"{width * height / 1e6:.1f} megapixels" in message
    # KiB: nothing decoded (a decode touches one byte a pixel: 72 MB at least here, and
    # archlab's grey conversion four more)
    assert after - before < 30_000


def test_pillows_own_refusal_is_the_same_line(tmp_path: Path) -> None:
    """400 MP: Pillow refuses it at open (DecompressionBombError), header only."""
    from archlab.inference import ImageError

    path = png_header_only(tmp_path / "giant.png", 20000, 20000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match=r"at most 64 megapixels .*400\.0 megapixels"):
            read_image(path)


def test_an_image_under_the_limit_is_read(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "ok.png"
    Image.new("L", (3000, 2000), 0).save(path)
    assert read_image(path).shape == (2000, 3000)


def test_predict_on_a_huge_png_prints_one_line(tmp_path: Path, quickstart, capsys) -> None:
    from archlab.cli import main

    path = png_header_only(tmp_path / "huge.png", 12000, 12000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["predict", str(quickstart.directory), str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "warn" not in captured.err
    assert "megapixels" in captured.err and str(path) in captured.err
