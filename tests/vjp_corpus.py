"""A corpus of hand-written ``jax.custom_vjp`` rules, right and wrong, for judging a rule checker.

Each ``Case`` is written the way public libraries write such rules, with the verdict a correct checker
must give (``right``) and the class of difficulty it stands for (``kind``):

- size: leaves of ordinary layer size (the checker's cost must not grow with size²);
- step: functions that vary on a scale other than 1 (tiny probabilities, fast oscillation, large values)
  where one fixed finite-difference step is wrong;
- none: ``None`` cotangents for floating arguments, which ``jax.custom_vjp`` reads as zero;
- nonfinite: numerically safe rules of a naive forward whose ``jax.vjp`` is NaN somewhere;
- while: forwards with ``lax.while_loop``, which reverse mode cannot differentiate;
- dtype: rules that are right in float64 and overflow, or return the wrong dtype, at the caller's dtype;
- constant: forwards with ``stop_gradient`` (finite differences disagree with autodiff by design);
- coverage: a bug in one coordinate, and confident softmaxes (a flaky checker's verdict changes with the seed);
- structure: wrong shapes or arity, pytrees;
- vmap: rules that are right one example at a time and wrong, or broken, under ``jax.vmap``.

Used by tests/test_rulecheck.py (every case judged right, eager and jitted, for 20 seeds) and by
benchmarks/rulecheck_peers.py (the same corpus judged by ``jax.test_util.check_grads``). Arguments are
float32 unless the case says otherwise, as a user's would be.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    right: bool
    fwd: object
    bwd: object
    make_args: object  # () -> args tuple (fixed points: the checker's seed is what varies)


def _normal(seed, shape, scale=1.0, dtype=np.float32):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


CASES: list[Case] = []


def case(name, kind, right, make_args):
    def register(pair):
        fwd, bwd = pair()
        CASES.append(Case(name, kind, right, fwd, bwd, make_args))
        return pair

    return register


# --- size ------------------------------------------------------------------------------------


def _linear_fwd(params, x):
    return x @ params["W"] + params["b"], (params, x)


def _linear_args(d_in, d_out, batch):
    return lambda: ({"W": _normal(1, (d_in, d_out), d_in**-0.5), "b": _normal(2, (d_out,))}, _normal(3, (batch, d_in)))


@case("linear 256x128", "size", True, _linear_args(256, 128, 64))
def _():
    def bwd(res, dy):
        params, x = res
        return {"W": x.T @ dy, "b": dy.sum(0)}, dy @ params["W"].T

    return _linear_fwd, bwd


@case("square linear, weight gradient transposed", "size", False, _linear_args(96, 96, 32))
def _():
    def bwd(res, dy):
        params, x = res
        return {"W": dy.T @ x, "b": dy.sum(0)}, dy @ params["W"].T  # (d_out, d_in): fits only because square

    return _linear_fwd, bwd


# --- step: functions that vary on other scales ------------------------------------------------


def _small_probabilities():
    p = np.concatenate([np.geomspace(1e-6, 1e-3, 30), np.random.default_rng(4).uniform(0.05, 0.5, 10)])
    return (p.astype(np.float32),)


def _entropy_fwd(p):
    return -jnp.sum(p * jnp.log(p)), p


@case("entropy at probabilities 1e-6..1e-3", "step", True, _small_probabilities)
def _():
    return _entropy_fwd, lambda p, g: (-g * (jnp.log(p) + 1),)


@case("entropy without the +1", "step", False, _small_probabilities)
def _():
    return _entropy_fwd, lambda p, g: (-g * jnp.log(p),)


def _fast_args():
    return (_normal(5, (6, 5), 2.0),)


@case("sin(40x)", "step", True, _fast_args)
def _():
    return (lambda x: (jnp.sin(40 * x), x)), (lambda x, g: (40 * g * jnp.cos(40 * x),))


@case("sin(40x) with the frequency off by 0.1%", "step", False, _fast_args)
def _():
    return (lambda x: (jnp.sin(40 * x), x)), (lambda x, g: (39.96 * g * jnp.cos(40 * x),))


def _large_args():
    return (_normal(6, (20,), 1e4),)


@case("hypot(x, 1e4) at |x| ~ 1e4", "step", True, _large_args)
def _():
    return (lambda x: (jnp.sqrt(x * x + 1e8), x)), (lambda x, g: (g * x / jnp.sqrt(x * x + 1e8),))


@case("hypot(x, 1e4) without the square root", "step", False, _large_args)
def _():
    return (lambda x: (jnp.sqrt(x * x + 1e8), x)), (lambda x, g: (g * x / (x * x + 1e8),))


# --- coverage: confident softmaxes, one coordinate ----------------------------------------------


def _confident():
    z = _normal(7, (8, 10), 12.0)
    return z, np.random.default_rng(8).integers(0, 10, 8).astype(np.int32)


def _xent_fwd(z, labels):
    logp = jax.nn.log_softmax(z)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], 1)), (z, labels)


@case("confident softmax cross-entropy", "coverage", True, _confident)
def _():
    def bwd(res, g):
        z, labels = res
        return g * (jax.nn.softmax(z) - jax.nn.one_hot(labels, z.shape[1], dtype=z.dtype)) / z.shape[0], None

    return _xent_fwd, bwd


@case("confident softmax cross-entropy with probabilities clipped at 1e-6", "coverage", False, _confident)
def _():
    def bwd(res, g):
        z, labels = res
        p = jnp.clip(jax.nn.softmax(z), 1e-6, 1.0)
        return g * (p - jax.nn.one_hot(labels, z.shape[1], dtype=z.dtype)) / z.shape[0], None

    return _xent_fwd, bwd


def _diff_fwd(x):
    return x[1:] - x[:-1], x


@case("first differences", "coverage", True, lambda: (_normal(9, (40,)),))
def _():
    return _diff_fwd, lambda x, g: (jnp.zeros_like(x).at[1:].add(g).at[:-1].add(-g),)


@case("first differences missing the first coordinate", "coverage", False, lambda: (_normal(9, (40,)),))
def _():
    return _diff_fwd, lambda x, g: (jnp.zeros_like(x).at[1:].add(g).at[1:-1].add(-g[1:]),)


@case("layer norm with eps in the backward only", "coverage", False, lambda: (_normal(10, (4, 16), 1e-3),))
def _():
    def fwd(x):
        mu = x.mean(-1, keepdims=True)
        sd = jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True))
        return (x - mu) / sd, (x - mu, sd)

    def bwd(res, g):
        xc, sd = res
        sd = jnp.sqrt(sd**2 + 1e-8)  # an eps the forward does not have: wrong by ~1e-2 at this scale
        xhat = xc / sd
        return ((g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)) / sd,)

    return fwd, bwd


# --- None cotangents -------------------------------------------------------------------------


def _gate_args():
    return _normal(11, (5, 4)), _normal(12, (5, 4))


@case("None for a gate used only through a comparison", "none", True, _gate_args)
def _():
    return (lambda x, gate: (x * (gate > 0), gate)), (lambda gate, g: (g * (gate > 0), None))


@case("None for a scale that multiplies the output", "none", False, _gate_args)
def _():
    return (lambda x, s: (x * s, s)), (lambda s, g: (g * s, None))


def _frozen_args():
    return {"w": _normal(13, (6,)), "frozen": {"threshold": _normal(14, (6,)), "offset": _normal(15, (6,))}}, _normal(
        16, (6,)
    )


@case("None for a subtree of thresholds", "none", True, _frozen_args)
def _():
    def fwd(params, x):
        on = x > params["frozen"]["threshold"]
        return jnp.where(on, params["w"] * x, 0.0) + (params["frozen"]["offset"] > 0), (params["w"], x, on)

    def bwd(res, g):
        w, x, on = res
        return {"w": jnp.where(on, g * x, 0.0), "frozen": None}, jnp.where(on, g * w, 0.0)

    return fwd, bwd


# --- non-finite reference: safe rules of naive forwards ----------------------------------------


def _mixed_sign():
    x = _normal(17, (6, 5))
    return (x,)


@case("safe sqrt: where(x > 0, sqrt(x), 0)", "nonfinite", True, _mixed_sign)
def _():
    def bwd(x, g):
        safe = jnp.where(x > 0, x, 1.0)
        return (jnp.where(x > 0, g * 0.5 / jnp.sqrt(safe), 0.0),)

    return (lambda x: (jnp.where(x > 0, jnp.sqrt(x), 0.0), x)), bwd


@case("safe sqrt whose masked branch is 0.5", "nonfinite", False, _mixed_sign)
def _():
    def bwd(x, g):
        safe = jnp.where(x > 0, x, 1.0)
        return (jnp.where(x > 0, g * 0.5 / jnp.sqrt(safe), 0.5 * g),)

    return (lambda x: (jnp.where(x > 0, jnp.sqrt(x), 0.0), x)), bwd


def _zero_and_signs():
    return (np.array([0.0, -1.0, 0.5, 2.0, -0.3, 1.3], np.float32),)


@case("safe sqrt at exactly zero (an infinite one-sided slope)", "nonfinite", True, _zero_and_signs)
def _():
    def bwd(x, g):
        safe = jnp.where(x > 0, x, 1.0)
        return (jnp.where(x > 0, g * 0.5 / jnp.sqrt(safe), 0.0),)

    return (lambda x: (jnp.where(x > 0, jnp.sqrt(x), 0.0), x)), bwd


def _with_zeros():
    x = _normal(18, (12,))
    x[[2, 7]] = 0.0
    return (x,)


def _sinc_fwd(x):
    return jnp.where(x == 0, 1.0, jnp.sin(x) / x), x


@case("sinc at exact zeros", "nonfinite", True, _with_zeros)
def _():
    def bwd(x, g):
        safe = jnp.where(x == 0, 1.0, x)
        return (jnp.where(x == 0, 0.0, g * (safe * jnp.cos(safe) - jnp.sin(safe)) / safe**2),)

    return _sinc_fwd, bwd


@case("sinc whose derivative at zero is 1", "nonfinite", False, _with_zeros)
def _():
    def bwd(x, g):
        safe = jnp.where(x == 0, 1.0, x)
        return (jnp.where(x == 0, g, g * (safe * jnp.cos(safe) - jnp.sin(safe)) / safe**2),)

    return _sinc_fwd, bwd


def _zero_rows():
    x = _normal(19, (5, 3))
    x[1] = 0.0
    return (x,)


@case("row norms with a zero row", "nonfinite", True, _zero_rows)
def _():
    def fwd(x):
        n = jnp.sqrt(jnp.sum(x * x, axis=1))
        return n, (x, n)

    def bwd(res, g):
        x, n = res
        return (jnp.where(n[:, None] > 0, g[:, None] * x / jnp.where(n > 0, n, 1.0)[:, None], 0.0),)

    return fwd, bwd


# --- while_loop forwards -----------------------------------------------------------------------


def _newton_sqrt(a):
    def body(c):
        y, _, k = c
        y_new = 0.5 * (y + a / y)
        return y_new, jnp.max(jnp.abs(y_new - y)), k + 1

    start = (jnp.maximum(a, 1.0), jnp.asarray(jnp.inf, a.dtype), 0)
    y, _, _ = lax.while_loop(lambda c: (c[1] > 1e-15 * jnp.max(a)) & (c[2] < 100), body, start)
    return y


def _positive():
    return (np.random.default_rng(20).uniform(0.5, 4.0, (8,)).astype(np.float32),)


@case("Newton square root (while_loop)", "while", True, _positive)
def _():
    return (lambda a: ((y := _newton_sqrt(a)), y)), (lambda y, g: (0.5 * g / y,))


@case("Newton square root missing the 1/2", "while", False, _positive)
def _():
    return (lambda a: ((y := _newton_sqrt(a)), y)), (lambda y, g: (g / y,))


def _kepler(M, e):
    """E − e·sin E = M by Newton's method."""

    def body(c):
        E, _, k = c
        step = (E - e * jnp.sin(E) - M) / (1 - e * jnp.cos(E))
        return E - step, jnp.max(jnp.abs(step)), k + 1

    E, _, _ = lax.while_loop(lambda c: (c[1] > 1e-15) & (c[2] < 100), body, (M, jnp.asarray(1.0, M.dtype), 0))
    return E


def _kepler_args():
    rng = np.random.default_rng(21)
    return rng.uniform(0.2, 3.0, (6,)).astype(np.float32), rng.uniform(0.1, 0.7, (6,)).astype(np.float32)


def _kepler_fwd(M, e):
    E = _kepler(M, e)
    return E, (E, e)


@case("Kepler's equation (while_loop), two arguments", "while", True, _kepler_args)
def _():
    def bwd(res, g):
        E, e = res
        d = 1 - e * jnp.cos(E)
        return g / d, g * jnp.sin(E) / d

    return _kepler_fwd, bwd


@case("Kepler's equation with the eccentricity's sign flipped", "while", False, _kepler_args)
def _():
    def bwd(res, g):
        E, e = res
        d = 1 - e * jnp.cos(E)
        return g / d, -g * jnp.sin(E) / d

    return _kepler_fwd, bwd


@case("fixed point y = x + tanh(y)/2 (while_loop)", "while", True, lambda: (_normal(22, (7,)),))
def _():
    def fwd(x):
        def body(c):
            y, _, k = c
            y_new = x + 0.5 * jnp.tanh(y)
            return y_new, jnp.max(jnp.abs(y_new - y)), k + 1

        y, _, _ = lax.while_loop(lambda c: (c[1] > 1e-15) & (c[2] < 200), body, (x, jnp.asarray(1.0, x.dtype), 0))
        return y, y

    return fwd, lambda y, g: (g / (1 - 0.5 * (1 - jnp.tanh(y) ** 2)),)


def _cube_root_by_bisection(a):
    """y + y³ = a on a fixed bracket: autodiff of the iterations is 0 (no tangent flows through the
    comparisons), the implicit derivative 1/(1 + 3y²) is the true one."""

    def body(c):
        lo, hi, k = c
        mid = 0.5 * (lo + hi)
        low = mid + mid**3 < a
        return jnp.where(low, mid, lo), jnp.where(low, hi, mid), k + 1

    lo, hi, _ = lax.while_loop(lambda c: c[2] < 80, body, (jnp.full_like(a, -3.0), jnp.full_like(a, 3.0), 0))
    y = 0.5 * (lo + hi)
    return y, y


def _bisection_args():
    return (np.random.default_rng(29).uniform(-2.0, 2.0, (6,)).astype(np.float32),)


@case("y + y^3 = a by bisection, implicit rule (autodiff gives 0)", "while", True, _bisection_args)
def _():
    return _cube_root_by_bisection, lambda y, g: (g / (1 + 3 * y**2),)


@case("y + y^3 = a by bisection, implicit rule without the 3", "while", False, _bisection_args)
def _():
    return _cube_root_by_bisection, lambda y, g: (g / (1 + y**2),)


# --- the caller's dtype --------------------------------------------------------------------------


def _large_logits():
    x = _normal(23, (4, 6), 3.0)
    x[0, :3] = [100.0, 95.0, 120.0]
    return (x,)


def _softplus_fwd(x):
    return jnp.logaddexp(x, 0.0), x


@case("softplus via exp(x)/(1+exp(x)) in float32 at x = 100", "dtype", False, _large_logits)
def _():
    return _softplus_fwd, lambda x, g: (g * jnp.exp(x) / (1 + jnp.exp(x)),)


@case("softplus via sigmoid in float32 at x = 100", "dtype", True, _large_logits)
def _():
    return _softplus_fwd, lambda x, g: (g * jax.nn.sigmoid(x),)


@case("log-sum-exp via exp(x)/sum(exp(x)) in float32", "dtype", False, _large_logits)
def _():
    def bwd(x, g):
        e = jnp.exp(x)
        return (g[:, None] * e / e.sum(1, keepdims=True),)

    return (lambda x: (jax.nn.logsumexp(x, axis=1), x)), bwd


def _half():
    return (np.linspace(-14, 14, 15).astype(np.float16),)


def _logcosh_fwd(x):
    return jnp.logaddexp(x, -x) - jnp.log(jnp.asarray(2.0, x.dtype)), x


@case("log cosh in float16 via sinh/cosh", "dtype", False, _half)
def _():
    return _logcosh_fwd, lambda x, g: (g * jnp.sinh(x) / jnp.cosh(x),)


@case("log cosh in float16 via tanh", "dtype", True, _half)
def _():
    return _logcosh_fwd, lambda x, g: (g * jnp.tanh(x),)


@case("a float16 cotangent for a float32 argument", "dtype", False, lambda: (_normal(24, (5,)),))
def _():
    return (lambda x: (x * x, x)), (lambda x, g: ((2 * g * x).astype(jnp.float16),))


def _rms_norm_fwd(x):  # mixed precision, as libraries write it: float32 inside, the caller's dtype outside
    x32 = x.astype(jnp.float32)
    r = jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + 1e-6)
    return (x32 * r).astype(x.dtype), (x32, r)


@case(
    "RMS norm computed in float32 inside, float16 arguments",
    "dtype",
    True,
    lambda: (_normal(30, (4, 8), 1.0, np.float16),),
)
def _():
    def bwd(res, g):
        x32, r = res
        g32 = g.astype(jnp.float32)
        xhat = x32 * r
        return ((r * (g32 - xhat * jnp.mean(g32 * xhat, -1, keepdims=True))).astype(g.dtype),)

    return _rms_norm_fwd, bwd


@case(
    "log in float16 where the cotangent itself exceeds float16",
    "dtype",
    True,
    lambda: (np.array([1e-5, 0.5, 2.0], np.float16),),
)
def _():
    return (lambda x: (jnp.log(x), jnp.asarray(x))), (lambda x, g: (g / x,))


# --- deliberately constant quantities ------------------------------------------------------------


def _bn_args():
    return (_normal(25, (16, 4), 2.0) + 1.0,)


def _bn_const_fwd(x):
    mean = lax.stop_gradient(x.mean(0))
    sd = lax.stop_gradient(x.std(0))
    return (x - mean) / sd, sd


@case("batch norm with stop_gradient statistics", "constant", True, _bn_args)
def _():
    return _bn_const_fwd, lambda sd, g: (g / sd,)


@case("batch norm with stop_gradient statistics, full backward", "constant", False, _bn_args)
def _():
    def fwd(x):
        y, sd = _bn_const_fwd(x)
        return y, (y, sd)

    def bwd(res, g):
        y, sd = res
        return ((g - g.mean(0) - y * (g * y).mean(0)) / sd,)

    return fwd, bwd


def _round_args():
    return (_normal(26, (10,), 3.0),)


def _ste_fwd(x):
    return x + lax.stop_gradient(jnp.round(x) - x), None


@case("straight-through rounding", "constant", True, _round_args)
def _():
    return _ste_fwd, lambda _, g: (g,)


@case("straight-through rounding whose gradient is zero", "constant", False, _round_args)
def _():
    return _ste_fwd, lambda _, g: (0 * g,)


# --- structure -----------------------------------------------------------------------------------


@case("weight gradient of the wrong shape", "structure", False, _linear_args(6, 4, 3))
def _():
    def bwd(res, dy):
        params, x = res
        return {"W": dy.T @ x, "b": dy.sum(0)}, dy @ params["W"].T  # (4, 6) for a (6, 4) weight

    return _linear_fwd, bwd


@case("one cotangent short", "structure", False, _linear_args(6, 4, 3))
def _():
    def bwd(res, dy):
        _, x = res
        return ({"W": x.T @ dy, "b": dy.sum(0)},)

    return _linear_fwd, bwd


def _affine_args():
    rng = np.random.default_rng(27)
    params = {"W": rng.standard_normal((4, 3)).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}
    return params, rng.standard_normal((5, 4)).astype(np.float32), np.array([0, 2, 1, 1, 0], np.int32)


def _affine_fwd(params, x, labels):
    y = x @ params["W"] + params["b"]
    return {"y": y, "picked": jnp.take_along_axis(y, labels[:, None], axis=1)[:, 0]}, (params, x, labels)


@case("pytree in and out, integer labels", "structure", True, _affine_args)
def _():
    def bwd(res, ct):
        params, x, labels = res
        dy = ct["y"] + jax.nn.one_hot(labels, 3, dtype=x.dtype) * ct["picked"][:, None]
        return {"W": x.T @ dy, "b": dy.sum(0)}, dy @ params["W"].T, None

    return _affine_fwd, bwd


@case("pytree output whose second part is ignored", "structure", False, _affine_args)
def _():
    def bwd(res, ct):
        params, x, _ = res
        dy = ct["y"]
        return {"W": x.T @ dy, "b": dy.sum(0)}, dy @ params["W"].T, None

    return _affine_fwd, bwd


# --- vmap ----------------------------------------------------------------------------------------


def _normalize_fwd(x):
    s = x.sum()
    return x / s, (x / s, s)


def _positive_vector():
    return (np.random.default_rng(28).uniform(0.5, 2.0, (6,)).astype(np.float32),)


def _callback_bwd(keepdims_axis):
    def centred(c, y):  # g − ⟨g, y⟩; batched by expand_dims, the reduction must stay within one example
        if keepdims_axis:
            return c - np.sum(c * y, axis=-1, keepdims=True)
        return c - np.sum(c * y)

    def bwd(res, g):
        y, s = res
        return (
            jax.pure_callback(centred, jax.ShapeDtypeStruct(g.shape, g.dtype), g, y, vmap_method="expand_dims") / s,
        )

    return bwd


@case("normalize, a NumPy callback that reduces the last axis", "vmap", True, _positive_vector)
def _():
    return _normalize_fwd, _callback_bwd(True)


@case("normalize, a NumPy callback that reduces every axis (the batch too)", "vmap", False, _positive_vector)
def _():
    return _normalize_fwd, _callback_bwd(False)


@case("a backward in NumPy (cannot be traced)", "vmap", False, _positive_vector)
def _():
    def bwd(res, g):
        y, s = res
        g = np.asarray(g)
        return (jnp.asarray((g - np.sum(g * np.asarray(y))) / np.asarray(s)),)

    return _normalize_fwd, bwd


def jitted(case: Case) -> tuple:
    """(fwd, bwd) compiled with jax.jit, as a user's jitted rule would be."""
    return jax.jit(case.fwd), jax.jit(case.bwd)
