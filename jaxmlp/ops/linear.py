"""Linear layer ``y = x W + b``.

Contract::

    params = init(key, d_in, d_out, method="he")     # {"W": (d_in, d_out), "b": (d_out,)}
    y, cache = forward(params, x)                     # x (batch, d_in) -> y (batch, d_out)
    dx, grads = backward(params, cache, dy)           # dy (batch, d_out) -> dx (batch, d_in)

Initializations (``method``), for weights; biases start at zero:
  - ``"he"``:     W ~ N(0, 2 / d_in)            (He et al. 2015; for ReLU)
  - ``"xavier"``: W ~ N(0, 2 / (d_in + d_out))  (Glorot & Bengio 2010, normal variant; sigmoid/tanh)
  - ``"seed"``:   W ~ N(0, 1) * 0.01            (the seed notebook's ``randn * 0.01``)
``scale`` multiplies the standard deviation (an init-scale sweep axis).

Mixed precision (``matmul_dtype=jnp.bfloat16``): the operands of every product — x and W forward,
dy, x and W backward — are rounded to bfloat16, products accumulate in float32 and come out
float32 (``preferred_element_type``); parameters, biases, gradients and everything outside the
matmuls stay float32 ("master weights"; Micikevicius et al. 2018, bfloat16 needs no loss scaling).
The cache then holds x already rounded, which halves its memory.
"""

import jax
import jax.numpy as jnp

INITS = ("he", "xavier", "seed")


def init_std(method: str, d_in: int, d_out: int) -> float:
    if method == "he":
        return (2.0 / d_in) ** 0.5
    if method == "xavier":
        return (2.0 / (d_in + d_out)) ** 0.5
    if method == "seed":
        return 0.01
    raise ValueError(f"unknown init {method!r}; choose from {', '.join(INITS)}")


def init(key, d_in: int, d_out: int, method: str = "he", *, bias: bool = True, scale=1.0, dtype=jnp.float32):
    std = init_std(method, d_in, d_out)
    W = jax.random.normal(key, (d_in, d_out), dtype) * (std * jnp.asarray(scale, dtype))
    params = {"W": W}
    if bias:
        params["b"] = jnp.zeros((d_out,), dtype)
    return params


def _mm(a, b, out_dtype):
    """a @ b, accumulated and returned in ``out_dtype`` (operands may be bfloat16)."""
    if a.dtype == out_dtype and b.dtype == out_dtype:
        return a @ b
    return jnp.matmul(a, b, preferred_element_type=out_dtype)


def forward(params, x, matmul_dtype=None):
    """y = x W + b.   x: (batch, d_in) -> y: (batch, d_out); cache = x (rounded to matmul_dtype)."""
    W = params["W"]
    if matmul_dtype is not None and jnp.dtype(matmul_dtype) != x.dtype:
        x, W = x.astype(matmul_dtype), W.astype(matmul_dtype)
    y = _mm(x, W, params["W"].dtype)  # (batch, d_out)
    if "b" in params:
        y = y + params["b"]
    return y, x


def weight_grad(x, dy, transpose_narrow: bool = True):
    """xᵀ dy: (batch, d_in), (batch, d_out) -> (d_in, d_out).

    When the layer narrows a lot (d_out ≤ d_in / 4, e.g. the 10-class output layer) and
    ``transpose_narrow`` is set, the product is computed as (dyᵀ x)ᵀ with the (d_out, d_in) result
    materialized first: XLA:CPU's matmul is faster producing the wide result than the narrow one.
    The optimization barrier keeps XLA from folding the transpose back into the dot. Same products,
    summed over the batch; only the rounding of the sums may differ.

    ``transpose_narrow=False`` always computes xᵀ dy. Vmapped sweeps use it (``MLPConfig.
    weight_grad_layout = "plain"``): there XLA computes all members' gradients on the shared batch
    as one product, and in the transposed form Adam would read each member's (d_in, d_out) gradient
    out of the (K·d_out, d_in) result with a stride of d_in floats. Both choices are measured in
    benchmarks/RESULTS.md ("Where the step's time goes" and the sweep section).
    """
    out_dtype = dy.dtype
    dy = dy.astype(x.dtype)  # mixed precision: x is the bfloat16 cache
    if transpose_narrow and 4 * dy.shape[-1] <= x.shape[-1]:
        return jax.lax.optimization_barrier(_mm(dy.T, x, out_dtype)).T  # (d_out, d_in) -> (d_in, d_out)
    return _mm(x.T, dy, out_dtype)  # (d_in, d_out)


def backward(params, cache, dy, *, need_dx: bool = True, transpose_narrow: bool = True):
    """dL/dW = xᵀ dy,  dL/db = Σ_batch dy,  dL/dx = dy Wᵀ.

    ``need_dx=False`` skips dx (the first layer's input is data, not a parameter);
    ``transpose_narrow`` picks dW's layout (``weight_grad``). With mixed
    precision (the cache is bfloat16) the products take bfloat16 operands and return dy's dtype.
    """
    x = cache
    grads = {"W": weight_grad(x, dy, transpose_narrow)}  # (d_in, d_out)
    if "b" in params:
        grads["b"] = jnp.sum(dy, axis=0)  # (d_out,)
    dx = None
    if need_dx:
        W = params["W"].astype(x.dtype)
        dx = _mm(dy.astype(x.dtype), W.T, dy.dtype)  # (batch, d_in)
    return dx, grads
