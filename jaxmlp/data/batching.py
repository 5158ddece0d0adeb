"""Mini-batches on the device: a uniformly random permutation and the epoch's batch rows.

Contract::

    perm = permutation(key, n)                          # (n,) int32, uniformly random
    idx = batch_indices(key, n, 128)                    # (n // 128, 128) int32, for lax.scan
    check_batch_size(batch_size, n)                     # ValueError when batch_size > n
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax


def check_batch_size(batch_size: int, num_examples: int) -> None:
    """One line (ValueError) when a batch cannot be drawn from ``num_examples`` training examples."""
    if batch_size > num_examples:
        raise ValueError(f"batch size {batch_size} is larger than the {num_examples} training examples")


def batch_indices(key, num_examples: int, batch_size: int):
    """A fresh permutation cut into ``(num_batches, batch_size)`` int32 rows for ``lax.scan``.

    ``num_batches = num_examples // batch_size``: the remainder (fewer than ``batch_size`` examples)
    is left out of this epoch. Because the permutation is new each epoch, a different remainder is left
    out each time, so every example is seen in expectation; static shapes keep one compiled step.
    """
    check_batch_size(batch_size, num_examples)
    num_batches = num_examples // batch_size
    perm = permutation(key, num_examples)  # (num_examples,) int32
    return perm[: num_batches * batch_size].reshape(num_batches, batch_size)


def permutation(key, n: int):
    """A uniformly random permutation of ``range(n)``, (n,) int32: ``jax.random.permutation``'s
    algorithm, sorting one uint32 array per round instead of (key, value) pairs.

    The algorithm (tjablin's, as in ``jax.random.permutation`` and TensorFlow's random_ops): stable-sort
    the sequence by fresh random keys, ``rounds`` times. Ties between keys are the only source of bias;
    once every element's concatenated keys are distinct the result is an exact uniform sample, and the
    stopping rule ``rounds = ceil(3 ln n / ln M)`` (M = number of key values) makes that near certain.
    ``jax.random.permutation`` sorts (32-bit key, value) pairs, which XLA:CPU sorts through a generic
    comparator. Here each round packs its key into the high bits and the element's current position
    into the low ``b = bit_length(n - 1)`` bits of ONE uint32 and sorts that array alone: the positions
    make every value distinct and break ties in order, so this is the same stable sort with
    (32 - b)-bit keys, M = 2**(32 - b), and the same stopping rule gives the rounds (3 at n = 50,000 or
    60,000). Above 2**20 elements (keys under 12 bits) it calls ``jax.random.permutation``. What the
    single-array sort saves is measured in benchmarks/RESULTS.md ("Where the step's time goes").
    """
    index_bits = max(1, (n - 1).bit_length())
    key_bits = 32 - index_bits
    if key_bits < 12:
        return jax.random.permutation(key, n).astype(jnp.int32)
    rounds = max(1, math.ceil(3 * math.log(max(n, 2)) / (key_bits * math.log(2))))
    position = lax.iota(jnp.uint32, n)
    low = jnp.uint32((1 << index_bits) - 1)
    perm = None
    for round_key in jax.random.split(key, rounds):
        sort_keys = jax.random.bits(round_key, (n,), jnp.uint32) & ~low  # (n,) key in the high bits
        order = (lax.sort(sort_keys | position) & low).astype(jnp.int32)  # (n,) positions, stably sorted
        perm = order if perm is None else perm[order]
    return perm
