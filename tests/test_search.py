"""The search rules of jaxmlp.search: halving rungs and promotion, PBT's plan, and its device exploit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import search, sweep
from jaxmlp.hyper import Hyper
from jaxmlp.mlp import MLPConfig
from jaxmlp.step import TrainConfig


def test_halving_rungs_are_epochs_over_powers_of_eta():
    assert search.halving_rungs(9, 3) == (1, 3, 9)  # the example
    assert search.halving_rungs(27, 3) == (1, 3, 9, 27)
    assert search.halving_rungs(8, 2) == (1, 2, 4, 8)
    assert search.halving_rungs(10, 3) == (1, 3, 10)  # 10/3 and 10/9 rounded
    assert search.halving_rungs(2, 3) == (2,)  # 2/3 < 1: one rung, nobody stops
    for bad in (1, 0, 2.5):
        with pytest.raises(ValueError, match="halving rate"):
            search.halving_rungs(9, bad)


def test_segment_ends():
    assert search.segment_ends(7) == (7,)
    assert search.segment_ends(9, halving=3) == (1, 3, 9)
    assert search.segment_ends(7, pbt=3) == (3, 6, 7)
    assert search.segment_ends(6, pbt=3) == (3, 6)
    with pytest.raises(ValueError, match="not both"):
        search.segment_ends(9, halving=3, pbt=3)
    with pytest.raises(ValueError, match="PBT interval"):
        search.segment_ends(9, pbt=0)
    with pytest.raises(ValueError, match=r"no rung before the end \(give --epochs ≥ 3\)"):
        search.segment_ends(2, halving=3)  # a search that would decide nothing is refused
    with pytest.raises(ValueError, match="never steps"):
        search.segment_ends(4, pbt=5)


def test_promote_keeps_the_best_floor_n_over_eta_with_nan_last_and_ties_by_index():
    acc = [0.5, np.nan, 0.9, 0.7, 0.9, 0.1]
    assert search.promote(acc, 3).tolist() == [2, 4]  # ⌊6/3⌋ = 2; the tie at 0.9 keeps both
    assert search.promote(acc, 2).tolist() == [2, 3, 4]
    assert search.promote([0.9, 0.9, 0.9], 2).tolist() == [0]  # ⌊3/2⌋ = 1, the lower index
    assert search.promote([np.nan, 0.2], 5).tolist() == [1]  # at least one, never a diverged one first
    assert search.promote([np.nan, np.nan], 2).tolist() == [0]


def test_quarter():
    assert [search.quarter(n) for n in (1, 2, 3, 4, 7, 8, 9, 16)] == [0, 1, 1, 1, 1, 2, 2, 4]


def test_pbt_plan_copies_the_bottom_quarter_from_the_top_quarter():
    rng = np.random.default_rng(0)
    acc = np.array([0.1, 0.8, 0.5, 0.9, 0.2, 0.7, np.nan, 0.6])  # top: 3, 1; bottom: 6 (NaN), 0
    values = {"learning_rate": np.float32([1e-3 * (i + 1) for i in range(8)]), "l2": np.float32([1e-4] * 8)}
    for _ in range(20):
        src, new = search.pbt_plan(acc, values, rng)
        copied = [d for d in range(8) if src[d] != d]
        assert copied == [0, 6] and all(src[d] in (1, 3) for d in copied)
        for a in values:
            ratio = new[a][copied] / values[a][src[copied]]  # the source's value, × 0.8 or × 1.2 (float32)
            assert set(np.round(ratio.astype(float), 5).tolist()) <= {0.8, 1.2}
            assert new[a].dtype == np.float32 and (np.delete(new[a], copied) == np.delete(values[a], copied)).all()
    src, _ = search.pbt_plan([0.5], {"learning_rate": np.float32([1e-3])}, rng)
    assert src.tolist() == [0]  # one member: nothing to copy


def test_exploration_always_moves_a_copy_away_from_its_source():
    """0 × 0.8 = 0 and a value at its bound stay where they are under a factor: the other factor, then a
    resample from the axis's starting values, move them (else a copy trains as its bit-identical twin)."""
    rng = np.random.default_rng(1)
    for _ in range(50):
        down = np.float32(np.float32(0.95) * np.float32(0.8))
        assert search.explore(np.float32(0.95), "dropout_rate", rng) == down  # × 1.2 would clip to 0.95 itself
        assert search.explore(np.float32(0.0), "l2", rng, prior=[0.0, 1e-4, 1e-3]) in (
            np.float32(1e-4),
            np.float32(1e-3),
        )
        assert search.explore(np.float32(0.0), "l2", rng, prior=[0.0]) == 0  # nothing can move it: kept
        v = search.explore(np.float32(3e-3), "learning_rate", rng)
        assert v in (np.float32(np.float32(3e-3) * np.float32(0.8)), np.float32(np.float32(3e-3) * np.float32(1.2)))
    acc = [0.9, 0.8, 0.1, 0.2]  # member 2 copies member 0 (a quarter of 4 is one member)
    values = {"dropout_rate": np.float32([0.0, 0.3, 0.3, 0.0])}
    src, new = search.pbt_plan(acc, values, rng, {"dropout_rate": [0.0, 0.3]})
    assert src.tolist() == [0, 1, 0, 3] and new["dropout_rate"].tolist() == pytest.approx([0.0, 0.3, 0.3, 0.0])


def _population(tiny, hypers):
    tc = TrainConfig(model=MLPConfig(sizes=(16, 12, 10), batchnorm=True), batch_size=50, epochs=1)
    members = [sweep.Member(h, i, (12,)) for i, h in enumerate(hypers)]
    wide = sweep.padded_config(tc, members)
    return tc, wide, sweep.stack_members(members, tc, wide)


def test_exploit_copies_exactly_and_the_copy_continues_bit_identical(tiny):
    """A copied member is its source bit for bit (parameters, Adam moments, batch-norm statistics, EMA,
    key, step), and with its source's values it trains on as its source: one more epoch leaves the two equal
    to float32 rounding."""
    hypers = [Hyper(learning_rate=lr, dropout_rate=0.2, ema_decay=0.9) for lr in (1e-3, 3e-3, 1e-2)]
    tc, wide, (ts, masks, hyper) = _population(tiny, hypers)
    epoch = sweep.make_epoch(wide, shared_order=True, donate=False)
    x, y = jnp.asarray(tiny.x_train), jnp.asarray(tiny.y_train)
    idx = sweep.batch_indices(jax.random.PRNGKey(0), x.shape[0], tc.batch_size)
    ts, _ = epoch(ts, hyper, x, y, idx, masks)  # the members differ now
    src = jnp.array([2, 1, 2])
    same = {"learning_rate": hyper.learning_rate[src]}  # the copy keeps its source's value: a twin
    for run in (search.exploit, jax.jit(search.exploit, static_argnames="axes")):
        ts2, masks2, hyper2 = run(ts, masks, hyper, src, same, axes=("learning_rate",))
        for a, b in zip(jax.tree_util.tree_leaves((ts2, hyper2)), jax.tree_util.tree_leaves((ts, hyper))):
            np.testing.assert_array_equal(a[0], b[2])
            np.testing.assert_array_equal(a[1:], b[1:])
    ts3, _ = epoch(ts2, hyper2, x, y, idx, masks2)
    # the same inputs in two lanes of one vmapped program: equal up to float32 rounding, not always bit
    # for bit (XLA's CPU code may tile lanes of a batched matmul differently: 1 ulp seen on an AMD EPYC)
    for leaf in jax.tree_util.tree_leaves(ts3):
        np.testing.assert_allclose(leaf[0], leaf[2], rtol=1e-5, atol=1e-6)


def test_exploit_gives_the_copies_their_new_values_and_leaves_the_others_bit_for_bit(tiny):
    hypers = [Hyper(learning_rate=lr, dropout_rate=d) for lr, d in ((1e-3, 0.9), (1e-2, 0.97), (3e-3, 0.5))]
    _, _, (ts, masks, hyper) = _population(tiny, hypers)
    src = jnp.array([1, 1, 2])
    values = {"learning_rate": jnp.array([8e-3, 5.0, 5.0]), "dropout_rate": jnp.array([0.95, 0.0, 0.0])}
    for run in (search.exploit, jax.jit(search.exploit, static_argnames="axes")):
        _, _, h = run(ts, masks, hyper, src, values, axes=("learning_rate", "dropout_rate"))
        np.testing.assert_array_equal(h.learning_rate, np.float32([8e-3, 1e-2, 3e-3]))  # 1, 2: not copied
        np.testing.assert_array_equal(h.dropout_rate, np.float32([0.95, 0.97, 0.5]))
        np.testing.assert_array_equal(h.l2, hyper.l2)  # not swept: untouched
