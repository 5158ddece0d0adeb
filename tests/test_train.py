"""Training: the jitted step, the scanned epoch, fit's files, early stopping, divergence, resume."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_idx_dataset
from jaxmlp import checkpoint, data, train
from jaxmlp.hyper import Hyper
from jaxmlp.mlp import MLPConfig


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small learnable problem: 16 features, 10 classes, 800 train / 200 dev / 200 test."""
    folder = make_idx_dataset(tmp_path_factory.mktemp("idx"), n_train=1000, n_test=200)
    return data.load_dataset("mnist", folder, dev_size=200, seed=0)


def small_tc(**kw):
    model = kw.pop("model", MLPConfig(sizes=(16, 32, 10)))
    return train.TrainConfig(model=model, batch_size=kw.pop("batch_size", 50), **kw)


def leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_train_step_jitted_equals_eager(tiny, optimizer):
    tc = small_tc(optimizer=optimizer, model=MLPConfig(sizes=(16, 32, 10), dropout=True, batchnorm=True),
                  ema=True)
    hyper = Hyper(learning_rate=0.01, dropout_rate=0.2, l2=1e-3).as_arrays()
    ts = train.init_state(jax.random.PRNGKey(0), tc, hyper)
    batch = (jnp.asarray(tiny.x_train[:50]), jnp.asarray(tiny.y_train[:50]))
    eager, m1 = train.train_step(ts, hyper, batch, tc=tc)
    # jit_train_step donates its input: give it a copy (the eager result shares ts.key with ts)
    jitted, m2 = train.jit_train_step(jax.tree_util.tree_map(jnp.copy, ts), hyper, batch, tc=tc)
    for a, b in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # XLA may fuse/reorder float32 sums
    assert int(eager.step) == 1 and float(m1["loss"]) == pytest.approx(float(m2["loss"]), rel=1e-5)


def test_epoch_scan_equals_python_loop_of_steps(tiny):
    tc = small_tc(model=MLPConfig(sizes=(16, 32, 10), dropout=True))
    hyper = Hyper(dropout_rate=0.3).as_arrays()
    ts0 = train.init_state(jax.random.PRNGKey(1), tc, hyper)
    x, y = jnp.asarray(tiny.x_train), jnp.asarray(tiny.y_train)
    scanned, metrics = jax.jit(train.train_epoch, static_argnames="tc")(ts0, hyper, x, y, tc=tc)
    # the same epoch, step by step in Python, with the keys the contract documents
    key, perm_key, base = jax.random.split(ts0.key, 3)
    idx = data.batch_indices(perm_key, x.shape[0], tc.batch_size)
    ts, losses = ts0, []
    step = jax.jit(train.train_step, static_argnames="tc")
    for i, rows in enumerate(idx):
        ts, m = step(ts, hyper, (x[rows], y[rows]), tc=tc, key=jax.random.fold_in(base, i))
        losses.append(float(m["loss"]))
    assert metrics["loss"].shape == (800 // 50,)
    np.testing.assert_allclose(metrics["loss"], losses, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(scanned.params), jax.tree_util.tree_leaves(ts.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.array_equal(scanned.key, key) and int(scanned.step) == 16


def test_fit_learns_and_writes_its_files(tiny, tmp_path):
    tc = small_tc(epochs=8)
    res = train.fit(tiny, tc, Hyper(learning_rate=3e-3), out_dir=tmp_path, progress=False, log=lambda s: None)
    assert res.summary["test_accuracy"] > 0.9  # separable toy problem: chance is 0.1
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert len(rows) == 8 and {"epoch", "train_loss", "dev_accuracy", "seconds"} <= set(rows[0])
    summary = json.loads((tmp_path / "summary.json").read_text())
    for k in ("test_accuracy", "dev_accuracy", "epochs", "seconds", "examples_per_second", "config"):
        assert k in summary
    assert summary["examples_per_second"] > 0 and summary["config"]["model"]["sizes"] == [16, 32, 10]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tc2, params, bn_state, norm, meta = train.load_model(tmp_path / "checkpoint.npz")
    assert tc2 == tc and norm == tiny.normalizer
    acc, _ = train.evaluate(params, bn_state, tiny.x_test, tiny.y_test, config=tc.model)
    assert acc == pytest.approx(res.summary["test_accuracy"])


def test_best_parameters_are_saved_with_ema_and_batchnorm(tiny, tmp_path):
    tc = small_tc(epochs=3, ema=True, model=MLPConfig(sizes=(16, 32, 10), batchnorm=True))
    res = train.fit(tiny, tc, Hyper(learning_rate=3e-3, ema_decay=0.9), out_dir=tmp_path, progress=False,
                    log=lambda s: None)
    best_epoch = res.summary["best_epoch"]
    assert res.summary["dev_accuracy"] == max(r["dev_accuracy"] for r in res.history)
    assert res.history[best_epoch - 1]["dev_accuracy"] == res.summary["dev_accuracy"]
    _, params, bn_state, _, _ = train.load_model(tmp_path / "checkpoint.npz")
    assert leaves_equal(params, res.best_params) and leaves_equal(bn_state, res.best_bn_state)


def test_early_stopping_on_dev_accuracy(tiny):
    tc = small_tc(epochs=50, patience=2)
    res = train.fit(tiny, tc, Hyper(learning_rate=3e-3), progress=False, log=lambda s: None)
    assert res.summary["stopped_early"] and res.summary["epochs"] < 50
    assert res.summary["epochs"] == res.summary["best_epoch"] + 2


def test_divergence_names_the_step_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    # the learning rate grows ×1e6 per epoch (16 steps): epoch 1 trains, later ones overflow
    tc = small_tc(epochs=6, optimizer="sgd", schedule="exponential")
    hyper = Hyper(learning_rate=0.05, decay_rate=1e6, decay_steps=16)
    with pytest.raises(train.TrainingDiverged, match=r"non-finite at epoch (\d+), step (\d+) .*lower the "
                                                     r"learning rate.*last good checkpoint") as e:
        train.fit(tiny, tc, hyper, out_dir=tmp_path, progress=False, log=lambda s: None)
    assert "\n" not in str(e.value)
    meta, arrays = checkpoint.load(tmp_path / "checkpoint.npz")
    assert 1 <= meta["epoch"] < 6
    assert all(np.isfinite(a).all() for k, a in arrays.items() if a.dtype.kind == "f")


def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny, tmp_path):
    model = MLPConfig(sizes=(16, 32, 10), dropout=True, batchnorm=True)
    hyper = Hyper(learning_rate=3e-3, dropout_rate=0.2)
    full = train.fit(tiny, small_tc(epochs=4, model=model, ema=True), hyper, out_dir=tmp_path / "a",
                     progress=False, log=lambda s: None)
    train.fit(tiny, small_tc(epochs=2, model=model, ema=True), hyper, out_dir=tmp_path / "b",
              progress=False, log=lambda s: None)
    resumed = train.fit(tiny, small_tc(epochs=4, model=model, ema=True), hyper, out_dir=tmp_path / "b",
                        resume=True, progress=False, log=lambda s: None)
    assert leaves_equal(full.state, resumed.state)
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]


def test_resume_with_more_epochs_extends_the_cosine_horizon(tiny, tmp_path):
    """A 2-epoch cosine run resumed with epochs=3 trains epoch 3 on the 3-epoch schedule (not at
    learning rate 0, the decayed end of the 2-epoch one)."""
    hyper = Hyper(learning_rate=3e-3)
    short = train.fit(tiny, small_tc(epochs=2, schedule="cosine"), hyper, out_dir=tmp_path / "a",
                      progress=False, log=lambda s: None)
    longer = train.fit(tiny, small_tc(epochs=3, schedule="cosine"), hyper, out_dir=tmp_path / "a", resume=True,
                       progress=False, log=lambda s: None)
    full = train.fit(tiny, small_tc(epochs=3, schedule="cosine"), hyper, progress=False, log=lambda s: None)
    steps = tiny.x_train.shape[0] // 50
    assert longer.summary["hyper"]["total_steps"] == full.summary["hyper"]["total_steps"] == 3 * steps
    assert longer.history[2]["learning_rate"] == full.history[2]["learning_rate"] > 0
    assert not leaves_equal(short.state.params, longer.state.params)  # epoch 3 moved the weights


def test_resume_refuses_a_different_configuration(tiny, tmp_path):
    train.fit(tiny, small_tc(epochs=1), Hyper(), out_dir=tmp_path, progress=False, log=lambda s: None)
    with pytest.raises(checkpoint.CheckpointError, match="different configuration"):
        train.fit(tiny, small_tc(epochs=2, optimizer="sgd"), Hyper(), out_dir=tmp_path, resume=True,
                  progress=False, log=lambda s: None)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        train.fit(tiny, small_tc(epochs=2), Hyper(), out_dir=tmp_path / "none", resume=True,
                  progress=False, log=lambda s: None)


@pytest.mark.parametrize("kw, message", [
    (dict(batch_size=5000), "batch size 5000 is larger than the 800 training examples"),
    (dict(model=MLPConfig(sizes=(20, 10))), "does not fit data with 16 features"),
])
def test_fit_rejects_mismatches(tiny, kw, message):
    with pytest.raises(ValueError, match=message):
        train.fit(tiny, small_tc(**kw), Hyper(), progress=False, log=lambda s: None)


@pytest.mark.parametrize("kw, message", [(dict(epochs=0), "epochs must be ≥ 1"),
                                         (dict(batch_size=0), "batch size must be ≥ 1"),
                                         (dict(optimizer="adagrad"), "unknown optimizer"),
                                         (dict(scan_unroll=0), "scan unroll must be ≥ 1")])
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
        ts = train.init_state(jax.random.PRNGKey(0), tc, hyper)
        ts, metrics = jax.jit(train.train_epoch, static_argnames="tc")(ts, hyper, x, y, tc=tc)
        out.append((ts, metrics))
    assert int(out[0][0].step) == int(out[1][0].step) == 16
    for a, b in zip(jax.tree_util.tree_leaves(out[0][0].params), jax.tree_util.tree_leaves(out[1][0].params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_mixed_precision_fit_learns_and_keeps_float32_state(tiny, tmp_path):
    """bfloat16 matmuls train the toy problem as float32 does (> 0.9; chance 0.1), the parameters,
    optimizer state and checkpoint stay float32, and the config records the mode."""
    tc = small_tc(epochs=8, model=MLPConfig(sizes=(16, 32, 10), matmul_dtype="bfloat16"))
    res = train.fit(tiny, tc, Hyper(learning_rate=3e-3), out_dir=tmp_path, progress=False, log=lambda s: None)
    assert res.summary["test_accuracy"] > 0.9
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves((res.state.params, res.state.opt_state.mu)))
    tc2, params, _, _, _ = train.load_model(tmp_path / "checkpoint.npz")
    assert tc2.model.matmul_dtype == "bfloat16" and params[0]["W"].dtype == jnp.float32
