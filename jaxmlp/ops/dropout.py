"""Inverted dropout (Srivastava et al. 2014).

Contract::

    y, cache = forward(x, dropout_rate, key)    # x, y: (batch, d); dropout_rate = P(drop)
    dx = backward(cache, dy)

Training: each unit is kept with probability ``1 - dropout_rate`` and kept units are scaled by
``1 / (1 - dropout_rate)``, so E[y] = x and evaluation is the identity. ``cache`` is the scaled mask
``m = keep / (1 - dropout_rate)``; y = x ⊙ m and dL/dx = dL/dy ⊙ m.
``dropout_rate`` may be a traced array (a sweep axis); it must lie in [0, 1).
"""

import jax
import jax.numpy as jnp


def forward(x, dropout_rate, key):
    keep_prob = 1.0 - jnp.asarray(dropout_rate, x.dtype)
    keep = jax.random.bernoulli(key, keep_prob, x.shape)  # (batch, d) bool
    mask = keep.astype(x.dtype) / keep_prob
    return x * mask, mask


def backward(cache, dy):
    return dy * cache
