"""IDX files (LeCun's MNIST format), gzipped or raw, read and validated.

Contract::

    images = read_idx(path, expect="images")          # (n, rows, cols) uint8
    labels = read_idx(path, expect="labels")          # (n,) uint8
    images, labels = read_pair(images_path, labels_path)   # counts match, labels < 10; labels int32

The gzip magic bytes decide whether a file is compressed, not its suffix. Every failure raises
``DatasetError`` whose message names the file and the problem (missing, truncated gzip, wrong magic
number, negative or zero dimension, payload shorter or longer than the header says, label out of range).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
NUM_CLASSES = 10


class DatasetError(Exception):
    """Data could not be found, fetched or read; the message says which file and why."""


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f) as g:
                    return g.read()
            return f.read()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DatasetError(f"{path}: corrupt or truncated gzip data ({e})") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None


def read_idx(path: str | os.PathLike, expect: str) -> np.ndarray:
    """Read one IDX file (gz or raw); ``expect`` is "images" (n, rows, cols) or "labels" (n,).

    Checks the magic number, the header, and that the payload is exactly as long as the header says.
    """
    path = Path(path)
    if expect not in ("images", "labels"):
        raise ValueError(f"expect must be 'images' or 'labels', not {expect!r}")
    data = _read_bytes(path)
    magic_wanted, ndim = (IMAGES_MAGIC, 3) if expect == "images" else (LABELS_MAGIC, 1)
    if len(data) < 4:
        raise DatasetError(f"{path}: too short to be an IDX file ({len(data)} bytes)")
    (magic,) = struct.unpack(">i", data[:4])
    if magic != magic_wanted:
        raise DatasetError(f"{path}: wrong magic number {magic} (IDX {expect} files start with {magic_wanted})")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DatasetError(f"{path}: header truncated ({len(data)} of {header_len} bytes)")
    dims = struct.unpack(">" + "i" * ndim, data[4:header_len])
    if any(d < 0 for d in dims):
        raise DatasetError(f"{path}: negative dimension in header {dims}")
    if dims[0] == 0:
        raise DatasetError(f"{path}: the file holds zero {expect}")
    payload = int(np.prod(dims))
    got = len(data) - header_len
    if got != payload:
        what = "truncated" if got < payload else "has trailing bytes"
        raise DatasetError(f"{path}: {what}: header says {payload} bytes of data, found {got}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def read_pair(images_path, labels_path, num_classes: int = NUM_CLASSES):
    """Read an images file and its labels file and check that they belong together."""
    images = read_idx(images_path, "images")
    labels = read_idx(labels_path, "labels")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels")
    bad = labels >= num_classes
    if bad.any():
        i = int(np.argmax(bad))
        raise DatasetError(f"{labels_path}: label {int(labels[i])} at index {i} is not < {num_classes} classes")
    return images, labels.astype(np.int32)
