"""From raw images and labels to normalized, split, device-ready arrays.

Contract::

    ds = load_dataset("fashion-mnist", data_dir=None, dev_size=10_000, seed=0)
    ds.x_train                                         # (50_000, 784) float32, normalized
    ds.y_train                                         # (50_000,) int32
    x = ds.normalizer(raw_images)                      # the training split's transform
    ds_small = subset(ds, 2000, 500, 500)

Normalization (``Normalizer``): pixels are scaled to [0, 1] and then standardized with ONE mean and
ONE standard deviation computed over every pixel of the training split only (dev and test never leak
in). A scalar, not per-pixel, statistic: MNIST's border pixels are always 0 and a per-pixel std would
divide by zero. The two numbers are saved in every checkpoint so evaluation uses the same transform.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxmlp.data.idx import NUM_CLASSES, DatasetError, read_pair
from jaxmlp.data.sources import candidate_names, find_files, find_in


class Normalizer(NamedTuple):
    """x_normalized = (pixels / 255 - mean) / std, with mean and std from the training split."""

    mean: float
    std: float

    def __call__(self, images) -> np.ndarray:
        return normalize(self, images)


def validate_images(images, what: str = "images") -> np.ndarray:
    """Check raw pixel values from the Python API: finite, in [0, 255]; returns (n, features) float32."""
    x = np.asarray(images)
    if x.ndim < 2 or x.shape[0] == 0:
        raise DatasetError(f"{what}: expected a non-empty (n, ...) array, got shape {x.shape}")
    x = x.reshape(x.shape[0], -1)
    if x.dtype != np.uint8:
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise DatasetError(f"{what}: contains NaN or infinite pixel values")
        if x.min() < 0 or x.max() > 255:
            raise DatasetError(f"{what}: pixel values must lie in [0, 255], found [{x.min():g}, {x.max():g}]")
    return x.astype(np.float32)


def fit_normalizer(train_images) -> Normalizer:
    x = validate_images(train_images, "training images") / 255.0
    mean = float(x.mean(dtype=np.float64))
    std = float(x.std(dtype=np.float64))
    if not std > 0:
        raise DatasetError("training images: every pixel has the same value; cannot standardize")
    return Normalizer(mean, std)


def normalize(norm: Normalizer, images) -> np.ndarray:
    """(n, ...) raw pixels -> (n, features) float32 standardized with the training statistics."""
    x = validate_images(images)
    return ((x / 255.0 - np.float32(norm.mean)) / np.float32(norm.std)).astype(np.float32)


def _normalize_split(norm: Normalizer, images) -> np.ndarray:
    """``norm(images)``, or an empty (0, features) array for an empty split (e.g. no dev set)."""
    images = np.asarray(images)
    if images.shape[0] == 0:
        return np.zeros((0, int(np.prod(images.shape[1:]))), np.float32)
    return norm(images)


def one_hot(labels, num_classes: int = NUM_CLASSES):
    """(n,) integer labels -> (n, num_classes) one-hot rows (works on NumPy and JAX arrays)."""
    labels = jnp.asarray(labels)
    return (labels[:, None] == jnp.arange(num_classes)[None, :]).astype(jnp.float32)


def back_one_hot(y):
    """Inverse of ``one_hot`` (the seed's name): (n, num_classes) -> (n,) int32 argmax."""
    return jnp.argmax(jnp.asarray(y), axis=-1).astype(jnp.int32)


def split_train_dev(images, labels, dev_size: int, seed: int):
    """Seeded shuffle of the training set, then the last ``dev_size`` examples become dev."""
    n = images.shape[0]
    if not 0 <= dev_size < n:
        raise DatasetError(f"dev size {dev_size} must be in [0, {n - 1}] for {n} training examples")
    perm = np.random.default_rng(seed).permutation(n)
    train, dev = perm[: n - dev_size], perm[n - dev_size :]
    return images[train], labels[train], images[dev], labels[dev]


class Dataset(NamedTuple):
    name: str
    x_train: np.ndarray  # (n_train, features) float32, normalized
    y_train: np.ndarray  # (n_train,) int32
    x_dev: np.ndarray
    y_dev: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    normalizer: Normalizer
    num_classes: int


def prepare(
    name, train_images, train_labels, test_images, test_labels, *, dev_size, seed, num_classes=NUM_CLASSES
) -> Dataset:
    """Split, fit the normalizer on the training split, and normalize every split."""
    for what, y in (("training labels", train_labels), ("test labels", test_labels)):
        y = np.asarray(y)
        if y.ndim != 1 or (y.size and (y.min() < 0 or y.max() >= num_classes)):
            raise DatasetError(f"{what}: expected (n,) integers in [0, {num_classes})")
    for what, x, y in (("training", train_images, train_labels), ("test", test_images, test_labels)):
        if len(x) != len(y):
            raise DatasetError(f"{what} set: {len(x)} images but {len(y)} labels")
    xtr, ytr, xdev, ydev = split_train_dev(np.asarray(train_images), np.asarray(train_labels, np.int32), dev_size, seed)
    norm = fit_normalizer(xtr)
    return Dataset(
        name,
        norm(xtr),
        ytr,
        _normalize_split(norm, xdev),
        ydev,
        norm(test_images),
        np.asarray(test_labels, np.int32),
        norm,
        num_classes,
    )


def load_dataset(
    name: str = "fashion-mnist",
    data_dir=None,
    *,
    dev_size: int = 10_000,
    seed: int = 0,
    allow_download: bool = True,
    mirrors=None,
) -> Dataset:
    """Find or fetch dataset ``name``, read and validate its four files, split and normalize."""
    files = find_files(name, data_dir, allow_download=allow_download, mirrors=mirrors)
    xtr, ytr = read_pair(files["train_images"], files["train_labels"])
    xte, yte = read_pair(files["test_images"], files["test_labels"])
    if xtr.shape[1:] != xte.shape[1:]:
        raise DatasetError(f"{files['test_images']}: image size {xte.shape[1:]} differs from training {xtr.shape[1:]}")
    return prepare(name, xtr, ytr, xte, yte, dev_size=dev_size, seed=seed)


def load_test_split(
    name: str = "mnist", data_dir=None, *, train_size: int = 8000, dev_size: int = 0, seed: int = 0
) -> Dataset:
    """A dataset made from the official TEST files alone, for machines that only have those (such
    as the real MNIST t10k set here): a seeded shuffle of the 10k images into ``train_size`` train,
    ``dev_size`` dev, and the rest test. Only the two t10k files are needed."""
    folder = Path(data_dir) if data_dir is not None else None
    if folder is None:
        raise DatasetError("load_test_split needs the folder holding the t10k files (data_dir)")
    found = find_in(folder) if folder.is_dir() else None
    if not found or "test_images" not in found or "test_labels" not in found:
        raise DatasetError(
            f"{folder}: missing {candidate_names('test_images')[0]} or {candidate_names('test_labels')[0]}"
        )
    x, y = read_pair(found["test_images"], found["test_labels"])
    n = x.shape[0]
    if not (0 < train_size and train_size + dev_size < n):
        raise DatasetError(f"train {train_size} + dev {dev_size} must leave test examples out of {n}")
    perm = np.random.default_rng(seed).permutation(n)
    tr, dv, te = perm[:train_size], perm[train_size : train_size + dev_size], perm[train_size + dev_size :]
    norm = fit_normalizer(x[tr])
    return Dataset(
        f"{name}-t10k-split",
        norm(x[tr]),
        y[tr],
        _normalize_split(norm, x[dv]),
        y[dv],
        norm(x[te]),
        y[te],
        norm,
        NUM_CLASSES,
    )


def subset(ds: Dataset, n_train: int, n_dev: int | None = None, n_test: int | None = None) -> Dataset:
    """The first examples of each split (quick runs); the normalizer is kept as it was."""
    n_dev = ds.x_dev.shape[0] if n_dev is None else n_dev
    n_test = ds.x_test.shape[0] if n_test is None else n_test
    return ds._replace(
        x_train=ds.x_train[:n_train],
        y_train=ds.y_train[:n_train],
        x_dev=ds.x_dev[:n_dev],
        y_dev=ds.y_dev[:n_dev],
        x_test=ds.x_test[:n_test],
        y_test=ds.y_test[:n_test],
    )
