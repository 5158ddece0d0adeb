"""jaxmlp.data.idx: reading and validating IDX files, gzipped or raw, official and dotted names."""

import gzip

import numpy as np
import pytest

from jaxmlp import data
from jaxmlp.data import DatasetError

from helpers import SHARED_MNIST, idx_bytes, write_idx


def test_read_idx_gz_and_raw_agree(tmp_path):
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    a = data.read_idx(write_idx(tmp_path / "a.gz", imgs, gz=True), "images")
    b = data.read_idx(write_idx(tmp_path / "b", imgs, gz=False), "images")
    np.testing.assert_array_equal(a, imgs)
    np.testing.assert_array_equal(b, imgs)


@pytest.mark.parametrize(
    "content, expect, message",
    [
        (gzip.compress(idx_bytes(np.zeros((5, 2, 2))), mtime=0)[:-12], "images", "corrupt or truncated gzip"),
        (idx_bytes(np.zeros((5, 2, 2)))[:-3], "images", "truncated: header says 20 bytes of data, found 17"),
        (idx_bytes(np.zeros((5, 2, 2))) + b"xx", "images", "trailing bytes"),
        (idx_bytes(np.zeros((5, 2, 2)), magic=2049), "images", "wrong magic number 2049"),
        (idx_bytes(np.zeros(5), magic=2051), "labels", "wrong magic number 2051"),
        (idx_bytes(np.zeros((0, 2, 2))), "images", "zero images"),
        (b"\x00\x00", "labels", "too short"),
        (idx_bytes(np.zeros((5, 2, 2)))[:10], "images", "header truncated"),
    ],
    ids=lambda v: v if isinstance(v, str) else "file",  # named by their messages: the same on every xdist worker
)
def test_read_idx_errors_name_file_and_problem(tmp_path, content, expect, message):
    path = tmp_path / "bad-file"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as e:
        data.read_idx(path, expect)
    assert str(path) in str(e.value)


def test_not_gzip_but_gz_suffix_is_read_by_content(tmp_path):
    # a raw file wrongly named .gz is read by its magic bytes, not its suffix
    path = tmp_path / "x.gz"
    path.write_bytes(idx_bytes(np.ones(3)))
    np.testing.assert_array_equal(data.read_idx(path, "labels"), [1, 1, 1])


def test_garbage_file_is_wrong_magic(tmp_path):
    path = tmp_path / "garbage"
    path.write_bytes(b"this is not an idx file at all")
    with pytest.raises(DatasetError, match="wrong magic number"):
        data.read_idx(path, "images")


def test_read_pair_checks_counts_and_labels(tmp_path):
    imgs = write_idx(tmp_path / "i", np.zeros((4, 2, 2)))
    with pytest.raises(DatasetError, match="has 4 images but .* has 3 labels"):
        data.read_pair(imgs, write_idx(tmp_path / "l3", np.zeros(3)))
    with pytest.raises(DatasetError, match="label 12 at index 2 is not < 10 classes"):
        data.read_pair(imgs, write_idx(tmp_path / "l4", np.array([0, 1, 12, 3])))
    x, y = data.read_pair(imgs, write_idx(tmp_path / "ok", np.array([0, 1, 9, 3])))
    assert x.shape == (4, 2, 2) and y.dtype == np.int32


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="../shared/data/mnist-t10k not present")
def test_real_mnist_test_set():
    x, y = data.read_pair(SHARED_MNIST / "t10k-images-idx3-ubyte.gz", SHARED_MNIST / "t10k-labels-idx1-ubyte.gz")
    assert x.shape == (10_000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    train_labels = data.read_idx(SHARED_MNIST / "train-labels-idx1-ubyte.gz", "labels")
    assert train_labels.shape == (60_000,)
    assert np.bincount(train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
