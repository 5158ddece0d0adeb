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


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_segments_of_an_epoch_are_the_epoch(tiny, jit):
    """16 steps in segments of 5 (the last one runs 1 step and skips 4): the same states, metrics and
    next key as train_epoch. Tolerance 1e-5: two compiled programs may fuse float32 sums differently."""
    tc = small_tc(model=MLPConfig(sizes=(16, 32, 10), batchnorm=True))
    hyper = Hyper(dropout_rate=0.3, ema_decay=0.9).as_arrays()
    ts0 = step.init_state(jax.random.PRNGKey(1), tc, hyper)
    x, y = jnp.asarray(tiny.x_train), jnp.asarray(tiny.y_train)
    whole, metrics = jax.jit(step.train_epoch, static_argnames="tc")(ts0, hyper, x, y, tc=tc)
    idx = step.epoch_order(ts0.key, x.shape[0], tc)
    segment = step.segment_program(tc, 5, donate=False) if jit else partial(step.train_segment, tc=tc, length=5)
    ts, losses = ts0, []
    for start in range(0, idx.shape[0], 5):
        assert not np.array_equal(ts.key, whole.key)  # the epoch's key until its last step
        ts, m = segment(ts, hyper, x, y, idx, jnp.int32(start))
        losses.append(np.asarray(m["loss"]))
    assert np.array_equal(np.concatenate(losses)[16:], np.zeros(4))  # the skipped steps
    np.testing.assert_allclose(np.concatenate(losses)[:16], metrics["loss"], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(ts[:4]), jax.tree_util.tree_leaves(whole[:4])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.array_equal(ts.key, whole.key) and int(ts.step) == 16


def test_a_segment_is_about_a_second_of_work():
    big = step.TrainConfig(model=MLPConfig(sizes=(784, 512, 512, 10)), batch_size=128)
    flops = 6 * 128 * (784 * 512 + 512 * 512 + 512 * 10)
    assert step.segment_steps(big, 468) == -(-int(step.SEGMENT_FLOPS) // flops) == 39
    assert step.segment_steps(big, 10) == 10  # never past the epoch
    huge = step.TrainConfig(model=MLPConfig(sizes=(784, 20000, 20000, 10)), batch_size=4096)
    assert step.segment_steps(huge, 14) == 1  # never none


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


def test_the_steps_glue_equals_an_independent_numpy_loop(tiny):
    """25 jitted steps (cosine schedule with warmup → Adam → parameter EMA → batch-norm running
    statistics) against the same glue written out in float64 NumPy around the same hand-derived
    gradients: each update rule, the scheduled learning rate at the step it belongs to, the EMA of the
    NEW parameters and the running statistics all enter. float32 vs float64 over 25 steps: 1e-4
    relative (rounding accumulates ~25·ε32 ≈ 3e-6 of each parameter's size). The EMA follows the
    default warm-up, TensorFlow's min(d, (1 + t)/(10 + t)) with t the updates taken so far."""
    from jaxmlp.mlp import loss_and_grads

    tc = small_tc(model=MLPConfig(sizes=(16, 12, 10), batchnorm=True), schedule="cosine")
    h = Hyper(
        learning_rate=0.02,
        warmup_steps=5,
        total_steps=25,
        final_lr_fraction=0.1,
        ema_decay=0.8,
        b1=0.85,
        b2=0.95,
        eps=1e-6,
        bn_momentum=0.7,
    )
    hyper = h.as_arrays()
    ts = step.init_state(jax.random.PRNGKey(0), tc, hyper)
    x, y = jnp.asarray(tiny.x_train[:50]), jnp.asarray(tiny.y_train[:50])
    as64 = lambda tree: jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)  # noqa: E731
    p, ema, bn = as64(ts.params), as64(ts.params), as64(ts.bn_state)
    m = jax.tree_util.tree_map(np.zeros_like, p)
    v = jax.tree_util.tree_map(np.zeros_like, p)
    one_step = jax.jit(partial(step.train_step, tc=tc))
    x64 = np.asarray(x, np.float64)
    for t in range(25):
        key = jax.random.fold_in(ts.key, t)
        # the reference: gradients at its own parameters, everything around them by hand
        params32 = jax.tree_util.tree_map(jnp.float32, p)
        _, g, _, _ = loss_and_grads(params32, ts.bn_state, (x, y), hyper, key, config=tc.model)
        g = as64(g)
        z = x64 @ p[0]["W"]  # (50, 12) the batch-norm layer's input before this step's update
        bn = ({"mean": 0.7 * bn[0]["mean"] + 0.3 * z.mean(0), "var": 0.7 * bn[0]["var"] + 0.3 * z.var(0, ddof=1)},)
        warm = min(1.0, (t + 1) / 5)
        lr = 0.02 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(t / 25, 1.0)))) * warm
        m = jax.tree_util.tree_map(lambda a, b: 0.85 * a + 0.15 * b, m, g)
        v = jax.tree_util.tree_map(lambda a, b: 0.95 * a + 0.05 * b * b, v, g)
        c1, c2 = 1 - 0.85 ** (t + 1), 1 - 0.95 ** (t + 1)  # Adam's bias corrections, textbook form
        p = jax.tree_util.tree_map(
            lambda w, a, b, lr=lr, c1=c1, c2=c2: w - lr * (a / c1) / (np.sqrt(b / c2) + 1e-6), p, m, v
        )
        beta = min(0.8, (2 + t) / (11 + t))  # t + 1 updates taken, this one included
        ema = jax.tree_util.tree_map(lambda e, w, beta=beta: beta * e + (1 - beta) * w, ema, p)
        ts, _ = one_step(ts, hyper, (x, y))
    for mine, ref in ((ts.params, p), (ts.ema, ema), (ts.bn_state, bn)):
        for a, b in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(ref)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert int(ts.step) == 25


def test_the_ema_averages_the_new_parameters():
    """θ̄₁ = d θ̄₀ + (1 − d) θ₁ with θ₁ the parameters AFTER the step (θ̄₀ = θ₀; the constant
    schedule, so that β₁ = d is not 0 and the old parameters weigh in)."""
    tc = small_tc(optimizer="sgd", ema_schedule="constant")
    hyper = Hyper(learning_rate=0.5, ema_decay=0.75).as_arrays()
    ts0 = step.init_state(jax.random.PRNGKey(0), tc, hyper)
    batch = (jax.random.normal(jax.random.PRNGKey(1), (50, 16)), jnp.arange(50) % 10)
    ts1, _ = step.train_step(ts0, hyper, batch, tc=tc)
    for e, old, new in zip(*(jax.tree_util.tree_leaves(t) for t in (ts1.ema, ts0.params, ts1.params))):
        np.testing.assert_allclose(e, 0.75 * old + 0.25 * new, rtol=1e-6, atol=1e-7)
        assert not np.allclose(new, old)  # the step moved them, so old and new averages differ
