"""The multilayer perceptron: forward through the ops, and a hand-written backward walking them back.

Contract::

    config = MLPConfig(sizes=(784, 512, 512, 10), activation="relu", batchnorm=False)
    params, state = init(key, config)
    logits, state = forward(params, state, x, config=config)                      # evaluation mode
    logits, state = forward(params, state, x, config=config, hyper=hyper, train=True, key=k)
    logits, state, caches = forward_with_caches(params, state, x, config=config, hyper=hyper,
                                                train=True, key=k)
    grads = backward(params, caches, dlogits, config=config)
    cost, grads, state, aux = loss_and_grads(params, state, (x, y), hyper, k, config=config)

The input may pass through [input dropout]; each hidden layer is
linear → [batch norm] → activation → [dropout]; the output layer is linear and produces logits; the
cost is cross-entropy from logits plus the L2 penalty (see ``ops.losses``). With batch norm a hidden
linear layer has no bias: β plays its role (a bias before BN has zero gradient).
``config.matmul_dtype="bfloat16"`` runs every matmul on bfloat16 operands with float32 accumulation,
parameters and loss (mixed precision; see ``ops.linear``). ``config`` holds the shapes and which
layers exist (static); ``hyper`` (``jaxmlp.hyper.Hyper``) holds the numbers that may vary in a sweep
(``l2``, ``bn_momentum``, and the dropout rates, whose ``None`` means no dropout layer), as arrays.

``params`` is a tuple with one dict per layer ({"W", "b"} or {"W", "gamma", "beta"});
``state`` is a tuple with one dict per hidden layer ({"mean", "var"} with batch norm, else {}).
``jax.grad`` is never used here except by the referee's functions, ``cost`` and
``autodiff_loss_and_grads``, which tests, ``gradcheck`` and benchmarks use to check and time it.

Width sweeps (``jaxmlp.sweep``) pad narrow members to the widest layer and multiply each hidden
activation by a 0/1 width mask; the private ``_forward`` / ``_backward`` / ``_loss_and_grads`` take
those masks, the public functions are the same with none.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmlp.hyper import Hyper
from jaxmlp.ops import activations, batchnorm, dropout, linear, losses

MATMUL_DTYPES = ("float32", "bfloat16")
WEIGHT_GRAD_LAYOUTS = ("auto", "plain")


@dataclass(frozen=True)
class MLPConfig:
    sizes: tuple = (784, 512, 512, 10)  # (d_in, hidden..., d_out)
    activation: str = "relu"
    batchnorm: bool = False
    init: str = "he"
    matmul_dtype: str = "float32"  # "bfloat16": mixed precision, bf16 matmul operands (ops.linear)
    # "auto": narrowing layers compute dW as (dyᵀx)ᵀ, faster for one model on XLA:CPU; "plain":
    # always xᵀdy, what vmapped sweeps use (ops.linear.weight_grad). Same values either way.
    weight_grad_layout: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
        if len(self.sizes) < 2 or any(s <= 0 for s in self.sizes):
            raise ValueError(f"layer sizes must be ≥ 2 positive integers, got {self.sizes}")
        if self.matmul_dtype not in MATMUL_DTYPES:
            raise ValueError(f"unknown matmul dtype {self.matmul_dtype!r}; choose from {', '.join(MATMUL_DTYPES)}")
        if self.weight_grad_layout not in WEIGHT_GRAD_LAYOUTS:
            raise ValueError(
                f"unknown weight-gradient layout {self.weight_grad_layout!r}; choose from "
                f"{', '.join(WEIGHT_GRAD_LAYOUTS)}"
            )
        activations.check(self.activation)
        linear.init_std(self.init, 1, 1)

    @property
    def num_hidden(self) -> int:
        return len(self.sizes) - 2

    @property
    def matmul_operand_dtype(self):
        """The dtype matmul operands are cast to (None: plain float32, no cast)."""
        return None if self.matmul_dtype == "float32" else jnp.dtype(self.matmul_dtype)

    def to_dict(self) -> dict:
        return {
            "sizes": list(self.sizes),
            "activation": self.activation,
            "batchnorm": self.batchnorm,
            "init": self.init,
            "matmul_dtype": self.matmul_dtype,
            "weight_grad_layout": self.weight_grad_layout,
        }

    @classmethod
    def from_dict(cls, d: dict) -> MLPConfig:
        """The inverse of ``to_dict``; missing fields take their defaults, unknown ones are a ValueError."""
        check_fields(cls, d)
        return cls(**d)


def check_fields(cls, d: dict) -> None:
    """ValueError naming the keys of ``d`` that are not fields of the dataclass ``cls`` (a configuration
    written by another jaxmlp version: jaxmlp 0.1.0's dropout / input_dropout / ema switches are
    ``Hyper`` numbers now, and ``jaxmlp.run.load_model`` converts such files)."""
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {', '.join(unknown)}")


def init(key, config: MLPConfig, *, scale=1.0, dtype=jnp.float32):
    """Params and state pytrees. ``scale`` multiplies every weight's init standard deviation."""
    keys = jax.random.split(key, len(config.sizes) - 1)
    params, state = [], []
    for i, (d_in, d_out) in enumerate(zip(config.sizes[:-1], config.sizes[1:])):
        hidden = i < config.num_hidden
        use_bn = hidden and config.batchnorm
        p = linear.init(keys[i], d_in, d_out, config.init, bias=not use_bn, scale=scale, dtype=dtype)
        if use_bn:
            p.update(batchnorm.init(d_out, dtype))
        params.append(p)
        if hidden:
            state.append(batchnorm.init_state(d_out, dtype) if use_bn else {})
    return tuple(params), tuple(state)


def forward(params, state, x, *, config: MLPConfig, hyper=None, train: bool = False, key=None):
    """x: (batch, d_in) -> (logits (batch, d_out), new state).

    ``train=False`` (evaluation): running batch-norm statistics, no dropout; the state comes back as
    it went in. ``train=True``: batch statistics (the running ones are updated into the new state)
    and, where ``hyper`` has dropout rates, dropout drawn from ``key``.

    Differentiable by the hand-derived backward: ``jax.grad`` (``jax.vjp``, …) of any function of the
    logits, with respect to ``params``, ``x`` and (evaluation mode) the running statistics in
    ``state``, runs ``backward``'s rules (``jax.custom_vjp``), under ``jit``, ``vmap`` and ``lax.scan``.
    ``hyper`` and ``key`` are not differentiated, and the returned state is under ``stop_gradient``
    (running statistics are bookkeeping, not a function to train through). ``autodiff_forward`` is the
    same forward differentiated by plain autodiff: the referee.
    """
    logits, new_state = _differentiable_forward(params, state, x, config, jax.lax.stop_gradient(hyper), train, key)
    return logits, jax.lax.stop_gradient(new_state)


def autodiff_forward(params, state, x, *, config: MLPConfig, hyper=None, train: bool = False, key=None):
    """``forward`` with its gradients left to ``jax.grad``'s autodiff of the forward ops: the referee
    that the hand-derived backward is checked against."""
    logits, new_state, _ = _forward(params, state, x, config, hyper, train, key, None)
    return logits, new_state


@partial(jax.custom_vjp, nondiff_argnums=(3, 5))
def _differentiable_forward(params, state, x, config, hyper, train, key):
    logits, new_state, _ = _forward(params, state, x, config, hyper, train, key, None)
    return logits, new_state


def _differentiable_forward_fwd(params, state, x, config, hyper, train, key):
    logits, new_state, caches = _forward(params, state, x, config, hyper, train, key, None)
    return (logits, new_state), (params, state, hyper, caches)


def _differentiable_forward_bwd(config, train, residuals, cotangents):
    params, state, hyper, caches = residuals
    dlogits, _ = cotangents  # the new state's cotangent: zero (stop_gradient in forward)
    grads, state_grads, dx = _backward(params, caches, dlogits, config, None, train=train, need_dx=True)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, hyper)
    return grads, state_grads, dx, zeros, None


_differentiable_forward.defvjp(_differentiable_forward_fwd, _differentiable_forward_bwd)


class Caches(NamedTuple):
    """What ``backward`` needs from a forward pass."""

    input_dropout: object  # the input-dropout mask (batch, d_in), or None
    hidden: tuple  # per hidden layer: (linear, batch norm, activation, dropout) caches, None where absent
    output: object  # the output layer's linear cache


def forward_with_caches(params, state, x, *, config: MLPConfig, hyper=None, train: bool = False, key=None):
    """``forward`` that also returns what ``backward`` needs: (logits, new state, ``Caches``)."""
    return _forward(params, state, x, config, hyper, train, key, None)


def _forward(params, state, x, config: MLPConfig, hyper, train: bool, key, masks):
    """``forward_with_caches`` with optional width ``masks``: a tuple of (d_hidden,) 0/1 vectors, one
    per hidden layer, multiplied into each activation so that padded units output exactly 0."""
    if train and hyper is None:
        hyper = Hyper()
    use_dropout = train and hyper.dropout_rate is not None
    use_input_dropout = train and hyper.input_dropout_rate is not None
    if (use_dropout or use_input_dropout) and key is None:
        raise ValueError("forward(train=True) with dropout needs a key")
    h, input_mask = x, None
    if use_input_dropout:
        # the first linear layer caches the dropped-out input, so its dW needs nothing more; the mask
        # is kept for the input gradient (differentiating forward with respect to x)
        key, in_key = jax.random.split(key)
        h, input_mask = dropout.forward(h, hyper.input_dropout_rate, in_key)
    drop_keys = jax.random.split(key, config.num_hidden) if use_dropout else None
    caches, new_state = [], []
    for i in range(config.num_hidden):
        p = params[i]
        z, lin_cache = linear.forward(p, h, config.matmul_operand_dtype)  # (batch, d_out)
        bn_cache = None
        if config.batchnorm:
            if train:
                z, bn_cache, mean, var = batchnorm.forward_train(p, z)
                new_state.append(batchnorm.update_state(state[i], mean, var, z.shape[0], hyper.bn_momentum))
            else:
                z, bn_cache = batchnorm.forward_eval_with_cache(p, state[i], z)
                new_state.append(state[i])
        else:
            new_state.append(state[i])
        h, act_cache = activations.forward(config.activation, z)
        if masks is not None:
            h = h * masks[i]  # (batch, d): padded units output exactly 0
        drop_cache = None
        if use_dropout:
            h, drop_cache = dropout.forward(h, hyper.dropout_rate, drop_keys[i])
        caches.append((lin_cache, bn_cache, act_cache, drop_cache))
    logits, out_cache = linear.forward(params[-1], h, config.matmul_operand_dtype)  # (batch, d_out)
    return logits, tuple(new_state), Caches(input_mask, tuple(caches), out_cache)


def weights(params):
    return [p["W"] for p in params]


def cost(params, state, batch, hyper, key, *, config: MLPConfig):
    """J = mean cross-entropy + (λ/2m) Σ‖W‖² in training mode. The function the referee differentiates."""
    return _cost(params, state, batch, hyper, key, config, None)


def _cost(params, state, batch, hyper, key, config: MLPConfig, masks):
    x, y = batch
    logits, _, _ = _forward(params, state, x, config, hyper, True, key, masks)
    data_loss, _ = losses.cross_entropy_forward(logits, y)
    return data_loss + losses.l2_penalty(weights(params), hyper.l2, x.shape[0])


def backward(params, caches, dlogits, *, config: MLPConfig, train: bool = True):
    """Walk the layers in reverse: dlogits (batch, d_out) -> grads with the structure of ``params``.

    ``caches`` from ``forward_with_caches`` with the same ``train``. The first layer's input gradient
    is not computed here (the input is data; ``jax.grad`` through ``forward`` gives it)."""
    grads, _, _ = _backward(params, caches, dlogits, config, None, train=train)
    return grads


def _backward(params, caches, dlogits, config: MLPConfig, masks, *, train: bool = True, need_dx: bool = False):
    """(grads like params, grads like the incoming state, dL/dx or None). The state's gradient is
    zero in training mode (batch statistics are used, not the running ones)."""
    grads, state_grads = [None] * len(params), [{} for _ in range(config.num_hidden)]
    transpose = config.weight_grad_layout == "auto"
    dh, grads[-1] = linear.backward(
        params[-1], caches.output, dlogits, need_dx=need_dx or config.num_hidden > 0, transpose_narrow=transpose
    )
    for i in reversed(range(config.num_hidden)):
        lin_cache, bn_cache, act_cache, drop_cache = caches.hidden[i]
        if drop_cache is not None:
            dh = dropout.backward(drop_cache, dh)
        if masks is not None:
            dh = dh * masks[i]
        dz = activations.backward(config.activation, act_cache, dh)
        g = {}
        if bn_cache is not None and train:
            dz, g = batchnorm.backward(bn_cache, dz)
            state_grads[i] = {"mean": jnp.zeros_like(g["beta"]), "var": jnp.zeros_like(g["beta"])}
        elif bn_cache is not None:
            dz, g, state_grads[i] = batchnorm.backward_eval(bn_cache, dz)
        dh, g_lin = linear.backward(params[i], lin_cache, dz, need_dx=need_dx or i > 0, transpose_narrow=transpose)
        g.update(g_lin)
        grads[i] = g
    if need_dx and caches.input_dropout is not None:
        dh = dropout.backward(caches.input_dropout, dh)
    return tuple(grads), tuple(state_grads), dh if need_dx else None


def loss_and_grads(params, state, batch, hyper, key, *, config: MLPConfig):
    """Cost, its hand-derived gradient, the updated batch-norm state, and aux metrics.

    batch = (x (batch, d_in) float, y (batch,) int labels). Returns
    (cost, grads, new_state, {"data_loss": mean CE, "correct": number of argmax hits}).
    """
    return _loss_and_grads(params, state, batch, hyper, key, config, None)


def _loss_and_grads(params, state, batch, hyper, key, config: MLPConfig, masks):
    x, y = batch
    m = x.shape[0]
    logits, new_state, caches = _forward(params, state, x, config, hyper, True, key, masks)
    data_loss, ce_cache = losses.cross_entropy_forward(logits, y)
    grads, _, _ = _backward(params, caches, losses.cross_entropy_backward(ce_cache), config, masks)
    grads = tuple({**g, "W": g["W"] + losses.l2_backward(p["W"], hyper.l2, m)} for p, g in zip(params, grads))
    total = data_loss + losses.l2_penalty(weights(params), hyper.l2, m)
    correct = jnp.sum(jnp.argmax(logits, axis=-1) == y)
    return total, grads, new_state, {"data_loss": data_loss, "correct": correct}


def autodiff_loss_and_grads(params, state, batch, hyper, key, *, config: MLPConfig):
    """The referee's version of ``loss_and_grads``: same signature and results, gradients by jax.grad.

    Not used for training; benchmarks compare it with the hand-written path.
    """
    x, y = batch

    def f(params):
        logits, new_state, _ = _forward(params, state, x, config, hyper, True, key, None)
        data_loss, _ = losses.cross_entropy_forward(logits, y)
        total = data_loss + losses.l2_penalty(weights(params), hyper.l2, x.shape[0])
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == y)
        return total, (new_state, {"data_loss": data_loss, "correct": correct})

    (total, (new_state, aux)), grads = jax.value_and_grad(f, has_aux=True)(params)
    return total, grads, new_state, aux


def predict(params, state, x, *, config: MLPConfig):
    """Evaluation-mode class predictions (batch,) int32."""
    logits, _ = forward(params, state, x, config=config)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
