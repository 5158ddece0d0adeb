"""jaxmlp.data.batching: the on-device permutation and the epoch's batch rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import data


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
    key, n = jax.random.PRNGKey(5), 2**20 + 1
    ours = jax.jit(data.permutation, static_argnums=1)
    np.testing.assert_array_equal(ours(key, n), jax.jit(jax.random.permutation, static_argnums=1)(key, n))
    edge = np.asarray(ours(key, 2**20))  # the packed path's largest n: 12-bit keys, 5 rounds
    np.testing.assert_array_equal(np.sort(edge), np.arange(2**20))


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
    perms = np.asarray(
        jax.jit(jax.vmap(lambda k: data.permutation(k, 5)))(jax.random.split(jax.random.PRNGKey(0), 60_000))
    )
    codes = perms @ (5 ** np.arange(5))
    _, counts = np.unique(codes, return_counts=True)
    assert len(counts) == 120
    chi2 = np.sum((counts - 500.0) ** 2 / 500.0)
    assert chi2 < 200, chi2
