"""Learning-rate schedules: pure functions of the step, every parameter a (traceable) Hyper field.

Contract::

    lr = learning_rate_at("cosine", step, hyper)    # step: int array; lr: scalar array

With η = hyper.learning_rate and t the step (0-based):
  - ``constant``:     η
  - ``exponential``:  η · decay_rate^(t / decay_steps)            (smooth decay)
  - ``step``:         η · decay_rate^⌊t / decay_steps⌋            (staircase decay)
  - ``cosine``:       η · (f + (1 − f) · ½(1 + cos(π · min(t / total_steps, 1))))  with f = final_lr_fraction
                      (Loshchilov & Hutter 2017, without restarts)
Every schedule is then multiplied by the linear warmup min(1, (t + 1) / warmup_steps) when
warmup_steps > 0 (Goyal et al. 2017).
"""

import jax.numpy as jnp

SCHEDULES = ("constant", "exponential", "step", "cosine")


def check(kind: str) -> str:
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose from {', '.join(SCHEDULES)}")
    return kind


def learning_rate_at(kind: str, step, hyper):
    lr = jnp.asarray(hyper.learning_rate)
    t = jnp.asarray(step, lr.dtype)
    if check(kind) == "exponential":
        lr = lr * hyper.decay_rate ** (t / hyper.decay_steps)
    elif kind == "step":
        lr = lr * hyper.decay_rate ** jnp.floor(t / hyper.decay_steps)
    elif kind == "cosine":
        progress = jnp.minimum(t / hyper.total_steps, 1.0)
        f = hyper.final_lr_fraction
        lr = lr * (f + (1 - f) * 0.5 * (1 + jnp.cos(jnp.pi * progress)))
    warm = hyper.warmup_steps
    factor = jnp.where(warm > 0, jnp.minimum(1.0, (t + 1) / jnp.maximum(warm, 1.0)), 1.0)
    return lr * factor
