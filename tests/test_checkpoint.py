"""Checkpoints: round trip, atomic writes, and refusal of bad files (truncated, pickled, foreign, newer)."""

import json
import pickle
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import checkpoint
from jaxmlp.checkpoint import CheckpointError


def tree():
    return ({"W": jnp.ones((3, 2)), "b": jnp.zeros(2)}, {"W": jnp.arange(4.0).reshape(2, 2)})


def test_round_trip(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"train": tree()}, {"epoch": 3})
    meta, arrays = checkpoint.load(path)
    assert meta == {"format_version": checkpoint.FORMAT_VERSION, "jaxmlp_version": jaxmlp.__version__, "epoch": 3}
    back = checkpoint.restore(tree(), arrays, "train")
    np.testing.assert_array_equal(back[1]["W"], tree()[1]["W"])
    assert not list(tmp_path.glob("*.tmp"))


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"train": tree()}, {"epoch": 1})
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"train": tree()}, {"epoch": 2})
    assert path.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


def test_truncated_file(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"train": tree()}, {})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or not an .npz"):
        checkpoint.load(path)


def test_pickled_object_is_refused_never_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "executed"), "w"))

    path = tmp_path / "evil.npz"
    obj = np.empty(1, dtype=object)
    obj[0] = Boom()
    with zipfile.ZipFile(path, "w") as z:
        with z.open("__meta__.npy", "w") as f:
            np.lib.format.write_array(f, np.array(json.dumps({"format_version": 1})))
        with z.open("train/0/W.npy", "w") as f:
            np.lib.format.write_array(f, obj, allow_pickle=True)
    with pytest.raises(CheckpointError, match="pickled object; refusing"):
        checkpoint.load(path)
    assert not (tmp_path / "executed").exists()


def test_other_architecture(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"train": tree()}, {})
    _, arrays = checkpoint.load(path)
    bigger = ({"W": jnp.ones((3, 5)), "b": jnp.zeros(5)}, {"W": jnp.ones((5, 2))})
    with pytest.raises(CheckpointError, match="different architecture"):
        checkpoint.restore(bigger, arrays, "train")
    deeper = tree() + ({"W": jnp.ones((2, 2))},)
    with pytest.raises(CheckpointError, match="no array train/2/W"):
        checkpoint.restore(deeper, arrays, "train")


def test_newer_format_version(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"train": tree()}, {})
    _, arrays = checkpoint.load(path)
    np.savez(
        path,
        __meta__=np.array(json.dumps({"format_version": checkpoint.FORMAT_VERSION + 1})),
        **{k: v for k, v in arrays.items()},
    )
    with pytest.raises(CheckpointError, match="newer than this jaxmlp reads"):
        checkpoint.load(path)


def test_not_a_jaxmlp_file(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, a=np.ones(2))
    with pytest.raises(CheckpointError, match="not a jaxmlp checkpoint"):
        checkpoint.load(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "missing.npz")
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError):
        checkpoint.load(tmp_path / "p.npz")


def test_a_file_that_is_not_an_npz_says_so(tmp_path):
    """A run's summary.json passed where a checkpoint belongs is not mistaken for a pickled object."""
    path = tmp_path / "summary.json"
    path.write_text('{"test_accuracy": 0.9}')
    with pytest.raises(CheckpointError, match=r"summary.json: not a checkpoint \(\.npz\) file"):
        checkpoint.load(path)
