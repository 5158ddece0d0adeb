"""The seed notebook's model and training, reproduced faithfully, with a switch for each fix.

Contract::

    setup = SeedSetup()                                   # the seed: every switch off
    out = run(setup, x_train, y_train, x_test, y_test, key=jax.random.PRNGKey(0))
    out["first_nonfinite_step"]          # first update whose loss is inf/NaN (None: never)
    out["first_nonfinite_params_step"]   # first update after which a parameter is inf/NaN
    out["max_abs_logit"], out["test_accuracy"]

The seed: 784 → 100 (ReLU) → 10, weights ``randn * 0.01``, biases created but LEFT OUT of the forward
pass, raw 0–255 pixels, the naive softmax ``exp(z) / Σ exp(z)`` and the loss −(1/m) Σ y log p on its
output, full-batch gradient descent with learning rate 0.01. Its gradient is the usual fused
(p − y)/m, so once exp(z) overflows (z > 709 in float64, 88 in float32) p becomes inf/inf = NaN and
so does every parameter after it.

Switches (each a fix the to-do list names): ``normalize_inputs`` (pixels/255 standardized with the
training statistics), ``stable_softmax`` (subtract the row max; loss from log-softmax), ``bias``
(add b in the forward pass), ``init="he"``, ``batch_size`` (mini-batches instead of the full batch).
Built from the library's ops; the backward is hand-derived like everything else here.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.ops import activations, linear, losses
from jaxmlp.run import first_nonfinite


@dataclass(frozen=True)
class SeedSetup:
    normalize_inputs: bool = False
    stable_softmax: bool = False
    bias: bool = False
    init: str = "seed"
    batch_size: int | None = None  # None: full batch, as the seed
    learning_rate: float = 0.01
    hidden: int = 100
    steps: int = 100  # parameter updates

    def fixes(self) -> str:
        names = [
            n
            for n, on in (
                ("normalize", self.normalize_inputs),
                ("stable softmax", self.stable_softmax),
                ("bias", self.bias),
                ("He init", self.init == "he"),
                ("mini-batches", self.batch_size is not None),
            )
            if on
        ]
        return " + ".join(names) or "none (the seed)"


def init(key, setup: SeedSetup, d_in: int = 784, d_out: int = 10, dtype=jnp.float64):
    k1, k2 = jax.random.split(key)
    return (
        linear.init(k1, d_in, setup.hidden, setup.init, dtype=dtype),
        linear.init(k2, setup.hidden, d_out, setup.init, dtype=dtype),
    )


def naive_softmax(z):
    """The seed's softmax: exp(z) / Σ exp(z) with no max subtracted. Overflows for large z."""
    e = jnp.exp(z)
    return e / jnp.sum(e, axis=-1, keepdims=True)


def loss_and_grads(params, x, y, setup: SeedSetup):
    """Cost and hand-derived gradients of the seed's model; y: (m,) int labels."""
    use = [p if setup.bias else {"W": p["W"]} for p in params]  # the seed ignored its biases
    z1, c1 = linear.forward(use[0], x)  # (m, hidden)
    h, ca = activations.forward("relu", z1)
    z2, c2 = linear.forward(use[1], h)  # (m, 10) logits
    m, classes = z2.shape
    onehot = (y[:, None] == jnp.arange(classes)[None, :]).astype(z2.dtype)
    if setup.stable_softmax:
        loss, cache = losses.cross_entropy_forward(z2, y)
        dz2 = losses.cross_entropy_backward(cache)
    else:
        p = naive_softmax(z2)
        loss = losses.cross_entropy_probs(p, onehot)
        dz2 = (p - onehot) / m  # the same fused gradient, NaN once p is
    dh, g2 = linear.backward(use[1], c2, dz2)
    _, g1 = linear.backward(use[0], c1, activations.backward("relu", ca, dh), need_dx=False)
    grads = tuple({**{k: jnp.zeros_like(v) for k, v in p.items()}, **g} for p, g in zip(params, (g1, g2)))
    return loss, grads, jnp.max(jnp.abs(z2))


def run(setup: SeedSetup, x_train, y_train, x_test, y_test, *, key):
    """Train for ``setup.steps`` updates; return per-step loss and |logit| and the outcome."""
    pkey, bkey = jax.random.split(key)
    params = init(pkey, setup, x_train.shape[1], int(jnp.max(y_train)) + 1, x_train.dtype)
    n = x_train.shape[0]

    def step(params, i):
        if setup.batch_size is None:
            xb, yb = x_train, y_train
        else:
            rows = jax.random.choice(jax.random.fold_in(bkey, i), n, (setup.batch_size,), replace=False)
            xb, yb = x_train[rows], y_train[rows]
        loss, grads, max_logit = loss_and_grads(params, xb, yb, setup)
        params = jax.tree_util.tree_map(lambda p, g: p - setup.learning_rate * g, params, grads)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree_util.tree_leaves(params)]))
        return params, (loss, max_logit, finite)

    params, (loss, max_logit, finite) = jax.jit(lambda p: jax.lax.scan(step, p, jnp.arange(setup.steps)))(params)

    def first(values):  # the 1-based update whose value is the first non-finite one (None: never)
        i = int(first_nonfinite(values))
        return i + 1 if i >= 0 else None

    first_bad = first(loss)
    first_nan_params = first(np.where(np.asarray(finite), 0.0, np.nan))
    use = [p if setup.bias else {"W": p["W"]} for p in params]
    logits = linear.forward(use[1], activations.forward("relu", linear.forward(use[0], x_test)[0])[0])[0]
    acc = float(jnp.mean(jnp.argmax(logits, axis=-1) == y_test)) if first_nan_params is None else float("nan")
    return {
        "loss": loss,
        "max_logit": max_logit,
        "first_nonfinite_step": first_bad,
        "first_nonfinite_params_step": first_nan_params,
        "max_abs_logit": float(jnp.nanmax(jnp.where(jnp.isfinite(max_logit), max_logit, jnp.nan)))
        if bool(jnp.any(jnp.isfinite(max_logit)))
        else float("inf"),
        "test_accuracy": acc,
    }
