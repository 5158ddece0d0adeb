"""A user's own data file → ``Dataset``: ``.npz`` arrays or a ``.csv`` table with a header.

Contract::

    ds = load_file("mine.npz")                        # x_train, y_train[, x_test, y_test]
    ds = load_file("mine.csv", label_column="label")  # every other column a feature; test held out
    ds = load_file(path, dev_size=0, seed=3)          # the splits of Dataset.from_arrays

``.npz``: arrays ``x_train`` (examples, features…) and ``y_train`` (examples,), optionally ``x_test`` and
``y_test`` (both or neither). ``.csv``: a header row, one example per row, numbers only; the column
named ``label_column`` holds the class (integers 0..C−1) and every other column is a feature. What
``Dataset.from_arrays`` checks (shapes, labels, NaN/inf, empty splits, classes without training
examples) applies; a file that cannot be read is one ``DatasetError`` line naming it.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from jaxmlp.data.idx import DatasetError
from jaxmlp.data.prepare import Dataset

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: Path) -> dict:
    """{key: array} of the ``NPZ_KEYS`` in ``path`` (x_train and y_train required)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            found = {k: f[k] for k in NPZ_KEYS if k in f.files}
            others = [k for k in f.files if k not in NPZ_KEYS]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{path}: not a readable .npz file ({e})") from None
    missing = [k for k in ("x_train", "y_train") if k not in found]
    if missing:
        extra = f"; it holds {', '.join(others)}" if others else ""
        raise DatasetError(f"{path}: no array named {' or '.join(missing)} (expected {', '.join(NPZ_KEYS)}){extra}")
    return found


def read_csv(path: Path, label_column: str) -> dict:
    """{"x_train", "y_train"} of a CSV table with a header; the feature columns in file order."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read it as a CSV text file ({e})") from None
    if not rows:
        raise DatasetError(f"{path}: empty file (expected a header row, then one example per row)")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise DatasetError(f"{path}: no column named {label_column!r} in the header ({', '.join(header[:8])}…)")
    numbered = [(i, r) for i, r in enumerate(rows[1:], start=2) if any(c.strip() for c in r)]  # blank lines skipped
    for i, r in numbered:
        if len(r) != len(header):
            raise DatasetError(f"{path}, line {i}: {len(r)} fields, the header has {len(header)}")
    body = [r for _, r in numbered]
    try:
        table = np.array(body, dtype=np.float64).reshape(len(body), len(header))
    except ValueError as e:
        raise DatasetError(f"{path}: every field must be a number ({e})") from None
    label = header.index(label_column)
    return {"x_train": np.delete(table, label, axis=1), "y_train": table[:, label]}


def load_file(
    path, *, label_column: str = "label", dev_size: int | None = None, seed: int = 0, num_classes: int | None = None
) -> Dataset:
    """The Dataset of a ``.npz`` or ``.csv`` file (see the module's contract); its name is the path."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"--data {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = read_npz(path)
    elif suffix == ".csv":
        arrays = read_csv(path, label_column)
    else:
        raise DatasetError(f"{path}: expected a .npz or .csv file, got {suffix or 'no suffix'}")
    return Dataset.from_arrays(
        arrays["x_train"],
        arrays["y_train"],
        arrays.get("x_test"),
        arrays.get("y_test"),
        dev_size=dev_size,
        seed=seed,
        num_classes=num_classes,
        name=str(path),
    )
