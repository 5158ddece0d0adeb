"""Reliability: property tests for the ops, determinism, and kill -9 in the middle of training.

Property tests (hypothesis): random shapes and finite values keep forward/backward shapes, give
finite results, and agree with jax.vjp in float64 (rtol 1e-9: a few operations at ε64, well inside).
"""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from jaxmlp import checkpoint
from jaxmlp.ops import activations, batchnorm, dropout, linear, losses

from helpers import make_idx_dataset

# x64 is the same for every generated input (it only switches float64 on), so reusing it is safe.
PROPS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
dims = st.integers(1, 4)  # few distinct shapes: eager JAX compiles each new shape once
finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=64)


def mat(rows, cols):
    return arrays(np.float64, (rows, cols), elements=finite)


def close(a, b, rtol=1e-9):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * (1 + np.abs(b).max()))


@PROPS
@given(data=st.data(), batch=dims, d_in=dims, d_out=dims)
def test_linear_properties(x64, data, batch, d_in, d_out):
    x, dy = data.draw(mat(batch, d_in)), data.draw(mat(batch, d_out))
    p = {"W": jnp.asarray(data.draw(mat(d_in, d_out))), "b": jnp.asarray(data.draw(mat(1, d_out))[0])}
    y, cache = linear.forward(p, x)
    assert y.shape == (batch, d_out)
    dx, g = linear.backward(p, cache, dy)
    _, vjp = jax.vjp(lambda p, x: linear.forward(p, x)[0], p, jnp.asarray(x))
    rp, rx = vjp(jnp.asarray(dy))
    close(dx, rx)
    close(g["W"], rp["W"])
    close(g["b"], rp["b"])


@PROPS
@given(data=st.data(), batch=dims, d=dims, name=st.sampled_from(activations.ACTIVATIONS))
def test_activation_properties(x64, data, batch, d, name):
    x, dy = jnp.asarray(data.draw(mat(batch, d))), jnp.asarray(data.draw(mat(batch, d)))
    y, cache = activations.forward(name, x)
    dx = activations.backward(name, cache, dy)
    _, vjp = jax.vjp(lambda x: activations.forward(name, x)[0], x)
    assert y.shape == dx.shape == (batch, d)
    close(dx, vjp(dy)[0])


@PROPS
@given(data=st.data(), batch=st.integers(2, 5), d=dims, rate=st.floats(0, 0.9))
def test_dropout_and_batchnorm_properties(x64, data, batch, d, rate):
    x, dy = jnp.asarray(data.draw(mat(batch, d))), jnp.asarray(data.draw(mat(batch, d)))
    key = jax.random.PRNGKey(data.draw(st.integers(0, 1000)))
    _, vjp = jax.vjp(lambda x: dropout.forward(x, rate, key)[0], x)
    close(dropout.backward(dropout.forward(x, rate, key)[1], dy), vjp(dy)[0])
    # batch norm needs a spread in each column, or 1/√(σ²+ε) amplifies rounding hugely
    x = x + jnp.arange(batch, dtype=jnp.float64)[:, None]
    p = {"gamma": jnp.asarray(data.draw(mat(1, d))[0]), "beta": jnp.asarray(data.draw(mat(1, d))[0])}
    y, cache, _, _ = batchnorm.forward_train(p, x)
    dx, g = batchnorm.backward(cache, dy)
    _, vjp = jax.vjp(lambda p, x: batchnorm.forward_train(p, x)[0], p, x)
    rp, rx = vjp(dy)
    close(dx, rx, rtol=1e-7)
    close(g["gamma"], rp["gamma"])
    close(g["beta"], rp["beta"])


@PROPS
@given(data=st.data(), batch=dims, classes=st.integers(2, 5))
def test_cross_entropy_properties(x64, data, batch, classes):
    z = jnp.asarray(
        data.draw(arrays(np.float64, (batch, classes), elements=st.floats(-1e3, 1e3, allow_nan=False, width=64)))
    )
    y = jnp.asarray(data.draw(arrays(np.int32, (batch,), elements=st.integers(0, classes - 1))))
    loss, cache = losses.cross_entropy_forward(z, y)
    assert np.isfinite(float(loss)) and float(loss) >= 0
    close(losses.cross_entropy_backward(cache), jax.grad(lambda z: losses.cross_entropy_forward(z, y)[0])(z))


# ---------------------------------------------------------------------------------------------
# Determinism and kill -9


def cli(*args, **kw):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "jaxmlp.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


TRAIN = [
    "train",
    "--dataset",
    "mnist",
    "--dev-size",
    "100",
    "--hidden",
    "32",
    "--dropout",
    "0.2",
    "--batchnorm",
    "--ema",
    "0.9",
    "--batch-size",
    "20",
    "--epochs",
    "12",
    "--no-progress",
]


def final_train_arrays(path):
    _, arrays = checkpoint.load(path)
    return {k: v for k, v in arrays.items() if k.startswith("train/")}


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("idx"), n_train=500, n_test=50)


@pytest.fixture(scope="module")
def uninterrupted(idx_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    p = cli(*TRAIN, "--data-dir", str(idx_dir), "--out", str(out))
    assert p.wait(timeout=300) == 0, p.stderr.read()
    return out


def test_same_seed_is_bit_identical_on_cpu(idx_dir, uninterrupted, tmp_path):
    p = cli(*TRAIN, "--data-dir", str(idx_dir), "--out", str(tmp_path))
    assert p.wait(timeout=300) == 0
    a, b = final_train_arrays(uninterrupted / "checkpoint.npz"), final_train_arrays(tmp_path / "checkpoint.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_kill_9_then_resume_is_bit_identical(idx_dir, uninterrupted, tmp_path):
    """SIGKILL the trainer at random moments (a bounded number of times), check that the checkpoint
    on disk is always loadable, then --resume to the end: the final state equals the clean run's."""
    rng = np.random.default_rng(0)
    ckpt = tmp_path / "checkpoint.npz"
    kills = 0
    for _ in range(2):
        args = [*TRAIN, "--data-dir", str(idx_dir), "--out", str(tmp_path)] + (["--resume"] if ckpt.exists() else [])
        p = cli(*args)
        deadline = time.time() + 120
        while not ckpt.exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0.0, 0.6)))  # somewhere in the middle of training (or a write)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(timeout=60)
        if ckpt.exists():
            meta, _ = checkpoint.load(ckpt)  # never half-written: always loads
            assert 1 <= meta["epoch"] <= 12
    assert kills >= 1, "the run finished before any kill; the test did not test anything"
    p = cli(*TRAIN, "--data-dir", str(idx_dir), "--out", str(tmp_path), "--resume")
    assert p.wait(timeout=300) == 0, p.stderr.read()
    a, b = final_train_arrays(uninterrupted / "checkpoint.npz"), final_train_arrays(ckpt)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not list(tmp_path.glob("*.tmp"))  # stale temp files from killed writes are cleaned up


def test_divergence_from_the_cli_names_the_step(idx_dir, tmp_path):
    p = cli(
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        str(idx_dir),
        "--dev-size",
        "100",
        "--hidden",
        "32",
        "--optimizer",
        "sgd",
        "--learning-rate",
        "1e30",
        "--epochs",
        "3",
        "--no-progress",
        "--out",
        str(tmp_path),
    )
    _, err = p.communicate(timeout=300)
    assert p.returncode == 3
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("jaxmlp: error: loss became non-finite at epoch 1, step ")
    assert "lower the learning rate" in lines[0]
