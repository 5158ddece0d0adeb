"""Where and how ``check_vjp`` / ``check_jvp`` evaluate a function (internal to ``jaxmlp.rulecheck``): the
differentiable leaves of the arguments, the probes in each (every coordinate of a small leaf, dense random
directions in a large one), finite differences and forward mode on every probe (jit + ``lax.map`` in
batches of bounded memory), and the random points and cotangents."""

from __future__ import annotations

import re
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

FD_STEP = 1e-5  # relative step t (Richardson over t and t/2: truncation O(t⁴), rounding O(ε/t))
NOISE = 16.0  # rounding of s(x) taken as NOISE·ε·Σ|ct·f(x)|
EPS = float(np.finfo(np.float64).eps)
MEMORY_FLOATS = 2**24  # float64 values that one batch of probe evaluations may hold (128 MiB)


def differentiable(leaf) -> bool:
    dtype = jnp.result_type(leaf)
    return jnp.issubdtype(dtype, jnp.inexact) and not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def index_str(shape, flat: int) -> str:
    return str([int(k) for k in np.unravel_index(int(flat), shape)]) if shape else "[]"


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def with_leaf(args, i, path, value):
    """``args`` with the leaf at ``path`` of argument ``i`` replaced by ``value``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(args[i])
    new = treedef.unflatten([value if p == path else leaf for p, leaf in leaves])
    return (*args[:i], new, *args[i + 1 :])


def cast_floats(dtype_of, tree):
    """Floating leaves of ``tree`` cast by ``dtype_of(leaf)``; other leaves untouched."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype_of(a)) if differentiable(a) else a, tree)


@dataclass(frozen=True)
class Forward:
    """What a function's jaxpr says about its derivative: ``declared`` — stop_gradient, a custom_vjp or a
    custom_jvp inside (a derivative that may differ from the values' by intent: autodiff is then the
    reference, not finite differences; jax.nn's stable custom_jvps count too, to be safe); ``loops`` — a
    lax.while_loop (autodiff then differentiates the iterations, not their limit); ``precision`` — the
    coarsest float dtype it computes in when given float64 (None: float64 throughout)."""

    declared: str = ""
    loops: bool = False
    precision: str | None = None

    def reason(self) -> str:
        """Why finite differences may disagree with autodiff, in words."""
        if self.declared:
            return f"the forward uses {self.declared}"
        if self.loops:
            return "the forward iterates, or is not differentiable within the step"
        return "the forward is not differentiable within the step"


LOW_PRECISION = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}  # jaxpr spelling, by ε, coarsest last


def inspect_forward(*calls) -> Forward:
    """``Forward`` from the jaxprs of ``(fn, args)`` calls in float64 (fwd, and bwd for its precision)."""
    texts = []
    for fn, args in calls:
        try:
            texts.append(str(jax.make_jaxpr(fn)(*args)))
        except Exception:  # noqa: BLE001 - only an explanation: what cannot be traced says nothing
            texts.append("")
    first = texts[0] if texts else ""
    declared = ", ".join(name for name in ("stop_gradient", "custom_vjp_call", "custom_jvp_call") if name in first)
    found = [name for key, name in LOW_PRECISION.items() if any(re.search(rf"(?<![a-z]){key}\[", t) for t in texts)]
    return Forward(declared, "while[" in first, found[-1] if found else None)


@dataclass
class Leaf:
    i: int  # which argument
    path: tuple
    name: str
    value: np.ndarray  # float64 copy of the caller's values (exact)
    dtype: np.dtype  # the caller's dtype


@dataclass
class Probes:
    """Directions d_p in one leaf: "sparse" ones are σⱼ·eⱼ (data: index (P,), σ (P,)), "dense" ones are
    leaf-shaped (data: (P, *shape)). ``norms`` turns a probe's directional values into per-coordinate ones."""

    kind: str
    data: object
    names: list
    norms: np.ndarray

    def items(self, scale: float = 1.0):
        if self.kind == "dense":
            return jnp.asarray(self.data * scale)
        index, sigma = self.data
        return (jnp.asarray(index), jnp.asarray(sigma * scale))

    def directional(self, values: np.ndarray) -> np.ndarray:
        """⟨values_c, d_p⟩ for leaf-shaped values (C, *shape) → (P, C)."""
        flat = values.reshape(values.shape[0], -1)
        if self.kind == "dense":
            return self.data.reshape(len(self.data), -1) @ flat.T
        index, sigma = self.data
        return (flat[:, index] * sigma).T

    def dense(self, shape) -> np.ndarray:
        """The probes as leaf-shaped arrays (P, *shape)."""
        if self.kind == "dense":
            return self.data
        index, sigma = self.data
        out = np.zeros((len(index), int(np.prod(shape))))
        out[np.arange(len(index)), index] = sigma
        return out.reshape((len(index), *shape))


def complex_leaves(args) -> list:
    """Problems, one per complex leaf of ``args``: the witnesses perturb and compare real values only."""
    return [
        f"arg{i}{jax.tree_util.keystr(path)} is complex: complex arguments are not supported (split them into "
        "real and imaginary parts)"
        for i, arg in enumerate(args)
        for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]
        if jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating)
    ]


def checkable_leaves(args) -> tuple[list, list]:
    """(the differentiable leaves, problems): no leaves and one problem per complex leaf when there are any."""
    problems = complex_leaves(args)
    return ([] if problems else differentiable_leaves(args)), problems


def differentiable_leaves(args) -> list:
    found = []
    for i, arg in enumerate(args):
        for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]:
            if differentiable(leaf):
                name = f"arg{i}{jax.tree_util.keystr(path)}"
                dtype = np.dtype(jax.dtypes.canonicalize_dtype(jnp.result_type(leaf)))  # what JAX computes in
                found.append(Leaf(i, path, name, np.asarray(leaf, np.float64), dtype))
    return found


def step_scale(x: np.ndarray) -> np.ndarray:
    """Per-coordinate step scale: |xᵢ|, floored at 10⁻³·rms(x) (1 for an all-zero leaf)."""
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    return np.maximum(np.abs(x), 1e-3 * rms) if rms > 0 else np.ones_like(x)


def make_probes(leaf: Leaf, rng, coordinates: int, directions: int, only=None) -> Probes:
    """Every coordinate of a small leaf (or of the coordinates in ``only``), else dense random directions."""
    sigma = step_scale(leaf.value).ravel()
    where = np.arange(leaf.value.size) if only is None else np.flatnonzero(np.ravel(only))
    shape = leaf.value.shape
    if len(where) <= coordinates:
        return Probes("sparse", (where, sigma[where]), [index_str(shape, j) for j in where], sigma[where])
    mask = np.zeros(leaf.value.size)
    mask[where] = 1.0
    dirs = rng.standard_normal((directions, leaf.value.size)) * sigma * mask
    return Probes(
        "dense", dirs.reshape((directions, *shape)), [f"direction {p}" for p in range(directions)], np.ones(directions)
    )


def leaf_of(tree_tuple, leaf: Leaf):
    return dict(jax.tree_util.tree_flatten_with_path(tree_tuple[leaf.i])[0])[leaf.path]


def moved(value, probe, kind, tau):
    """value + τ·d for one probe (dense: d itself; sparse: (index, σ))."""
    if kind == "dense":
        return value + tau * probe
    index, sigma = probe
    return value.ravel().at[index].add(tau * sigma).reshape(value.shape)


def evaluate(fn, consts, xs, floats_per_item: int):
    """np.stack([fn(consts, x) for x in xs]) (xs: a pytree with a leading probe axis)."""
    n = len(jax.tree_util.tree_leaves(xs)[0])
    batch = max(1, min(n, MEMORY_FLOATS // max(floats_per_item, 1)))
    try:
        run = jax.jit(lambda consts, xs: jax.lax.map(lambda x: fn(consts, x), xs, batch_size=batch))
        return np.asarray(run(consts, xs), np.float64)
    except Exception:  # noqa: BLE001 - lax.map over a batch failed (memory, a batching rule): one probe at a time
        items = [jax.tree_util.tree_map(lambda a, k=k: a[k], xs) for k in range(n)]
        return np.stack([np.asarray(fn(consts, x), np.float64) for x in items])


def contract(out, ct_leaves):
    """(s, m): s_c = ⟨ct_c, out⟩ and m_c = Σ|ct_c·out| over the floating outputs (ct_leaves: (C, …) each)."""
    outs = [o for o in jax.tree_util.tree_leaves(out) if jnp.issubdtype(jnp.result_type(o), jnp.inexact)]
    s = sum(c.reshape(c.shape[0], -1) @ jnp.ravel(o) for c, o in zip(ct_leaves, outs))
    m = sum(jnp.abs(c.reshape(c.shape[0], -1)) @ jnp.abs(jnp.ravel(o)) for c, o in zip(ct_leaves, outs))
    return s, m


def finite_differences(f, args, leaf: Leaf, probes: Probes, ct_leaves, out_size: int):
    """(R, bound), both (P, C): Richardson estimates of ⟨ct_c, J·d_p⟩ and their estimated errors (before
    the safety factor); R is NaN where f leaves its domain at a step or the differences do not converge."""
    t = FD_STEP
    steps = jnp.asarray([t, -t, t / 2, -t / 2, t / 4, -t / 4])

    def at_probe(consts, probe):
        args, cts = consts
        value = leaf_of(args, leaf)

        def at_step(tau):
            return contract(f(*with_leaf(args, leaf.i, leaf.path, moved(value, probe, probes.kind, tau))), cts)[0]

        return jax.vmap(at_step)(steps)  # (6, C)

    s = evaluate(at_probe, (args, ct_leaves), probes.items(), 6 * (out_size + leaf.value.size))
    _, m = contract(f(*args), ct_leaves)
    d1 = (s[:, 0] - s[:, 1]) / (2 * t)
    d2 = (s[:, 2] - s[:, 3]) / t
    d4 = (s[:, 4] - s[:, 5]) / (t / 2)
    noise = NOISE * EPS * np.asarray(m, np.float64)[None, :] / t
    # A smooth function's central differences converge as t²: D(t) − D(t/2) ≈ 4·(D(t/2) − D(t/4)). Where
    # they do not (an infinite slope, a kink within the steps) the estimate is no evidence: NaN.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (d1 - d2) / (d2 - d4)
    converged = (np.abs(d1 - d2) <= 4 * noise) | ((ratio >= 2) & (ratio <= 8))
    bound = np.abs(d1 - d2) + noise
    return np.where(converged, (4 * d2 - d1) / 3, np.nan), bound


def unit_tangent(value, probe, kind):
    return moved(jnp.zeros_like(value), probe, kind, 1.0)


def jvp_values(f, args, leaf: Leaf, probes: Probes, ct_leaves, out_size: int, full: bool):
    """Forward mode on each probe: ⟨ct_c, J·d_p⟩ (P, C), or with ``full`` J·d_p itself (P, out_size)."""

    def at_probe(consts, probe):
        args, cts = consts
        value = leaf_of(args, leaf)
        _, out = jax.jvp(
            lambda v: f(*with_leaf(args, leaf.i, leaf.path, v)), (value,), (unit_tangent(value, probe, probes.kind),)
        )
        return flat(out) if full else contract(out, cts)[0]

    return evaluate(at_probe, (args, ct_leaves), probes.items(), 2 * (out_size + leaf.value.size))


def flat(tree):
    leaves = [jnp.ravel(o) for o in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(jnp.result_type(o), jnp.inexact)]
    return jnp.concatenate(leaves) if leaves else jnp.zeros(0)


def random_like(tree, rng):
    """Standard normal values for the floating leaves of ``tree``, rounded to their own dtype (float0 zeros
    for the others)."""

    def draw(leaf):
        if differentiable(leaf):
            return np.asarray(rng.standard_normal(np.shape(leaf))).astype(jnp.result_type(leaf))
        return np.zeros(np.shape(leaf), jax.dtypes.float0)

    return jax.tree_util.tree_map(draw, tree)


def float_leaves(tree) -> list:
    return [o for o in jax.tree_util.tree_leaves(tree) if differentiable(o)]


def stack(trees):
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs) if isinstance(xs[0], np.ndarray) else jnp.stack(xs), *trees)


def copies(args, rng, batch):
    """``batch`` copies of ``args`` for the vmap witness: copy k scales floating leaves by 1 + 0.01·k·u."""

    def copy(k):
        def move(a):
            return np.asarray(a) * (1 + 0.01 * k * rng.uniform(-1, 1, np.shape(a))) if differentiable(a) else a

        return jax.tree_util.tree_map(move, args)

    return [copy(k) for k in range(batch)]


def describe_finite_differences(coordinates: int, directions: int, fd_safety: float) -> str:
    """The finite-difference witness in words, for the report."""
    return (
        f"finite differences in float64 of <ct, f>: central, steps t, t/2, t/4 (t = {FD_STEP:g} × max(|x|, "
        f"1e-3·rms x) per coordinate), Richardson-extrapolated, left out where they do not converge as t²; every "
        f"coordinate of leaves of ≤ {coordinates} elements, {directions} random directions otherwise; each probe "
        f"within {fd_safety:g}× its estimated error"
    )


def all_finite(tree) -> bool:
    """Whether every floating leaf of ``tree`` is finite."""
    return all(np.isfinite(np.asarray(o, np.float64)).all() for o in float_leaves(tree))


def stack_cotangents(cts) -> list:
    """The floating leaves of a list of cotangent trees, stacked per leaf: (C, …) each."""
    return [np.stack(c) for c in zip(*[[np.asarray(x) for x in float_leaves(ct)] for ct in cts])]
