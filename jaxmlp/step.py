"""The pure training step, the epoch as one ``lax.scan``, and evaluation. Nothing here touches files.

Contract::

    tc = TrainConfig(model=MLPConfig(sizes=(784, 512, 512, 10)), optimizer="adam", epochs=20)
    hyper = Hyper(learning_rate=1e-3, ema_decay=0.999).as_arrays()
    ts = init_state(jax.random.PRNGKey(0), tc, hyper)
    ts, metrics = train_step(ts, hyper, (xb, yb), tc=tc)           # one step, pure
    ts, metrics = train_epoch(ts, hyper, x_train, y_train, tc=tc)  # one lax.scan over the epoch
    epoch = epoch_program(tc)                                      # the same, jitted as fit runs it
    acc, loss = evaluate(eval_params(ts), ts.bn_state, x, y, config=tc.model)

The step: hand-derived ``loss_and_grads`` → optimizer update (learning rate from the schedule at this
step) → parameter EMA (when ``hyper.ema_decay`` is not None; its effective decay at step t follows
``tc.ema_schedule``, see ``optim``). ``jax.grad`` is not used. The epoch
draws a fresh permutation (``data.batch_indices``; the remainder is left out) and scans the step over
its rows, gathering each batch from the device-resident training arrays. Keys: the state's key is split
once per epoch into the next state key, the permutation key, and a base from which step i's dropout key
is ``fold_in(base, i)``; resuming from a checkpoint therefore replays exactly the same randomness.

The private ``_step`` / ``_epoch`` take what only sweeps and benchmarks vary: the gradient function
(width-masked for sweeps, ``jax.grad``'s for benchmarks) and the epoch's batch rows (a sweep's shared
order).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmlp import compiler, optim, schedules
from jaxmlp.data.batching import batch_indices
from jaxmlp.hyper import Hyper
from jaxmlp.mlp import MLPConfig, check_fields, forward, init, loss_and_grads


@dataclass(frozen=True)
class TrainConfig:
    """Static structure of a run (anything that changes the compiled program)."""

    model: MLPConfig = field(default_factory=MLPConfig)
    optimizer: str = "adam"
    schedule: str = "constant"
    batch_size: int = 128
    epochs: int = 20
    patience: int = 0  # early stopping: epochs without a better dev accuracy (0: never stop early)
    seed: int = 0
    scan_unroll: int = 1  # steps per iteration of the epoch's loop (GPU: less per-step loop overhead)
    ema_schedule: str = "warmup"  # the EMA's effective decay over steps (optim.EMA_SCHEDULES)

    def __post_init__(self):
        optim.get(self.optimizer)
        schedules.check(self.schedule)
        optim.check_ema_schedule(self.ema_schedule)
        if self.batch_size <= 0:
            raise ValueError(f"batch size must be ≥ 1, got {self.batch_size}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be ≥ 1, got {self.epochs}")
        if self.patience < 0:
            raise ValueError(f"patience must be ≥ 0, got {self.patience}")
        if self.scan_unroll < 1:
            raise ValueError(f"scan unroll must be ≥ 1, got {self.scan_unroll}")

    def to_dict(self) -> dict:
        return {f.name: self.model.to_dict() if f.name == "model" else getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The inverse of ``to_dict``; missing fields take their defaults, unknown ones are a ValueError,
        except ``ema_schedule``: a config written before it existed (jaxmlp ≤ 0.3.0) trained with
        ``"constant"``, so that is what it resumes with."""
        check_fields(cls, d)
        return cls(**{"ema_schedule": "constant", **d, "model": MLPConfig.from_dict(d["model"])})


class TrainState(NamedTuple):
    params: tuple
    bn_state: tuple
    opt_state: object
    ema: object  # a copy of params' structure, or None when hyper.ema_decay is None
    step: jax.Array  # int32, optimizer steps taken
    key: jax.Array  # PRNGKey for everything random from here on


def init_state(key, tc: TrainConfig, hyper: Hyper) -> TrainState:
    """A fresh state; it carries a parameter EMA exactly when ``hyper.ema_decay`` is not None."""
    init_key, key = jax.random.split(key)
    params, bn_state = init(init_key, tc.model, scale=hyper.init_scale)
    opt_state = optim.get(tc.optimizer).init(params)
    ema = optim.ema_init(params) if hyper.ema_decay is not None else None
    return TrainState(params, bn_state, opt_state, ema, jnp.zeros((), jnp.int32), key)


def eval_params(ts: TrainState):
    """The parameters to evaluate: the EMA when the state has one, else the raw parameters."""
    return ts.params if ts.ema is None else ts.ema


def with_cosine_horizon(hyper: Hyper, tc: TrainConfig, steps_per_epoch: int) -> Hyper:
    """For the cosine schedule, set total_steps to the run's length unless the user set it."""
    if tc.schedule == "cosine" and float(hyper.total_steps) <= 1:
        return hyper._replace(total_steps=float(tc.epochs * steps_per_epoch))
    return hyper


def train_step(ts: TrainState, hyper: Hyper, batch, *, tc: TrainConfig, key=None):
    """One optimizer step on ``batch`` = (x (b, d_in), y (b,)). ``key``: this step's dropout key
    (default: the state's key folded with the step count).

    Returns the new state and {"loss": cost, "correct": number of argmax hits}.
    """
    return _step(ts, hyper, batch, tc, key, partial(loss_and_grads, config=tc.model))


def _step(ts: TrainState, hyper: Hyper, batch, tc: TrainConfig, key, grad_fn):
    """``train_step`` with the gradient function ``grad_fn(params, state, batch, hyper, key)``."""
    if (ts.ema is None) != (hyper.ema_decay is None):
        raise ValueError(
            "the training state and hyper disagree about the parameter EMA: build the state with "
            "init_state from the same hyper (ema_decay None: no EMA; a number: EMA with that decay)"
        )
    if key is None:
        key = jax.random.fold_in(ts.key, ts.step)
    cost, grads, bn_state, aux = grad_fn(ts.params, ts.bn_state, batch, hyper, key)
    step_hyper = hyper._replace(learning_rate=schedules.learning_rate_at(tc.schedule, ts.step, hyper))
    updates, opt_state = optim.get(tc.optimizer).update(grads, ts.opt_state, ts.params, step_hyper)
    params = optim.apply_updates(ts.params, updates)
    ema = None if ts.ema is None else optim.ema_update(ts.ema, params, hyper.ema_decay, ts.step + 1, tc.ema_schedule)
    new = TrainState(params, bn_state, opt_state, ema, ts.step + 1, ts.key)
    return new, {"loss": cost, "correct": aux["correct"]}


def train_epoch(ts: TrainState, hyper: Hyper, x, y, *, tc: TrainConfig):
    """One epoch as a single ``lax.scan``. x: (n, d_in) float, y: (n,) int, both on the device.

    The batch order is a fresh permutation drawn from the state's key.
    Returns the new state and per-step metrics {"loss": (num_batches,), "correct": (num_batches,)}.
    """
    return _epoch(ts, hyper, x, y, tc, None, partial(loss_and_grads, config=tc.model))


def epoch_order(key, n: int, tc: TrainConfig):
    """The batch order of the epoch that starts with state key ``key``: (n // batch_size, batch_size)
    rows, the draw ``train_epoch`` makes."""
    _, perm_key, _ = jax.random.split(key, 3)
    return batch_indices(perm_key, n, tc.batch_size)


def _step_on_rows(ts: TrainState, hyper: Hyper, x, y, rows, tc: TrainConfig, key, grad_fn):
    """``_step`` on the batch of training rows ``rows`` (batch_size,), gathered on the device."""
    batch = (jnp.take(x, rows, axis=0), jnp.take(y, rows, axis=0))
    return _step(ts, hyper, batch, tc, key, grad_fn)


def _epoch(ts: TrainState, hyper: Hyper, x, y, tc: TrainConfig, idx, grad_fn):
    """``train_epoch`` with the gradient function of ``_step`` and, when ``idx`` (num_batches,
    batch_size) is given, that batch order instead of the state's own draw."""
    key, _, step_base = jax.random.split(ts.key, 3)
    if idx is None:
        idx = epoch_order(ts.key, x.shape[0], tc)  # (num_batches, batch_size)

    def body(ts, inp):
        i, rows = inp
        return _step_on_rows(ts, hyper, x, y, rows, tc, jax.random.fold_in(step_base, i), grad_fn)

    steps = jnp.arange(idx.shape[0])
    ts, metrics = jax.lax.scan(body, ts, (steps, idx), unroll=tc.scan_unroll)
    return ts._replace(key=key), metrics


SEGMENT_FLOPS = 2e10  # about a second of a slow CPU: how much one segment of fit's epoch computes


def segment_steps(tc: TrainConfig, num_batches: int) -> int:
    """How many steps one segment of ``fit``'s epoch runs: about ``SEGMENT_FLOPS`` of work (a step of
    batch b through layers d_i → d_{i+1} costs ≈ 6·b·Σ d_i·d_{i+1}: forward 2, backward 4), between 1
    and the epoch's ``num_batches``. Between segments the host gets control back, so an interrupt is
    answered within one segment rather than one epoch."""
    sizes = tc.model.sizes
    flops = 6 * tc.batch_size * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return max(1, min(num_batches, -(-int(SEGMENT_FLOPS) // max(flops, 1))))


def train_segment(ts: TrainState, hyper: Hyper, x, y, idx, start, *, tc: TrainConfig, length: int):
    """Steps ``start`` … ``start + length − 1`` of the epoch whose batch order is ``idx`` (num_batches,
    batch_size) from ``epoch_order(ts.key, …)``; steps past the epoch's end are skipped (``lax.cond``)
    and give zero metrics. The state's key stays the epoch's until its last step, then moves on as in
    ``train_epoch``: the segments of an epoch, run in order, are that epoch, step for step, with the
    same dropout keys (``fold_in(base, i)`` with i the step's index in the epoch)."""
    num_batches = idx.shape[0]
    key, _, step_base = jax.random.split(ts.key, 3)
    grad_fn = partial(loss_and_grads, config=tc.model)

    def run(ts, i):
        rows = jnp.take(idx, i, axis=0)
        return _step_on_rows(ts, hyper, x, y, rows, tc, jax.random.fold_in(step_base, i), grad_fn)

    def body(ts, i):
        shapes = jax.eval_shape(run, ts, i)[1]
        skip = lambda ts, i: (ts, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))  # noqa: E731
        return jax.lax.cond(i < num_batches, run, skip, ts, i)

    ts, metrics = jax.lax.scan(body, ts, start + jnp.arange(length), unroll=tc.scan_unroll)
    return ts._replace(key=jnp.where(start + length >= num_batches, key, ts.key)), metrics


def segment_program(tc: TrainConfig, length: int, *, donate: bool = True):
    """``train_segment`` jitted for ``tc`` and ``length`` as ``fit`` runs it:
    ``segment(ts, hyper, x, y, idx, start) -> (ts, metrics)``; ``donate`` as in ``epoch_program``."""
    return jax.jit(
        partial(train_segment, tc=tc, length=length),
        donate_argnums=0 if donate else (),
        compiler_options=compiler.epoch_options(),
    )


def epoch_program(tc: TrainConfig, *, donate: bool = True):
    """``train_epoch`` jitted for ``tc`` with the library's compiler options (``compiler.
    epoch_options``), as ``fit`` runs it: ``epoch(ts, hyper, x, y) -> (ts, metrics)``. With
    ``donate`` the incoming state's buffers are reused for the new state: do not touch ``ts`` after."""
    return jax.jit(
        partial(train_epoch, tc=tc), donate_argnums=0 if donate else (), compiler_options=compiler.epoch_options()
    )


def evaluate(params, bn_state, x, y, *, config: MLPConfig, chunk: int = 10_000):
    """Evaluation-mode (accuracy, mean cross-entropy) over (x, y), in chunks of ``chunk`` rows."""
    n = x.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    correct, loss_sum = 0, 0.0
    for s in range(0, n, chunk):
        c, loss = _eval_chunk(params, bn_state, x[s : s + chunk], y[s : s + chunk], config=config)
        correct += int(c)
        loss_sum += float(loss)
    return correct / n, loss_sum / n


@partial(jax.jit, static_argnames=("config",))
def _eval_chunk(params, bn_state, x, y, *, config):
    logits, _ = forward(params, bn_state, x, config=config)
    logp = jax.nn.log_softmax(logits)
    loss_sum = -jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=-1))
    return jnp.sum(jnp.argmax(logits, axis=-1) == y), loss_sum
