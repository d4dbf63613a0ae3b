"""archlab.data.idx: IDX parsing, cheap size checks, and the bounded read (gzip bombs)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from archlab.data import check_file, parse_idx, read_idx
from archlab.datasets import dataset_info
from archlab.errors import DataError

LABELS = dataset_info("mnist").files[3]  # t10k labels: magic 2049, 10000 items
IMAGES = dataset_info("mnist").files[0]  # train images: 47,040,016 bytes decompressed


def test_idx_header_validation() -> None:
    good = (2049).to_bytes(4, "big") + (10000).to_bytes(4, "big") + bytes(10000)
    assert parse_idx(good, "x", LABELS).shape == (10000,)
    with pytest.raises(DataError, match="magic number 2051"):
        parse_idx((2051).to_bytes(4, "big") + good[4:], "x", LABELS)
    with pytest.raises(DataError, match="bytes, expected 10008"):
        parse_idx(good[:-1], "x", LABELS)
    with pytest.raises(DataError, match="items, expected 10000"):
        parse_idx(good[:4] + (9999).to_bytes(4, "big") + good[8:-1], "x", LABELS)
    with pytest.raises(DataError, match="too short"):
        parse_idx(b"\0\0", "x", LABELS)
    images = dataset_info("mnist").files[2]
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (10000, 28, 27))
    with pytest.raises(DataError, match=r"shape \(10000, 28, 27\), expected \(10000, 28, 28\)"):
        parse_idx(header + bytes(10000 * 28 * 27), "x", images)


def test_check_file_reads_sizes_only(tmp_path: Path) -> None:
    content = (2049).to_bytes(4, "big") + (10000).to_bytes(4, "big") + bytes(10000)
    plain = tmp_path / LABELS.name
    plain.write_bytes(content)
    check_file(plain, LABELS)  # right size: passes without reading
    plain.write_bytes(content[:-1])
    with pytest.raises(DataError, match=r"10,007 bytes, expected 10,008"):
        check_file(plain, LABELS)
    gz = tmp_path / LABELS.gz_name
    gz.write_bytes(gzip.compress(content))
    check_file(gz, LABELS)
    gz.write_bytes(gzip.compress(content + b"x"))
    with pytest.raises(DataError, match=r"gzip trailer records 10,009 decompressed bytes, "
                       r"expected 10,008"):
        check_file(gz, LABELS)
    gz.write_bytes(b"PK\x03\x04" + bytes(100))  # a zip, not a gzip
    with pytest.raises(DataError, match="not a gzip file"):
        check_file(gz, LABELS)


def test_read_stops_at_the_expected_size(tmp_path: Path) -> None:
    longer = tmp_path / LABELS.gz_name
    good = (2049).to_bytes(4, "big") + (10000).to_bytes(4, "big") + bytes(10000)
    longer.write_bytes(gzip.compress(good + bytes(5000)))
    with pytest.raises(DataError, match="decompresses to more than the 10,008 bytes"):
        read_idx(longer, LABELS)
    shorter = tmp_path / "short" / LABELS.gz_name
    shorter.parent.mkdir()
    shorter.write_bytes(gzip.compress(good[:-8]))
    with pytest.raises(DataError, match="10,000 bytes of content, expected 10,008"):
        read_idx(shorter, LABELS)
    garbage = tmp_path / "garbage" / LABELS.gz_name
    garbage.parent.mkdir()
    garbage.write_bytes(gzip.compress(good)[:-8] + b"\0" * 8)  # CRC and size zeroed
    with pytest.raises(DataError, match="not a valid gzip file"):
        read_idx(garbage, LABELS)


def write_bomb(path: Path, size: int) -> None:
    """``size`` bytes of zeros as a gzip file: one 8 MiB member repeated (gzip readers
    concatenate members), so writing it takes milliseconds."""
    member = gzip.compress(bytes(8 * 2**20), compresslevel=9)
    with path.open("wb") as out:
        for _ in range(size // (8 * 2**20)):
            out.write(member)


# Reads the bomb as the loader would, then reports how far the read raised the process's peak
# RSS (over the peak after the imports), the time taken and the error.
_PROBE = """
import json, resource, sys, time
from pathlib import Path
from archlab.data import read_idx
from archlab.datasets import dataset_info
from archlab.errors import DataError
f = dataset_info("mnist").files[0]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # peak after the imports
start = time.perf_counter()
try:
    read_idx(Path(sys.argv[1]), f)
    error = None
except DataError as exc:
    error = str(exc)
print(json.dumps({"error": error, "seconds": time.perf_counter() - start,
                  "growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
                  / 1024}))
"""


def test_gzip_bomb_is_refused_quickly_in_bounded_memory(tmp_path: Path) -> None:
    bomb = tmp_path / IMAGES.gz_name
    decompressed = 256 * 2**20  # 256 MiB of zeros in ~250 kB on disk
    write_bomb(bomb, decompressed)
    assert bomb.stat().st_size < 2**20
    # gzip records the size modulo 2**32: make the trailer lie, as a crafted bomb would, so
    # that only the bounded read can catch it.
    data = bytearray(bomb.read_bytes())
    data[-4:] = IMAGES.size.to_bytes(4, "little")
    bomb.write_bytes(bytes(data))
    check_file(bomb, IMAGES)  # the cheap check is fooled...

    probe = subprocess.run([sys.executable, "-c", _PROBE, str(bomb)], capture_output=True,
                           text=True, timeout=120, check=True)
    result = json.loads(probe.stdout)
    assert result["error"] is not None and "\n" not in result["error"]
    assert result["error"].startswith(f"{bomb}: decompresses to more than the 47,040,016 "
                                      "bytes of train-images-idx3-ubyte")
    # ...but reading stops after the 47 MB (45 MiB) the file should hold: the peak grows by
    # about that, far from the 256 MiB it expands to.
    assert result["growth_mib"] < 100, result
    # Decompressing 47 MB takes a fraction of a second; all of it would take seconds.
    assert result["seconds"] < 5, result


def test_corrupt_deflate_stream_is_one_line(tmp_path: Path) -> None:
    content = (2049).to_bytes(4, "big") + (10000).to_bytes(4, "big") + bytes(10000)
    raw = bytearray(gzip.compress(content))
    raw[10] = 0xFF  # the first deflate block now has the reserved block type 11
    path = tmp_path / LABELS.gz_name
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as info:
        read_idx(path, LABELS)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    assert isinstance(info.value.__cause__, (zlib.error, EOFError, OSError))


def test_read_of_real_mnist_is_fast_and_writeable(mnist_dir: Path) -> None:
    start = time.perf_counter()
    x = read_idx(mnist_dir / IMAGES.gz_name, IMAGES)
    assert x.shape == (60000, 28, 28) and x.flags.writeable
    assert time.perf_counter() - start < 30  # generous: a shared 2-core machine
