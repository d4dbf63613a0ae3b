"""Regenerate src/archlab/data/mnist_sample.npz from the real MNIST IDX files.

The sample: 5,000 train and 1,000 test images drawn uniformly without replacement
(`numpy.random.default_rng(0)`: first the train indices, then the test indices, each sorted),
stored with `numpy.savez_compressed`, then re-zipped with fixed timestamps so the file is
byte-for-byte reproducible (given the same zlib).

Usage: python scripts/make_mnist_sample.py [--source DIR] [--out PATH] [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from archlab.data import load_dataset  # noqa: E402
from archlab.datasets import dataset_info  # noqa: E402

DEFAULT_SOURCE = ROOT.parent / "shared" / "datasets" / "mnist"
DEFAULT_OUT = ROOT / "src" / "archlab" / "data" / "mnist_sample.npz"
SEED = 0
# The sizes the mnist-sample record promises (the loader checks them).
SAMPLE_TRAIN = dataset_info("mnist-sample").train_size
SAMPLE_TEST = dataset_info("mnist-sample").test_size


def build(source: Path) -> bytes:
    """The bytes of the sample .npz drawn from the MNIST files in `source`."""
    full = load_dataset("mnist", source, download=False)
    rng = np.random.default_rng(SEED)
    train_index = np.sort(rng.choice(len(full.y_train), SAMPLE_TRAIN, replace=False))
    test_index = np.sort(rng.choice(len(full.y_test), SAMPLE_TEST, replace=False))
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        x_train=full.x_train[train_index],
        y_train=full.y_train[train_index].astype(np.uint8),
        x_test=full.x_test[test_index],
        y_test=full.y_test[test_index].astype(np.uint8),
        train_index=train_index.astype(np.int32),
        test_index=test_index.astype(np.int32),
    )
    return _normalize_zip(buffer.getvalue())


def _normalize_zip(data: bytes) -> bytes:
    """Rewrite a zip with fixed timestamps and order so equal content gives equal bytes."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as src,
        zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as dst,
    ):
        for name in sorted(src.namelist()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, src.read(name), compresslevel=9)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the sample file; print its size and SHA-256."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="dir of MNIST files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the .npz to write")
    parser.add_argument("--check", action="store_true", help="compare with --out, write nothing")
    args = parser.parse_args(argv)

    data = build(args.source)
    digest = hashlib.sha256(data).hexdigest()
    if args.check:
        same = args.out.is_file() and args.out.read_bytes() == data
        print(f"{args.out}: {'up to date' if same else 'DIFFERS'} (sha256 {digest})")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(args.out)
    print(f"wrote {args.out}: {len(data)} bytes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
