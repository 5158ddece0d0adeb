"""Hand-written optimizers as optax-style ``(init, update)`` pairs with NamedTuple states. No optax.

Contract::

    opt = get("adam")                                   # an Optimizer(init, update)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params, hyper)
    params = apply_updates(params, updates)             # params + updates

``hyper`` is a ``jaxmlp.hyper.Hyper`` (any object with the named fields works); every number is read
from it as an array, so one compiled step serves any value and ``jax.vmap`` can sweep it.
``hyper.learning_rate`` is the rate for THIS step: the trainer puts the schedule's value there.

Update rules (g the gradient, η the learning rate, t = 1, 2, … the step count after this update):
  - ``sgd``:       Δ = −η g
  - ``momentum``:  v ← μ v + g;  Δ = −η v                 (heavy-ball form, Polyak 1964; as PyTorch)
  - ``nesterov``:  v ← μ v + g;  Δ = −η (g + μ v)         (Sutskever et al. 2013, as PyTorch)
  - ``rmsprop``:   s ← ρ s + (1 − ρ) g²;  Δ = −η g / (√s + ε)        (Tieleman & Hinton 2012;
                   ε outside the root, as PyTorch — optax's rmsprop uses √(s + ε))
  - ``adam``:      m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;
                   m̂ = m / (1 − β₁ᵗ);  v̂ = v / (1 − β₂ᵗ);  Δ = −η m̂ / (√v̂ + ε)  (Kingma & Ba 2015),
                   computed as Δ = −α_t m / (√v + ε̂), α_t = η √(1 − β₂ᵗ) / (1 − β₁ᵗ),
                   ε̂ = ε √(1 − β₂ᵗ): the same value, one division per element (their section 2)
  - ``adamw``:     Adam plus decoupled weight decay  Δ −= η λ_wd θ   (Loshchilov & Hutter 2019)

Parameter averaging (``ema_init`` / ``ema_update``), used for evaluation when enabled (Polyak &
Juditsky 1992, exponential form): θ̄ₜ = βₜ θ̄ₜ₋₁ + (1 − βₜ) θₜ, θ̄₀ = θ₀, t = 1, 2, … the updates taken
including this one, d the decay. The effective decay βₜ (``ema_decay_at``) is one of ``EMA_SCHEDULES``:
  - ``warmup`` (the default): βₜ = min(d, (1 + t)/(10 + t)) — TensorFlow's ExponentialMovingAverage
    with ``num_updates``. Early on the average spans about the last t/9 steps, so a short run is never
    evaluated at parameters close to their initialization; from t = (10d − 1)/(1 − d) on (8,990 steps
    for d = 0.999) it is the plain EMA.
  - ``debias``: βₜ = d (1 − dᵗ⁻¹)/(1 − dᵗ): the bias-corrected average of optax's ``ema(debias=True)``
    (θ̄ₜ = mₜ/(1 − dᵗ) with m₀ = 0, mₜ = d mₜ₋₁ + (1 − d) θₜ), kept already divided. β₁ = 0, and for
    t ≪ 1/(1 − d) it is nearly the uniform mean of all iterates so far, the early ones included.
  - ``constant``: βₜ = d: θ̄ starts at θ₀ and forgets it as dᵗ (jaxmlp ≤ 0.3.0).
Which is the default was decided by measurement: experiments/RESULTS.md, "The parameter EMA".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

tree_map = jax.tree_util.tree_map


class Optimizer(NamedTuple):
    init: Callable
    update: Callable


class SgdState(NamedTuple):
    count: jax.Array


class MomentumState(NamedTuple):
    count: jax.Array
    velocity: object  # pytree like params


class RmspropState(NamedTuple):
    count: jax.Array
    nu: object  # running mean of g²


class AdamState(NamedTuple):
    count: jax.Array
    mu: object  # first moment
    nu: object  # second moment


def _zeros(params):
    return tree_map(jnp.zeros_like, params)


def _count():
    return jnp.zeros((), jnp.int32)


def sgd() -> Optimizer:
    def init(params):
        del params
        return SgdState(_count())

    def update(grads, state, params, hyper):
        del params
        lr = hyper.learning_rate
        return tree_map(lambda g: -lr * g, grads), SgdState(state.count + 1)

    return Optimizer(init, update)


def momentum(nesterov: bool = False) -> Optimizer:
    def init(params):
        return MomentumState(_count(), _zeros(params))

    def update(grads, state, params, hyper):
        del params
        lr, mu = hyper.learning_rate, hyper.momentum
        v = tree_map(lambda v, g: mu * v + g, state.velocity, grads)
        if nesterov:
            updates = tree_map(lambda g, v: -lr * (g + mu * v), grads, v)
        else:
            updates = tree_map(lambda v: -lr * v, v)
        return updates, MomentumState(state.count + 1, v)

    return Optimizer(init, update)


def rmsprop() -> Optimizer:
    def init(params):
        return RmspropState(_count(), _zeros(params))

    def update(grads, state, params, hyper):
        del params
        lr, rho, eps = hyper.learning_rate, hyper.rho, hyper.eps
        nu = tree_map(lambda s, g: rho * s + (1 - rho) * g * g, state.nu, grads)
        updates = tree_map(lambda g, s: -lr * g / (jnp.sqrt(s) + eps), grads, nu)
        return updates, RmspropState(state.count + 1, nu)

    return Optimizer(init, update)


def adam(decoupled_weight_decay: bool = False) -> Optimizer:
    def init(params):
        return AdamState(_count(), _zeros(params), _zeros(params))

    def update(grads, state, params, hyper):
        lr, b1, b2, eps = hyper.learning_rate, hyper.b1, hyper.b2, hyper.eps
        count = state.count + 1
        t = count.astype(jnp.asarray(b1).dtype)
        mu = tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        c1, c2 = 1 - b1**t, 1 - b2**t  # bias corrections
        # η m̂ / (√v̂ + ε) = α_t m / (√v + ε̂) with the scalars α_t = η √c2 / c1 and ε̂ = ε √c2
        # (Kingma & Ba 2015, end of section 2): the same update with one division and one square
        # root per element instead of three divisions and a root (benchmarks/RESULTS.md measures it).
        step_size, eps_hat = lr * jnp.sqrt(c2) / c1, eps * jnp.sqrt(c2)

        if decoupled_weight_decay:
            wd = hyper.weight_decay
            updates = tree_map(lambda m, v, p: -(step_size * m / (jnp.sqrt(v) + eps_hat) + lr * wd * p), mu, nu, params)
        else:
            updates = tree_map(lambda m, v: -step_size * m / (jnp.sqrt(v) + eps_hat), mu, nu)
        return updates, AdamState(count, mu, nu)

    return Optimizer(init, update)


OPTIMIZERS = {
    "sgd": sgd,
    "momentum": lambda: momentum(nesterov=False),
    "nesterov": lambda: momentum(nesterov=True),
    "rmsprop": rmsprop,
    "adam": lambda: adam(decoupled_weight_decay=False),
    "adamw": lambda: adam(decoupled_weight_decay=True),
}


def get(name: str) -> Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name]()


def apply_updates(params, updates):
    return tree_map(lambda p, u: p + u, params, updates)


def ema_init(params):
    return tree_map(jnp.copy, params)  # its own buffers: params and ema are donated separately


EMA_SCHEDULES = ("warmup", "debias", "constant")


def check_ema_schedule(name: str) -> None:
    if name not in EMA_SCHEDULES:
        raise ValueError(f"unknown EMA schedule {name!r}; choose from {', '.join(EMA_SCHEDULES)}")


def ema_decay_at(schedule: str, decay, count):
    """The effective decay βₜ of ``schedule`` for decay ``d`` at update ``count`` = t ≥ 1 (this one
    included); ``decay`` and ``count`` may be traced or swept (arrays broadcast)."""
    check_ema_schedule(schedule)
    decay = jnp.asarray(decay, jnp.result_type(decay, jnp.float32))
    t = jnp.asarray(count, decay.dtype)
    if schedule == "warmup":
        return jnp.minimum(decay, (1 + t) / (10 + t))
    if schedule == "debias":
        # 1 − dᵏ as −expm1(k log d): exact where d is near 1; log of at least the smallest normal, so
        # d = 0 (a sweep's "no EMA" member) gives β = 0 rather than 0·log 0.
        log_d = jnp.log(jnp.maximum(decay, jnp.finfo(decay.dtype).tiny))
        return decay * jnp.expm1((t - 1) * log_d) / jnp.expm1(t * log_d)
    return decay + jnp.zeros_like(t)


def ema_update(ema, params, decay, count, schedule: str = "warmup"):
    """θ̄ ← βₜ θ̄ + (1 − βₜ) θ with βₜ = ``ema_decay_at(schedule, decay, count)``; ``count`` = t, the
    updates taken including the one that produced ``params``."""
    beta = ema_decay_at(schedule, decay, count)
    return tree_map(lambda e, p: beta * e + (1 - beta) * p, ema, params)
