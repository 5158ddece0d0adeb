"""Batch normalization (Ioffe & Szegedy 2015) over the batch axis of (batch, d) activations.

Contract::

    params = init(d)                                      # {"gamma": (d,), "beta": (d,)}
    state = init_state(d)                                 # {"mean": (d,), "var": (d,)}
    y, cache, batch_mean, batch_var = forward_train(params, x)
    state = update_state(state, batch_mean, batch_var, batch_size, momentum)
    y = forward_eval(params, state, x)                    # running statistics, no cache
    dx, grads = backward(cache, dy)
    y, cache = forward_eval_with_cache(params, state, x)  # the same y, and what backward_eval needs
    dx, grads, state_grads = backward_eval(cache, dy)

Training uses the batch statistics μ = mean(x), σ² = mean((x − μ)²) (biased), and
x̂ = (x − μ) / √(σ² + ε),  y = γ x̂ + β.
Backward, with m the batch size and g = dy ⊙ γ:
dβ = Σ dy,  dγ = Σ dy ⊙ x̂,  dx = (1 / (m √(σ²+ε))) · (m g − Σ g − x̂ Σ (g ⊙ x̂)).

Evaluation normalizes with the running statistics μ_r, σ²_r (constants of the batch):
y = γ (x − μ_r) s + β with s = 1/√(σ²_r + ε). Its backward: dx = dy ⊙ γ s, dγ = Σ dy ⊙ (x − μ_r) s,
dβ = Σ dy, dμ_r = −Σ dy ⊙ γ s, dσ²_r = −½ s³ Σ dy ⊙ γ (x − μ_r).

Running statistics (evaluation) use the Keras/TensorFlow momentum convention:
running ← momentum · running + (1 − momentum) · batch, with momentum = 0.9 by default (PyTorch's
``momentum=0.1`` is the same rule written as 1 − momentum). The running variance takes the unbiased
batch variance σ² · m / (m − 1), as PyTorch does. ``momentum`` may be a traced array.
"""

import jax
import jax.numpy as jnp

EPS = 1e-5


def init(d: int, dtype=jnp.float32):
    return {"gamma": jnp.ones((d,), dtype), "beta": jnp.zeros((d,), dtype)}


def init_state(d: int, dtype=jnp.float32):
    return {"mean": jnp.zeros((d,), dtype), "var": jnp.ones((d,), dtype)}


def forward_train(params, x):
    mean = jnp.mean(x, axis=0)  # (d,)
    centered = x - mean  # (batch, d)
    var = jnp.mean(centered * centered, axis=0)  # (d,) biased
    inv_std = jax.lax.rsqrt(var + EPS)  # (d,)
    xhat = centered * inv_std  # (batch, d)
    y = params["gamma"] * xhat + params["beta"]
    return y, (xhat, inv_std, params["gamma"]), mean, var


def backward(cache, dy):
    xhat, inv_std, gamma = cache
    m = dy.shape[0]
    grads = {"gamma": jnp.sum(dy * xhat, axis=0), "beta": jnp.sum(dy, axis=0)}
    g = dy * gamma  # dL/dx̂, (batch, d)
    dx = (inv_std / m) * (m * g - jnp.sum(g, axis=0) - xhat * jnp.sum(g * xhat, axis=0))
    return dx, grads


def update_state(state, batch_mean, batch_var, batch_size: int, momentum):
    momentum = jnp.asarray(momentum, batch_mean.dtype)
    unbiased = batch_var * (batch_size / max(batch_size - 1, 1))
    return {
        "mean": momentum * state["mean"] + (1 - momentum) * batch_mean,
        "var": momentum * state["var"] + (1 - momentum) * unbiased,
    }


def forward_eval(params, state, x):
    inv_std = jax.lax.rsqrt(state["var"] + EPS)
    return params["gamma"] * (x - state["mean"]) * inv_std + params["beta"]


def forward_eval_with_cache(params, state, x):
    """``forward_eval``'s y (the same expression) and the cache ``backward_eval`` needs."""
    centered = x - state["mean"]  # (batch, d)
    inv_std = jax.lax.rsqrt(state["var"] + EPS)  # (d,)
    return params["gamma"] * centered * inv_std + params["beta"], (centered, inv_std, params["gamma"])


def backward_eval(cache, dy):
    """Evaluation-mode backward: (dx, {"gamma", "beta"} grads, {"mean", "var"} grads of the running
    statistics) — see the module's contract for the formulas."""
    centered, inv_std, gamma = cache
    g = dy * gamma  # (batch, d)
    grads = {"gamma": jnp.sum(dy * centered, axis=0) * inv_std, "beta": jnp.sum(dy, axis=0)}
    state_grads = {"mean": -jnp.sum(g, axis=0) * inv_std, "var": -0.5 * inv_std**3 * jnp.sum(g * centered, axis=0)}
    return g * inv_std, grads, state_grads
