"""Elementwise activations: sigmoid, tanh, ReLU.

Contract::

    y, cache = forward(name, x)          # x, y: (batch, d)
    dx = backward(name, cache, dy)       # dy, dx: (batch, d)

Each caches its OUTPUT ``y``, from which its derivative follows without recomputation:
  - sigmoid: σ(x) = 1 / (1 + e^{-x}),    σ'(x) = y (1 - y)
  - tanh:                                 tanh'(x) = 1 - y²
  - relu:    max(x, 0),                   relu'(x) = [x > 0]  (taken as 0 at x = 0, as jax.nn.relu)
"""

import jax
import jax.numpy as jnp

ACTIVATIONS = ("relu", "tanh", "sigmoid")


def sigmoid_forward(x):
    y = jax.nn.sigmoid(x)  # stable for large |x|
    return y, y


def sigmoid_backward(y, dy):
    return dy * y * (1 - y)


def tanh_forward(x):
    y = jnp.tanh(x)
    return y, y


def tanh_backward(y, dy):
    return dy * (1 - y * y)


def relu_forward(x):
    y = jnp.where(x > 0, x, jnp.zeros_like(x))
    return y, y


def relu_backward(y, dy):
    return jnp.where(y > 0, dy, jnp.zeros_like(dy))


_TABLE = {
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "tanh": (tanh_forward, tanh_backward),
    "relu": (relu_forward, relu_backward),
}


def check(name: str) -> str:
    if name not in _TABLE:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    return name


def forward(name: str, x):
    return _TABLE[check(name)][0](x)


def backward(name: str, cache, dy):
    return _TABLE[check(name)][1](cache, dy)
