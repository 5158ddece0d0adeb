"""Hyper: every number that may vary between runs of one compiled program (a sweep axis).

Contract::

    hyper = Hyper(learning_rate=3e-3, l2=1e-4).as_arrays()   # each field a float32 scalar array
    hyper = hyper._replace(dropout_rate=jnp.float32(0.2))
    stacked = stack([h1, h2, h3])                             # (K,) per field, for jax.vmap
    validate(hyper)                                           # ValueError naming a bad field

A NamedTuple is a pytree, so ``Hyper`` passes through ``jax.jit`` as traced leaves (one compiled step
serves any value) and through ``jax.vmap`` with a leading member axis. Structure (layer sizes, which
optimizer, which schedule) is static and lives in ``MLPConfig`` / ``TrainConfig`` instead.
Fields an optimizer or schedule does not use are ignored by it.

One switch per concept: ``dropout_rate``, ``input_dropout_rate`` and ``ema_decay`` are ``None`` by
default, which means the op is absent (no dropout layers, no parameter EMA). A number, even 0, puts
the op in and its value may then be traced or swept. ``None`` is an empty pytree node, so whether an
op exists is part of the pytree's structure, static under ``jax.jit`` — no separate flag that could
disagree with the number. Rate 0 (decay 0) gives what ``None`` gives, only with the op's work done
(sweeps use that to mix members with and without it; see ``align`` for the one caveat).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Hyper(NamedTuple):
    # optimizer
    learning_rate: float = 1e-3
    momentum: float = 0.9  # heavy-ball μ for "momentum" and "nesterov"
    b1: float = 0.9  # Adam first-moment decay
    b2: float = 0.999  # Adam second-moment decay
    eps: float = 1e-8  # Adam / RMSprop denominator guard
    rho: float = 0.9  # RMSprop squared-gradient decay
    weight_decay: float = 0.0  # AdamW decoupled decay (per unit learning rate)
    ema_decay: float | None = None  # Polyak/EMA of the parameters; None: no EMA
    # learning-rate schedule
    decay_rate: float = 0.5  # exponential / step decay factor per decay_steps
    decay_steps: float = 1000.0
    warmup_steps: float = 0.0  # linear warmup from 0 over this many steps (0: none)
    total_steps: float = 1.0  # cosine horizon (set by the trainer to epochs * steps per epoch)
    final_lr_fraction: float = 0.0  # cosine floor as a fraction of learning_rate
    # model
    l2: float = 0.0  # λ in (λ/2m) Σ‖W‖²
    dropout_rate: float | None = None  # probability of dropping a hidden unit; None: no dropout
    input_dropout_rate: float | None = None  # probability of dropping an input pixel; None: none
    bn_momentum: float = 0.9  # running ← momentum·running + (1 − momentum)·batch
    init_scale: float = 1.0  # multiplies the init standard deviation

    def as_arrays(self, dtype=jnp.float32) -> Hyper:
        """Every number as a ``dtype`` scalar array; ``None`` (op absent) stays ``None``."""
        return Hyper(*(None if v is None else jnp.asarray(v, dtype) for v in self))

    def to_dict(self) -> dict:
        return {k: None if v is None else float(v) for k, v in self._asdict().items()}

    @classmethod
    def from_dict(cls, d: dict) -> Hyper:
        return cls(**{k: None if v is None else float(v) for k, v in d.items() if k in cls._fields})


OPTIONAL = ("dropout_rate", "input_dropout_rate", "ema_decay")  # None: the op is absent


def align(hypers) -> list:
    """The same Hyper values with one pytree structure: an optional op (``OPTIONAL``) that some have
    and others do not is given to all, the ones without it getting the neutral value 0 (rate 0 drops
    nothing; decay 0 makes the EMA equal the parameters), which computes what they asked for. One
    caveat: input dropout takes its key from the step's dropout key first, so a member given input
    dropout at rate 0 draws its hidden-layer dropout masks from another key than it would without:
    the same distribution, another draw."""
    hypers = list(hypers)
    for name in OPTIONAL:
        if any(getattr(h, name) is not None for h in hypers):
            hypers = [h if getattr(h, name) is not None else h._replace(**{name: 0.0}) for h in hypers]
    return hypers


def stack(hypers) -> Hyper:
    """Stack K Hyper values (``align``ed first) into one with (K,) leaves, for ``jax.vmap``."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x, jnp.float32) for x in xs]), *align(hypers))


def validate(h: Hyper) -> None:
    """Reject values no run can use, with one line naming the field (ValueError)."""
    lr = float(h.learning_rate)  # fields that are None (op absent) are not checked
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"learning rate must be a finite number > 0, got {lr:g}")
    for name in ("dropout_rate", "input_dropout_rate"):
        if getattr(h, name) is None:
            continue
        v = float(getattr(h, name))
        if not 0 <= v < 1:
            raise ValueError(f"{name.replace('_', ' ')} must lie in [0, 1), got {v:g}")
    for name in ("decay_rate", "decay_steps", "total_steps"):
        v = float(getattr(h, name))
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name.replace('_', ' ')} must be a finite number > 0, got {v:g}")
    if not 0 <= float(h.final_lr_fraction) <= 1:
        raise ValueError(f"final lr fraction must lie in [0, 1], got {float(h.final_lr_fraction):g}")
    for name in ("l2", "weight_decay", "eps", "warmup_steps", "init_scale"):
        v = float(getattr(h, name))
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name.replace('_', ' ')} must be a finite number ≥ 0, got {v:g}")
    for name in ("momentum", "b1", "b2", "rho", "ema_decay", "bn_momentum"):
        if getattr(h, name) is None:
            continue
        v = float(getattr(h, name))
        if not 0 <= v < 1:
            raise ValueError(f"{name.replace('_', ' ')} must lie in [0, 1), got {v:g}")
