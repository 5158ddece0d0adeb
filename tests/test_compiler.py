"""Compiler options for the training programs: they drop XLA:CPU's per-step weight copies, change no
number, and fall back to XLA's defaults when a jaxlib does not know them."""

import re
from functools import partial

import jax
import numpy as np
import pytest

from jaxmlp import compiler, run, step
from jaxmlp.hyper import Hyper
from jaxmlp.mlp import MLPConfig

cpu_only = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options are for XLA:CPU")


def setup(batchnorm=False):
    config = MLPConfig(sizes=(24, 32, 32, 5), activation="relu", batchnorm=batchnorm)
    tc = step.TrainConfig(model=config, optimizer="adam", batch_size=16)
    hyper = Hyper(learning_rate=1e-2, dropout_rate=0.2, l2=1e-3, ema_decay=0.999).as_arrays()
    ts = step.init_state(jax.random.PRNGKey(0), tc, hyper)
    x = jax.random.normal(jax.random.PRNGKey(1), (160, 24))
    y = jax.random.randint(jax.random.PRNGKey(2), (160,), 0, 5)
    return tc, hyper, ts, x, y


def scan_body_weight_copies(hlo: str) -> int:
    """f32 matrix copies inside the while body that runs the step (the one holding the matmuls)."""
    bodies = set(re.findall(r"while\(.*?body=%?([\w.\-]+)", hlo))
    count = 0
    for comp in re.split(r"\n(?=\S.*\{\n)", hlo):
        name = comp.split("(", 1)[0].split()[-1].lstrip("%") if comp.strip() else ""
        if name in bodies and ("dot(" in comp or "ynn_fusion" in comp):
            count += len(re.findall(r"= f32\[\d+,\d+\]\{[\d,]+\} copy\(", comp))
    return count


@cpu_only
def test_epoch_options_are_known_to_this_jaxlib_on_cpu():
    assert compiler.epoch_options() == compiler.CPU_EPOCH_OPTIONS
    assert compiler.epoch_options() is not compiler.CPU_EPOCH_OPTIONS  # callers may not mutate ours


@cpu_only
def test_options_drop_the_per_step_weight_copies():
    tc, hyper, ts, x, y = setup()
    lowered = jax.jit(partial(step.train_epoch, tc=tc)).lower(ts, hyper, x, y)
    with_options = lowered.compile(compiler_options=compiler.epoch_options()).as_text()
    assert "while(" in with_options
    assert scan_body_weight_copies(with_options) == 0


@cpu_only
@pytest.mark.parametrize("batchnorm", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["plain", "batchnorm"])
def test_options_change_no_number(batchnorm):
    """Two epochs with and without the options: parameters, optimizer, BN and EMA state and every
    per-step loss equal bit for bit (the options move buffers, not arithmetic)."""
    tc, hyper, ts, x, y = setup(batchnorm)
    results = []
    for options in ({}, compiler.epoch_options()):
        fn = jax.jit(partial(step.train_epoch, tc=tc), compiler_options=options)
        state, losses = ts, []
        for _ in range(2):
            state, metrics = fn(state, hyper, x, y)
            losses.append(metrics["loss"])
        results.append((state, losses))
    (a, la), (b, lb) = results
    for u, v in zip(jax.tree_util.tree_leaves((a, la)), jax.tree_util.tree_leaves((b, lb))):
        np.testing.assert_array_equal(u, v)
    assert np.all(np.isfinite(np.asarray(la)))


def test_unknown_option_falls_back_to_defaults(monkeypatch):
    monkeypatch.setattr(compiler, "CPU_EPOCH_OPTIONS", {"xla_cpu_no_such_option_in_any_jaxlib": True})
    compiler._supported.cache_clear()
    try:
        if jax.default_backend() == "cpu":
            assert not compiler._supported("cpu")
        assert compiler.epoch_options() == {}
    finally:
        compiler._supported.cache_clear()


def test_fit_uses_the_options(monkeypatch, tmp_path):
    """fit compiles its epoch with epoch_options() (seen by recording the calls)."""
    calls = []
    real = compiler.epoch_options

    def recording():
        calls.append(1)
        return real()

    monkeypatch.setattr(compiler, "epoch_options", recording)
    from jaxmlp import data

    from helpers import make_idx_dataset

    ds = data.load_dataset("mnist", make_idx_dataset(tmp_path / "idx", n_train=300, n_test=50), dev_size=50, seed=0)
    tc = step.TrainConfig(model=MLPConfig(sizes=(16, 8, 10)), batch_size=50, epochs=1)
    run.fit(ds, tc, Hyper(learning_rate=1e-2), out_dir=None, progress=False, log=lambda *a: None)
    assert calls
