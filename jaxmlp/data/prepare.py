"""From raw images and labels to normalized, split, device-ready arrays.

Contract::

    ds = load_dataset("fashion-mnist", data_dir=None, dev_size=10_000, seed=0)
    ds.x_train                                         # (50_000, 784) float32, normalized
    ds.y_train                                         # (50_000,) int32
    x = ds.normalizer(raw_images)                      # the training split's transform
    ds_small = subset(ds, 2000, 500, 500)
    ds = Dataset.from_arrays(x, y, x_test, y_test, dev_size=None, seed=0)  # any features, any classes

Normalization (``Normalizer``): pixels are scaled to [0, 1] and then standardized with ONE mean and
ONE standard deviation computed over every pixel of the training split only (dev and test never leak
in). A scalar, not per-pixel, statistic: MNIST's border pixels are always 0 and a per-pixel std would
divide by zero. The two numbers are saved in every checkpoint so evaluation uses the same transform.
A user's own features (``Dataset.from_arrays``) are on no common scale: ``Standardizer`` centres and
scales each feature by its own training mean and standard deviation (a constant feature by 1).
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


class Standardizer(NamedTuple):
    """x_normalized = (x - mean) / std per feature, mean and std (tuples, one per feature) from the
    training split; a feature constant on it has std 1 (it becomes 0, not NaN)."""

    mean: tuple
    std: tuple

    def __call__(self, features) -> np.ndarray:
        x = validate_features(features, "features")
        if x.shape[1] != len(self.mean):
            raise DatasetError(f"features: {x.shape[1]} columns, the model was trained on {len(self.mean)}")
        return ((x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)).astype(np.float32)


def fit_standardizer(train_features) -> Standardizer:
    x = validate_features(train_features, "training features").astype(np.float64)
    std = x.std(axis=0)
    return Standardizer(tuple(x.mean(axis=0).tolist()), tuple(np.where(std > 0, std, 1.0).tolist()))


def normalizer_from_dict(d: dict):
    """The inverse of ``normalizer._asdict()`` as checkpoints store it: per-feature lists are a
    ``Standardizer``, two numbers the pixel ``Normalizer``."""
    if isinstance(d.get("mean"), list | tuple):
        return Standardizer(tuple(d["mean"]), tuple(d["std"]))
    return Normalizer(float(d["mean"]), float(d["std"]))


def validate_features(features, what: str) -> np.ndarray:
    """(n, ...) finite numbers → (n, features) float32; DatasetError naming ``what`` otherwise."""
    x = np.asarray(features)
    if x.ndim < 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DatasetError(f"{what}: expected a non-empty (examples, features) array, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise DatasetError(f"{what}: expected real numbers, got dtype {x.dtype}")
    x = x.reshape(x.shape[0], -1).astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DatasetError(
            f"{what}: {int(bad.sum())} NaN or infinite values (the first at example {row}, feature {col})"
        )
    return x


def validate_labels(labels, what: str, n: int, num_classes: int | None = None) -> np.ndarray:
    """(n,) integer class labels (integer-valued floats accepted) in [0, num_classes) → int32."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise DatasetError(f"{what}: expected {n} labels, one per example, got shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DatasetError(f"{what}: expected integer class labels, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating) and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise DatasetError(f"{what}: expected integer class labels 0, 1, …, found {float(y[y != np.round(y)][0]):g}")
    if y.size and y.min() < 0:
        raise DatasetError(f"{what}: class labels start at 0, found {int(y.min())}")
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise DatasetError(f"{what}: label {int(y.max())} is outside 0..{num_classes - 1} ({num_classes} classes)")
    return y.astype(np.int32)


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
    normalizer: Normalizer  # or a Standardizer (from_arrays)
    num_classes: int

    @classmethod
    def from_arrays(
        cls,
        x_train,
        y_train,
        x_test=None,
        y_test=None,
        *,
        dev_size: int | None = None,
        test_size: int | None = None,
        num_classes: int | None = None,
        seed: int = 0,
        name: str = "arrays",
    ) -> Dataset:
        """A Dataset from your own (examples, features) numbers and integer labels 0..C−1.

        ``dev_size`` examples (default: a tenth of the training set, at least 1; 0: no dev split) are
        held out of train by a seeded shuffle (``split_train_dev``); without ``x_test`` a test split of
        ``test_size`` (the same default) is held out first, from another seeded shuffle. Each feature is
        standardized with the training split's statistics (``Standardizer``). ``num_classes``: default
        the largest label + 1. DatasetError, one line, for: shapes that do not match, labels that are
        not integers or lie outside 0..C−1, NaN/inf features, an empty split, a class with no training
        example."""
        x = validate_features(x_train, "training features")
        y = validate_labels(y_train, "training labels", x.shape[0], num_classes)
        if (x_test is None) != (y_test is None):
            raise DatasetError("give x_test and y_test together, or neither (a test split is then held out)")
        tenth = lambda n: max(1, n // 10)  # noqa: E731
        if x_test is None:
            test_size = tenth(x.shape[0]) if test_size is None else test_size
            if not 0 < test_size < x.shape[0]:
                raise DatasetError(f"test size {test_size} must be in [1, {x.shape[0] - 1}] for {x.shape[0]} examples")
            x, y, xte, yte = split_train_dev(x, y, test_size, seed + 1)
        else:
            xte = validate_features(x_test, "test features")
            yte = validate_labels(y_test, "test labels", xte.shape[0], num_classes)
            if xte.shape[1] != x.shape[1]:
                raise DatasetError(f"test features: {xte.shape[1]} columns, training has {x.shape[1]}")
        if xte.shape[0] == 0:
            raise DatasetError("the test split is empty: give test examples or test_size ≥ 1")
        classes = int(max(y.max(), yte.max())) + 1 if num_classes is None else num_classes
        if classes < 2:
            raise DatasetError(f"a classifier needs at least 2 classes, the labels hold {classes}")
        dev_size = tenth(x.shape[0]) if dev_size is None else dev_size
        xtr, ytr, xdev, ydev = split_train_dev(x, y, dev_size, seed)
        missing = sorted(set(range(classes)) - set(np.unique(ytr).tolist()))
        if missing:
            named = ", ".join(map(str, missing[:5])) + (", …" if len(missing) > 5 else "")
            raise DatasetError(
                f"class {named} has no training example: every class 0..{classes - 1} needs one (relabel the "
                "classes as 0..C−1, or give more data)"
            )
        norm = fit_standardizer(xtr)
        dev = norm(xdev) if xdev.shape[0] else np.zeros((0, xtr.shape[1]), np.float32)
        return cls(name, norm(xtr), ytr, dev, ydev, norm(xte), yte, norm, classes)


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
