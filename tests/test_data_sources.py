"""jaxmlp.data.sources: finding a dataset's files and downloading them (from a local server only)."""

import hashlib
import http.server
import threading

import numpy as np
import pytest

from jaxmlp import data
from jaxmlp.data import DatasetError

from helpers import FASHION_DIR, make_idx_dataset


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
    spec = data.DatasetSpec(
        name="fake", mirrors=(), sha256={k: hashlib.sha256(v).hexdigest() for k, v in files.items()}
    )
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
