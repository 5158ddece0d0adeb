"""Roofline helpers shared by the benchmarks: interleaved timing, the step's matmul floor, elementwise
bandwidth.

The floor of a training step is  matmul FLOPs / (measured matmul rate at the step's own shapes)
+ optimizer bytes / (measured elementwise bandwidth), both measured in the same process and run as a
``lax.scan`` like the epoch, so per-step dispatch costs are treated alike; the benchmarks time the
two floor programs in the same rounds as the programs they are compared with. Both are compiled
with the XLA options the library's training programs use (``jaxmlp.compiler.epoch_options``). ``members`` > 1 measures
the vmapped shapes a sweep runs (the batch shared, the weights stacked).
"""

import time

import jax
import jax.numpy as jnp

from jaxmlp import compiler
from jaxmlp.ops.linear import weight_grad


def interleaved(fns: dict, repeats: int) -> dict:
    """Seconds of every run of each compiled fn: fns = {name: (fn, args)}; one warm-up each, then
    ``repeats`` rounds, each running every fn once (order alternating between rounds), so
    times[a][i] / times[b][i] is a paired ratio taken under the same machine conditions."""
    for f, a in fns.values():
        jax.block_until_ready(f(*a))
    times = {n: [] for n in fns}
    names = list(fns)
    for i in range(repeats):
        for n in names if i % 2 == 0 else names[::-1]:
            f, a = fns[n]
            t = time.perf_counter()
            jax.block_until_ready(f(*a))
            times[n].append(time.perf_counter() - t)
    return times


def matmul_flops_per_step(sizes, batch):
    """2·B·d_in·d_out for each forward matmul and each weight gradient, and for each input gradient
    except the first layer's (its input is data)."""
    layers = list(zip(sizes[:-1], sizes[1:]))
    fwd = sum(2 * batch * a * b for a, b in layers)
    dx = sum(2 * batch * a * b for a, b in layers[1:])
    return 2 * fwd + dx


def matmul_floor_program(sizes, batch, steps, members=1, dtype=jnp.float32):
    """(compiled fn, args): one call runs the step's matmuls alone for ``steps`` steps, at its shapes,
    inside a scan like the epoch.

    Each step takes its own input batch (as the epoch gathers one) and updates the weights with the
    weight gradients, so nothing can be hoisted or dropped. Weight gradients use the layout the
    library's backward uses (``linear.weight_grad``: for one model the faster one on XLA:CPU for
    narrowing layers; for ``members`` > 1 the plain xᵀdy a sweep uses). ``dtype=jnp.bfloat16``
    measures the mixed-precision step's products (bf16 operands, float32 accumulation). With
    ``members`` > 1 the weights carry a leading member axis and the body is vmapped over it with the
    batch shared, as in a sweep."""
    key = jax.random.PRNGKey(0)
    lead = (members,) if members > 1 else ()
    Ws = [(jax.random.normal(key, lead + (a, b)) * 0.01).astype(dtype) for a, b in zip(sizes[:-1], sizes[1:])]
    xs = jax.random.normal(key, (steps, batch, sizes[0])).astype(dtype)

    def run(Ws, xs):
        def body(Ws, x):
            mm = lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(dtype)  # noqa: E731
            hs = [x]
            for W in Ws:  # forward
                hs.append(mm(hs[-1], W))
            d = hs[-1] * 1e-3
            new = []
            for i in reversed(range(len(Ws))):  # backward: dW always, dx except the first layer
                new.append((Ws[i] - 1e-6 * weight_grad(hs[i], d, members == 1)).astype(dtype))
                if i > 0:
                    d = mm(d, Ws[i].T)
            return new[::-1], None

        return jax.lax.scan(body, Ws, xs)[0]

    fn = jax.jit(jax.vmap(run, in_axes=(0, None)) if members > 1 else run)
    return fn.lower(Ws, xs).compile(compiler_options=compiler.epoch_options()), (Ws, xs)


def bandwidth_program(n_params, steps):
    """(compiled fn, args): one call runs ``steps`` Adam-like passes (read p, g, m, v; write p, m, v)
    over n_params float32 each, so 28·n_params bytes per step."""
    p, g, m, v = (jnp.full((n_params,), float(i + 1), jnp.float32) for i in range(4))

    @jax.jit
    def run(p, g, m, v):
        def body(c, _):
            p, m, v = c
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            p = p - 1e-3 * m / (jnp.sqrt(v) + 1e-8)
            return (p, m, v), None

        return jax.lax.scan(body, (p, m, v), None, length=steps)[0]

    return run.lower(p, g, m, v).compile(compiler_options=compiler.epoch_options()), (p, g, m, v)
