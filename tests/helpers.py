"""Helpers shared by the tests, imported as a module (fixtures live in conftest.py): where the data
is, tiny IDX writers, tree comparison, small training configurations."""

import gzip
import struct
from pathlib import Path

import jax
import numpy as np

from jaxmlp import step
from jaxmlp.mlp import MLPConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist-t10k"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def small_tc(**kw):
    model = kw.pop("model", MLPConfig(sizes=(16, 32, 10)))
    return step.TrainConfig(model=model, batch_size=kw.pop("batch_size", 50), **kw)


def leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    array = np.asarray(array, np.uint8)
    if magic is None:
        magic = 2051 if array.ndim == 3 else 2049
    return struct.pack(">i", magic) + struct.pack(">" + "i" * array.ndim, *array.shape) + array.tobytes()


def write_idx(path: Path, array, *, gz: bool = True, magic=None) -> Path:
    raw = idx_bytes(array, magic)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def make_idx_dataset(
    folder: Path, n_train=60, n_test=20, side=4, classes=10, seed=0, *, dotted=False, gz=True, separable=True
):
    """Four IDX files of a small learnable problem: each class lights its own pixel block."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, classes, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, side, side)).astype(np.uint8)
        if separable:
            flat = x.reshape(n, -1)
            flat[np.arange(n), y % (side * side)] = 255
        return x, y

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    sep = "." if dotted else "-"
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images{sep}idx3-ubyte{ext}", xtr, gz=gz)
    write_idx(folder / f"train-labels{sep}idx1-ubyte{ext}", ytr, gz=gz)
    write_idx(folder / f"t10k-images{sep}idx3-ubyte{ext}", xte, gz=gz)
    write_idx(folder / f"t10k-labels{sep}idx1-ubyte{ext}", yte, gz=gz)
    return folder


def tree_rel_diff(a, b) -> float:
    from jaxmlp.gradcheck import relative_difference

    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    return max(relative_difference(x, y) for x, y in zip(la, lb))
