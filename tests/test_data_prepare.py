"""jaxmlp.data.prepare: validation, normalization on the training split, splits, one-hot, subsets."""

import numpy as np
import pytest

from jaxmlp import data
from jaxmlp.data import DatasetError

from helpers import SHARED_MNIST, make_idx_dataset


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([[0.0, np.nan]]), "NaN or infinite"),
        (np.array([[0.0, 300.0]]), r"must lie in \[0, 255\]"),
        (np.array([[-1.0, 3.0]]), r"must lie in \[0, 255\]"),
        (np.zeros((0, 4)), "non-empty"),
    ],
)
def test_validate_images_from_python_api(bad, message):
    with pytest.raises(DatasetError, match=message):
        data.normalize(data.Normalizer(0.5, 0.25), bad)


def test_normalizer_is_fit_on_training_split_only():
    train = np.array([[0, 255], [0, 255]], np.uint8)
    norm = data.fit_normalizer(train)
    assert norm.mean == pytest.approx(0.5) and norm.std == pytest.approx(0.5)
    np.testing.assert_allclose(norm(np.array([[255, 0]], np.uint8)), [[1.0, -1.0]])
    with pytest.raises(DatasetError, match="same value"):
        data.fit_normalizer(np.zeros((3, 4), np.uint8))


def test_split_is_seeded_disjoint_and_complete():
    x = np.arange(100).reshape(100, 1)
    y = np.arange(100) % 10
    a = data.split_train_dev(x, y, 20, seed=3)
    b = data.split_train_dev(x, y, 20, seed=3)
    c = data.split_train_dev(x, y, 20, seed=4)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[2], c[2])
    assert sorted(np.concatenate([a[0][:, 0], a[2][:, 0]]).tolist()) == list(range(100))
    assert a[2].shape == (20, 1)
    with pytest.raises(DatasetError, match="dev size 100"):
        data.split_train_dev(x, y, 100, seed=0)


def test_prepare_rejects_mismatched_and_out_of_range_labels():
    x = np.zeros((10, 4), np.uint8)
    x[:, 0] = 255
    with pytest.raises(DatasetError, match="10 images but 9 labels"):
        data.prepare("t", x, np.zeros(9, np.int32), x, np.zeros(10, np.int32), dev_size=2, seed=0)
    with pytest.raises(DatasetError, match="test labels"):
        data.prepare("t", x, np.zeros(10, np.int32), x, np.full(10, 10), dev_size=2, seed=0)


def test_one_hot_and_back():
    y = np.array([0, 3, 9, 3])
    oh = data.one_hot(y, 10)
    assert oh.shape == (4, 10)
    np.testing.assert_array_equal(np.asarray(oh).sum(1), 1)
    np.testing.assert_array_equal(data.back_one_hot(oh), y)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="../shared/data/mnist-t10k not present")
def test_load_test_split_of_real_mnist_digits():
    ds = data.load_test_split("mnist", SHARED_MNIST, train_size=8000, seed=0)
    assert ds.x_train.shape == (8000, 784) and ds.x_test.shape == (2000, 784) and ds.x_dev.shape[0] == 0
    assert np.bincount(np.concatenate([ds.y_train, ds.y_test])).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    with pytest.raises(DatasetError, match="must leave test examples"):
        data.load_test_split("mnist", SHARED_MNIST, train_size=10_000)


def test_subset_keeps_the_normalizer(tmp_path):
    ds = data.load_dataset("mnist", make_idx_dataset(tmp_path), dev_size=10)
    small = data.subset(ds, 5, 2, 3)
    assert small.x_train.shape[0] == 5 and small.x_dev.shape[0] == 2 and small.x_test.shape[0] == 3
    assert small.normalizer == ds.normalizer


def test_prepare_fits_the_normalizer_on_the_training_split_alone():
    """The training split comes out with mean 0 and std 1 to float32 precision (1e-6), and the dev
    split is far from it: made with a dev set much brighter than the training set, a normalizer fitted
    on train + dev would be off by ≈ 0.3 in the training mean."""
    rng = np.random.default_rng(0)
    n, dev = 200, 50
    images = rng.integers(0, 100, (n, 4, 4)).astype(np.uint8)
    labels = (np.arange(n) % 10).astype(np.int32)
    # the seeded split decides which examples become dev: make exactly those bright
    _, _, dev_images, _ = data.split_train_dev(np.arange(n)[:, None, None], labels, dev, 0)
    images[dev_images.ravel()] += 150
    ds = data.prepare("toy", images, labels, images[:10], labels[:10], dev_size=dev, seed=0)
    x = ds.x_train.astype(np.float64)
    assert abs(x.mean()) < 1e-6 and abs(x.std() - 1) < 1e-6
    assert ds.x_dev.mean() > 1.0  # the bright dev split is not standardized with its own statistics
