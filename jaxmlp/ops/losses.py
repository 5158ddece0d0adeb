"""Softmax, cross-entropy from logits (fused backward), and the L2 penalty.

Contract::

    p = softmax(z)                                   # z: (batch, classes), rows sum to 1
    dz = softmax_backward(p, dp)                     # vector-Jacobian product of softmax
    loss, cache = cross_entropy_forward(z, labels)   # labels: (batch,) int; loss: mean over batch
    dz = cross_entropy_backward(cache)               # (p − y) / m, the fused softmax+CE backward
    penalty = l2_penalty(weights, l2, m); dW = l2_backward(W, l2, m)

Stability: softmax subtracts the row maximum; the loss uses log-softmax,
L_i = logsumexp(z_i) − z_{i, y_i}, so no probability is ever passed through log (the seed notebook's
naive ``exp(z) / sum(exp(z))`` on raw 0–255 pixels overflowed to NaN).

Cost convention (Ng's course, the seed's to-do list):  J = (1/m) Σ_i L_i + (λ / 2m) Σ_layers ‖W‖²_F,
with m the number of examples in the batch the cost is computed on; the penalty covers weight matrices
only (not biases, not batch-norm γ/β); dJ/dW gains (λ/m) W.
"""

import jax
import jax.numpy as jnp


def softmax(z):
    z = z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    e = jnp.exp(z)
    return e / jnp.sum(e, axis=-1, keepdims=True)


def log_softmax(z):
    z = z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    return z - jnp.log(jnp.sum(jnp.exp(z), axis=-1, keepdims=True))


def softmax_backward(p, dp):
    """dL/dz_j = p_j (dp_j − Σ_k dp_k p_k)  (the softmax Jacobian diag(p) − p pᵀ applied to dp)."""
    return p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True))


def cross_entropy_forward(z, labels):
    """Mean cross-entropy of integer ``labels`` (batch,) under logits ``z`` (batch, classes)."""
    logp = log_softmax(z)  # (batch, classes)
    picked = jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
    return -jnp.mean(picked), (jnp.exp(logp), labels)


def cross_entropy_backward(cache, dloss=1.0):
    """dL/dz = (p − onehot(y)) / m, times the upstream scalar ``dloss``."""
    p, labels = cache
    m, classes = p.shape
    y = (labels[:, None] == jnp.arange(classes)[None, :]).astype(p.dtype)
    return (p - y) * (jnp.asarray(dloss, p.dtype) / m)


def cross_entropy_probs(p, y_onehot):
    """The seed's loss on probabilities: −(1/m) Σ_i Σ_k y_ik log p_ik (reference use only)."""
    return -jnp.mean(jnp.sum(y_onehot * jnp.log(p), axis=-1))


def l2_penalty(weights, l2, m):
    """(λ / 2m) Σ ‖W‖² over the weight matrices in ``weights``."""
    return (l2 / (2 * m)) * sum(jnp.sum(W * W) for W in weights)


def l2_backward(W, l2, m):
    return (l2 / m) * W
