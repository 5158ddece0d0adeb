"""jaxmlp.data: IDX reading and validation, finding and downloading files, splits, batches."""

import gzip
import hashlib
import http.server
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import data
from jaxmlp.data import DatasetError

from conftest import FASHION_DIR, SHARED_MNIST, idx_bytes, make_idx_dataset, write_idx

# ---------------------------------------------------------------------------------------------
# read_idx / read_pair


def test_read_idx_gz_and_raw_agree(tmp_path):
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    a = data.read_idx(write_idx(tmp_path / "a.gz", imgs, gz=True), "images")
    b = data.read_idx(write_idx(tmp_path / "b", imgs, gz=False), "images")
    np.testing.assert_array_equal(a, imgs)
    np.testing.assert_array_equal(b, imgs)


@pytest.mark.parametrize("content, expect, message", [
    (gzip.compress(idx_bytes(np.zeros((5, 2, 2))))[:-12], "images", "corrupt or truncated gzip"),
    (idx_bytes(np.zeros((5, 2, 2)))[:-3], "images", "truncated: header says 20 bytes of data, found 17"),
    (idx_bytes(np.zeros((5, 2, 2))) + b"xx", "images", "trailing bytes"),
    (idx_bytes(np.zeros((5, 2, 2)), magic=2049), "images", "wrong magic number 2049"),
    (idx_bytes(np.zeros(5), magic=2051), "labels", "wrong magic number 2051"),
    (idx_bytes(np.zeros((0, 2, 2))), "images", "zero images"),
    (b"\x00\x00", "labels", "too short"),
    (idx_bytes(np.zeros((5, 2, 2)))[:10], "images", "header truncated"),
])
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


# ---------------------------------------------------------------------------------------------
# Real data


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="../shared/data/mnist-t10k not present")
def test_real_mnist_test_set():
    x, y = data.read_pair(SHARED_MNIST / "t10k-images-idx3-ubyte.gz", SHARED_MNIST / "t10k-labels-idx1-ubyte.gz")
    assert x.shape == (10_000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    train_labels = data.read_idx(SHARED_MNIST / "train-labels-idx1-ubyte.gz", "labels")
    assert train_labels.shape == (60_000,)
    assert np.bincount(train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_loads_from_debian_path(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXMLP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    files = data.find_files("fashion-mnist", allow_download=False)
    assert files["train_images"].parent == FASHION_DIR
    ds = data.load_dataset("fashion-mnist", allow_download=False)
    assert ds.x_train.shape == (50_000, 784) and ds.x_dev.shape == (10_000, 784)
    assert ds.x_test.shape == (10_000, 784)
    assert np.bincount(ds.y_test).tolist() == [1000] * 10  # Fashion-MNIST's test set is balanced
    # normalization uses the training split: its mean is 0 and std 1 there, not exactly elsewhere
    assert abs(ds.x_train.mean()) < 1e-3 and abs(ds.x_train.std() - 1) < 1e-3
    assert ds.x_train.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Finding files


@pytest.mark.parametrize("dotted, gz", [(False, True), (True, False), (False, False), (True, True)])
def test_data_dir_accepts_official_and_seed_names(tmp_path, dotted, gz):
    make_idx_dataset(tmp_path, dotted=dotted, gz=gz)
    ds = data.load_dataset("mnist", tmp_path, dev_size=10, seed=1)
    assert ds.x_train.shape == (50, 16) and ds.x_dev.shape == (10, 16) and ds.x_test.shape == (20, 16)


def test_data_dir_missing_one_file(tmp_path):
    make_idx_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="missing t10k-labels-idx1-ubyte.gz"):
        data.find_files("mnist", tmp_path)


def test_data_dir_must_exist(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        data.find_files("mnist", tmp_path / "nope")


def test_env_var_folder_and_subfolder(tmp_path, monkeypatch):
    make_idx_dataset(tmp_path / "mnist")
    monkeypatch.setenv("JAXMLP_DATA", str(tmp_path))
    assert data.find_files("mnist")["train_images"].parent == tmp_path / "mnist"


def test_nothing_found_and_no_network_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMLP_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DatasetError) as e:
        data.find_files("mnist", mirrors=["http://127.0.0.1:9/"])  # port 9: nothing listens
    msg = str(e.value)
    assert "empty" in msg and "cache" in msg and "--data-dir" in msg and "\n" not in msg


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'"):
        data.find_files("cifar")


# ---------------------------------------------------------------------------------------------
# Downloads from a local server (127.0.0.1 only; no test needs the internet)


class _Server:
    def __init__(self, files: dict, drop: set = frozenset()):
        files, drop = dict(files), set(drop)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                if name not in files:
                    self.send_error(404)
                    return
                body = files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in drop:  # promise the whole body, send half, hang up
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _fake_spec(tmp_path):
    src = make_idx_dataset(tmp_path / "src")
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    spec = data.DatasetSpec(name="fake", mirrors=(), sha256={k: hashlib.sha256(v).hexdigest()
                                                             for k, v in files.items()})
    return spec, files


def test_download_good_files_then_loadable(tmp_path):
    spec, files = _fake_spec(tmp_path)
    server = _Server(files)
    try:
        found = data.download(spec, tmp_path / "cache", mirrors=[server.url])
    finally:
        server.close()
    assert set(found) == set(data.ROLES)
    for p in found.values():
        assert p.read_bytes() == files[p.name]
    assert not list((tmp_path / "cache").glob("*.tmp"))
    x, y = data.read_pair(found["train_images"], found["train_labels"])
    assert x.shape == (60, 4, 4)


def test_download_rejects_hash_mismatch_and_keeps_good_file(tmp_path):
    spec, files = _fake_spec(tmp_path)
    name = "train-images-idx3-ubyte.gz"
    good = files[name]
    corrupted = dict(files, **{name: good[:20] + bytes([good[20] ^ 0xFF]) + good[21:]})  # one bit-flipped byte
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / name).write_bytes(b"previous good copy")
    server = _Server(corrupted)
    try:
        with pytest.raises(DatasetError, match="SHA-256 mismatch"):
            data.download_file(server.url + name, cache / name, spec.sha256[name])
    finally:
        server.close()
    assert (cache / name).read_bytes() == b"previous good copy"
    assert not list(cache.glob("*.tmp"))


def test_download_dropped_connection_never_replaces_file(tmp_path):
    spec, files = _fake_spec(tmp_path)
    name = "train-images-idx3-ubyte.gz"
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / name).write_bytes(b"previous good copy")
    server = _Server(files, drop={name})
    try:
        with pytest.raises(DatasetError, match="download failed|connection closed"):
            data.download_file(server.url + name, cache / name, spec.sha256[name], timeout=5)
    finally:
        server.close()
    assert (cache / name).read_bytes() == b"previous good copy"
    assert not list(cache.glob("*.tmp"))


def test_download_falls_back_to_second_mirror(tmp_path):
    spec, files = _fake_spec(tmp_path)
    bad = _Server({k: b"junk" for k in files})
    good = _Server(files)
    try:
        found = data.download(spec, tmp_path / "cache", mirrors=[bad.url, good.url])
    finally:
        bad.close()
        good.close()
    assert found["test_labels"].read_bytes() == files["t10k-labels-idx1-ubyte.gz"]


def test_find_files_downloads_into_cache(tmp_path, monkeypatch):
    spec, files = _fake_spec(tmp_path)
    monkeypatch.setitem(data.DATASETS, "fake", spec)
    monkeypatch.delenv("JAXMLP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    server = _Server(files)
    try:
        found = data.find_files("fake", mirrors=[server.url])
    finally:
        server.close()
    assert found["train_images"].parent == tmp_path / "xdg" / "jaxmlp" / "fake"
    # a second call finds the cache and needs no server
    assert data.find_files("fake", allow_download=False) == found


def test_published_hashes_are_sha256_hex():
    for spec in data.DATASETS.values():
        assert set(spec.sha256) == {data.candidate_names(r)[0] for r in data.ROLES}
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in spec.sha256.values())


# ---------------------------------------------------------------------------------------------
# Arrays: validation, normalization, split, one-hot, batches


@pytest.mark.parametrize("bad, message", [
    (np.array([[0.0, np.nan]]), "NaN or infinite"),
    (np.array([[0.0, 300.0]]), r"must lie in \[0, 255\]"),
    (np.array([[-1.0, 3.0]]), r"must lie in \[0, 255\]"),
    (np.zeros((0, 4)), "non-empty"),
])
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


def test_batch_indices_shape_remainder_and_permutation():
    key = jax.random.PRNGKey(0)
    idx = np.asarray(data.batch_indices(key, 103, 10))
    assert idx.shape == (10, 10) and idx.dtype == np.int32
    assert len(set(idx.ravel().tolist())) == 100  # no repeats; 3 examples left out this epoch
    other = np.asarray(data.batch_indices(jax.random.PRNGKey(1), 103, 10))
    assert not np.array_equal(idx, other)
    jitted = jax.jit(data.batch_indices, static_argnums=(1, 2))(key, 103, 10)
    np.testing.assert_array_equal(jitted, idx)
    with pytest.raises(ValueError, match="larger than the 5 training examples"):
        data.batch_indices(key, 5, 10)


@pytest.mark.parametrize("n", [1, 5, 103, 50_000, 65_537])
def test_permutation_is_a_permutation_jitted_and_eager(n):
    key = jax.random.PRNGKey(3)
    perm = np.asarray(data.permutation(key, n))
    assert perm.dtype == np.int32 and perm.shape == (n,)
    np.testing.assert_array_equal(np.sort(perm), np.arange(n))
    np.testing.assert_array_equal(jax.jit(data.permutation, static_argnums=1)(key, n), perm)


@pytest.mark.slow  # two sorts of 2**20 elements: ≈ 5 s on 2 cores
def test_permutation_above_2_to_the_20_is_jax_random_permutation():
    """Past 2**20 elements fewer than 12 key bits would be left: it hands over to jax.random.permutation."""
    key, n = jax.random.PRNGKey(5), 2 ** 20 + 1
    ours = jax.jit(data.permutation, static_argnums=1)
    np.testing.assert_array_equal(ours(key, n), jax.jit(jax.random.permutation, static_argnums=1)(key, n))
    edge = np.asarray(ours(key, 2 ** 20))  # the packed path's largest n: 12-bit keys, 5 rounds
    np.testing.assert_array_equal(np.sort(edge), np.arange(2 ** 20))


def test_permutation_equals_rounds_of_stable_key_sorts():
    """The packed single-array sort is exactly jax.random.permutation's algorithm (stable sorts by
    fresh keys) with (32 - b)-bit keys. At n = 50,000 the 16-bit keys tie ~19,000 pairs per round,
    so a packing that broke ties out of order, or kept position bits in the key, would differ."""
    n, key = 50_000, jax.random.PRNGKey(7)
    index_bits = (n - 1).bit_length()
    keys = jax.random.split(key, 3)  # rounds = ceil(3 ln n / (16 ln 2)) = 3
    expect = np.arange(n)
    for k in keys:
        sort_keys = np.asarray(jax.random.bits(k, (n,), jnp.uint32)) >> index_bits
        assert len(np.unique(sort_keys)) < n  # ties do occur
        expect = expect[np.argsort(sort_keys, kind="stable")]
    np.testing.assert_array_equal(data.permutation(key, n), expect)


def test_permutation_is_uniform_over_all_orders():
    """n = 5: all 120 orders, 60,000 draws (500 expected each). Chi-square with 119 degrees of freedom
    has mean 119 and sd 15.4; P(chi2 > 200) ≈ 5e-6 (Wilson-Hilferty), so only a real bias fails it
    (the keys are fixed, so the test is deterministic)."""
    perms = np.asarray(jax.jit(jax.vmap(lambda k: data.permutation(k, 5)))(
        jax.random.split(jax.random.PRNGKey(0), 60_000)))
    codes = perms @ (5 ** np.arange(5))
    _, counts = np.unique(codes, return_counts=True)
    assert len(counts) == 120
    chi2 = np.sum((counts - 500.0) ** 2 / 500.0)
    assert chi2 < 200, chi2


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="../shared/data/mnist-t10k not present")
def test_load_test_split_of_real_mnist_digits():
    ds = data.load_test_split("mnist", SHARED_MNIST, train_size=8000, seed=0)
    assert ds.x_train.shape == (8000, 784) and ds.x_test.shape == (2000, 784) and ds.x_dev.shape[0] == 0
    assert np.bincount(np.concatenate([ds.y_train, ds.y_test])).tolist() == \
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    with pytest.raises(DatasetError, match="must leave test examples"):
        data.load_test_split("mnist", SHARED_MNIST, train_size=10_000)


def test_subset_keeps_the_normalizer(tmp_path):
    ds = data.load_dataset("mnist", make_idx_dataset(tmp_path), dev_size=10)
    small = data.subset(ds, 5, 2, 3)
    assert small.x_train.shape[0] == 5 and small.x_dev.shape[0] == 2 and small.x_test.shape[0] == 3
    assert small.normalizer == ds.normalizer
