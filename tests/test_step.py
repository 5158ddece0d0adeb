"""The pure step: jitted = eager, the scanned epoch = a Python loop of steps, config validation, unroll."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import data, step
from jaxmlp.hyper import Hyper
from jaxmlp.mlp import MLPConfig

from helpers import leaves_equal, small_tc  # noqa: F401


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_train_step_jitted_equals_eager(tiny, optimizer):
    tc = small_tc(optimizer=optimizer, model=MLPConfig(sizes=(16, 32, 10), batchnorm=True))
    hyper = Hyper(learning_rate=0.01, dropout_rate=0.2, l2=1e-3, ema_decay=0.999).as_arrays()
    ts = step.init_state(jax.random.PRNGKey(0), tc, hyper)
    batch = (jnp.asarray(tiny.x_train[:50]), jnp.asarray(tiny.y_train[:50]))
    eager, m1 = step.train_step(ts, hyper, batch, tc=tc)
    # the jitted step donates its input: give it a copy (the eager result shares ts.key with ts)
    jit_step = jax.jit(partial(step.train_step, tc=tc), donate_argnums=0)
    jitted, m2 = jit_step(jax.tree_util.tree_map(jnp.copy, ts), hyper, batch)
    for a, b in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # XLA may fuse/reorder float32 sums
    assert int(eager.step) == 1 and float(m1["loss"]) == pytest.approx(float(m2["loss"]), rel=1e-5)


def test_epoch_scan_equals_python_loop_of_steps(tiny):
    tc = small_tc(model=MLPConfig(sizes=(16, 32, 10)))
    hyper = Hyper(dropout_rate=0.3).as_arrays()
    ts0 = step.init_state(jax.random.PRNGKey(1), tc, hyper)
    x, y = jnp.asarray(tiny.x_train), jnp.asarray(tiny.y_train)
    scanned, metrics = jax.jit(step.train_epoch, static_argnames="tc")(ts0, hyper, x, y, tc=tc)
    # the same epoch, step by step in Python, with the keys the contract documents
    key, perm_key, base = jax.random.split(ts0.key, 3)
    idx = data.batch_indices(perm_key, x.shape[0], tc.batch_size)
    ts, losses = ts0, []
    one_step = jax.jit(step.train_step, static_argnames="tc")
    for i, rows in enumerate(idx):
        ts, m = one_step(ts, hyper, (x[rows], y[rows]), tc=tc, key=jax.random.fold_in(base, i))
        losses.append(float(m["loss"]))
    assert metrics["loss"].shape == (800 // 50,)
    np.testing.assert_allclose(metrics["loss"], losses, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(scanned.params), jax.tree_util.tree_leaves(ts.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.array_equal(scanned.key, key) and int(scanned.step) == 16


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(epochs=0), "epochs must be ≥ 1"),
        (dict(batch_size=0), "batch size must be ≥ 1"),
        (dict(optimizer="adagrad"), "unknown optimizer"),
        (dict(scan_unroll=0), "scan unroll must be ≥ 1"),
    ],
)
def test_train_config_rejects_bad_values(kw, message):
    with pytest.raises(ValueError, match=message):
        small_tc(**kw)


def test_scan_unroll_trains_the_same_steps(tiny):
    """Unrolling the epoch's loop changes how XLA schedules it, not what it computes: the same
    parameters up to float32 rounding (1e-6 relative: a few roundings of a different fusion order)."""
    hyper = Hyper(learning_rate=3e-3).as_arrays()
    x, y = jnp.asarray(tiny.x_train), jnp.asarray(tiny.y_train)
    out = []
    for unroll in (1, 3):  # 16 steps per epoch: 3 does not divide it, the remainder must still run
        tc = small_tc(scan_unroll=unroll)
        ts = step.init_state(jax.random.PRNGKey(0), tc, hyper)
        ts, metrics = jax.jit(step.train_epoch, static_argnames="tc")(ts, hyper, x, y, tc=tc)
        out.append((ts, metrics))
    assert int(out[0][0].step) == int(out[1][0].step) == 16
    for a, b in zip(jax.tree_util.tree_leaves(out[0][0].params), jax.tree_util.tree_leaves(out[1][0].params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_dropout_and_ema_are_switched_by_hyper_alone(tiny):
    """One switch per concept: a dropout rate turns dropout on in a step built from a plain config
    (rate 0 gives exactly what no dropout gives), and an EMA decay gives the state its EMA."""
    tc = small_tc()
    batch = (jnp.asarray(tiny.x_train[:50]), jnp.asarray(tiny.y_train[:50]))
    key = jax.random.PRNGKey(0)

    def loss(**kw):
        hyper = Hyper(learning_rate=0.01, **kw).as_arrays()
        ts = step.init_state(key, tc, hyper)
        return ts, float(jax.jit(partial(step.train_step, tc=tc))(ts, hyper, batch)[1]["loss"])

    plain_ts, plain = loss()
    _, dropped = loss(dropout_rate=0.5)
    _, zero = loss(dropout_rate=0.0)
    ema_ts, _ = loss(ema_decay=0.9)
    assert plain_ts.ema is None and ema_ts.ema is not None
    assert dropped != plain and zero == plain


def test_state_and_hyper_must_agree_about_the_ema(tiny):
    tc = small_tc()
    batch = (jnp.asarray(tiny.x_train[:50]), jnp.asarray(tiny.y_train[:50]))
    ts = step.init_state(jax.random.PRNGKey(0), tc, Hyper().as_arrays())
    with pytest.raises(ValueError, match="disagree about the parameter EMA"):
        step.train_step(ts, Hyper(ema_decay=0.9).as_arrays(), batch, tc=tc)
