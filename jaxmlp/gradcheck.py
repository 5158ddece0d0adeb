"""Gradient truth: hand-derived backward rules against ``jax.vjp`` / ``jax.grad`` and central finite
differences — for any op (``check_vjp``) and for jaxmlp's network (``check_gradients``).

Contract::

    report = check_vjp(fwd, bwd, x, params)      # fwd(*args) -> (out, residuals); bwd(residuals, ct) -> tuple
    print(report)                                # a table: one row per argument leaf, the failing ones named
    assert_vjp(fwd, bwd, x, params)              # AssertionError carrying that table (for pytest)
    f = as_custom_vjp(fwd, bwd)                  # f(*args) = fwd(*args)[0]; jax.grad(f) runs bwd

    jax.config.update("jax_enable_x64", True)            # float64, for meaningful tolerances
    report = check_gradients(config, hyper, key=jax.random.PRNGKey(0))
    report.ok, report.max_rel_error_vs_autodiff, report.max_rel_diff_vs_finite_differences
    report.arrays   # [{"name": "layer0.W", "shape": [...], "rel_error_vs_autodiff": ..., ...}, ...]

Both comparisons use the standard relative difference ‖g − ĝ‖ / (‖g‖ + ‖ĝ‖) per parameter array
(0 when both are exactly zero). Autodiff differentiates ``mlp.cost`` — the same forward, the same
dropout key — so the two must agree to rounding: tolerance 1e-10 in float64, 1e-4 in float32.
Finite differences: (J(θ + h eᵢ) − J(θ − h eᵢ)) / 2h with h = 1e-6 on up to ``fd_samples``
randomly chosen coordinates per array (all of them when the array is smaller), evaluated in one
vmapped call; tolerance 1e-7 in float64 (truncation O(h²) and rounding O(ε/h) both sit far below).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxmlp import mlp

AUTODIFF_TOL = {"float64": 1e-10, "float32": 1e-4}
FD_TOL = 1e-7


def worst(values) -> float:
    """The largest of ``values``, NaN if any is NaN (Python's ``max`` would drop it: max([0.0, nan]) is 0.0)."""
    values = [float(v) for v in values]
    if any(np.isnan(v) for v in values):
        return float("nan")
    return max(values, default=0.0)


def relative_difference(a, b) -> float:
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


def array_names(params) -> list[str]:
    return [f"layer{i}.{k}" for i, p in enumerate(params) for k in sorted(p)]


@dataclass
class GradReport:
    dtype: str
    max_rel_error_vs_autodiff: float
    max_rel_diff_vs_finite_differences: float | None
    arrays: list = field(default_factory=list)

    @property
    def fd_tol(self) -> float:
        return FD_TOL

    @property
    def autodiff_tol(self) -> float:
        return AUTODIFF_TOL[self.dtype]

    @property
    def ok(self) -> bool:
        """Within both tolerances; anything non-finite fails (NaN compares False)."""
        fd = self.max_rel_diff_vs_finite_differences
        return bool(self.max_rel_error_vs_autodiff <= self.autodiff_tol and (fd is None or fd < FD_TOL))

    def to_dict(self) -> dict:
        return {
            "dtype": self.dtype,
            "ok": self.ok,
            "max_rel_error_vs_autodiff": self.max_rel_error_vs_autodiff,
            "max_rel_diff_vs_finite_differences": self.max_rel_diff_vs_finite_differences,
            "tolerance_vs_autodiff": self.autodiff_tol,
            "tolerance_vs_finite_differences": FD_TOL,
            "finite_differences": "skipped: float32 cannot resolve them"
            if self.max_rel_diff_vs_finite_differences is None
            else "checked",
            "arrays": self.arrays,
        }


def manual_and_autodiff(params, state, batch, hyper, key, *, config):
    """(hand-derived grads, jax.grad grads) of the same cost at the same point."""
    _, manual, _, _ = mlp.loss_and_grads(params, state, batch, hyper, key, config=config)
    auto = jax.grad(mlp.cost)(params, state, batch, hyper, key, config=config)
    return manual, auto


def finite_differences(params, state, batch, hyper, key, *, config, coords, h=1e-6):
    """Central differences of ``mlp.cost`` along ``coords`` of the flattened parameter vector.

    ``coords`` index ``ravel_pytree(params)``; all of them are evaluated in one vmapped, jitted call.
    """
    flat, unravel = ravel_pytree(params)

    def slope(i):
        def cost_at(delta):
            return mlp.cost(unravel(flat.at[i].add(delta)), state, batch, hyper, key, config=config)

        return (cost_at(h) - cost_at(-h)) / (2 * h)

    return jax.jit(jax.vmap(slope))(jnp.asarray(coords))


def check_gradients(
    config: mlp.MLPConfig,
    hyper,
    *,
    key,
    batch=None,
    batch_size: int = 16,
    dtype=None,
    fd_samples: int | None = 64,
    fd_step: float = 1e-6,
    params=None,
    state=None,
) -> GradReport:
    """Compare hand-derived gradients with autodiff (and finite differences unless fd_samples=None).

    At ``params`` / ``state`` when given (a trained model's, cast to ``dtype``), else at a random
    initialization from ``key``; on ``batch`` = (x, y) when given, else on a random batch."""
    if dtype is None:
        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("float64 gradient checks need jax.config.update('jax_enable_x64', True)")
    pkey, xkey, ykey, dkey, fkey = jax.random.split(key, 5)
    if params is None:
        params, state = mlp.init(pkey, config, scale=hyper.init_scale, dtype=dtype)
    params, state = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), (params, state))
    if batch is None:
        x = jax.random.normal(xkey, (batch_size, config.sizes[0]), dtype)
        y = jax.random.randint(ykey, (batch_size,), 0, config.sizes[-1])
        batch = (x, y)
    batch = (jnp.asarray(batch[0], dtype), jnp.asarray(batch[1]))
    hyper = type(hyper)(*(None if v is None else jnp.asarray(v, dtype) for v in hyper))
    manual, auto = jax.jit(manual_and_autodiff, static_argnames="config")(
        params, state, batch, hyper, dkey, config=config
    )
    names = array_names(params)
    m_leaves, a_leaves = jax.tree_util.tree_leaves(manual), jax.tree_util.tree_leaves(auto)
    rows = [
        {"name": name, "shape": list(g.shape), "rel_error_vs_autodiff": relative_difference(g, ga)}
        for name, g, ga in zip(names, m_leaves, a_leaves)
    ]
    fd_max = None
    if fd_samples is not None and dtype == jnp.float64:
        # sample coordinates per array, then evaluate every sampled coordinate in one call
        rng = np.random.default_rng(int(jax.random.randint(fkey, (), 0, 2**31 - 1)))
        offsets = np.cumsum([0] + [g.size for g in m_leaves])
        picks = [
            np.arange(g.size) if g.size <= fd_samples else np.sort(rng.choice(g.size, fd_samples, replace=False))
            for g in m_leaves
        ]
        fd = np.asarray(
            finite_differences(
                params,
                state,
                batch,
                hyper,
                dkey,
                config=config,
                coords=np.concatenate([o + p for o, p in zip(offsets, picks)]),
                h=fd_step,
            )
        )
        start = 0
        for row, g, pick in zip(rows, m_leaves, picks):
            row["rel_diff_vs_finite_differences"] = relative_difference(
                np.ravel(g)[pick], fd[start : start + len(pick)]
            )
            row["finite_difference_coords"] = int(len(pick))
            start += len(pick)
        fd_max = worst(r["rel_diff_vs_finite_differences"] for r in rows)
    return GradReport(
        dtype=str(dtype),
        arrays=rows,
        max_rel_diff_vs_finite_differences=fd_max,
        max_rel_error_vs_autodiff=worst(r["rel_error_vs_autodiff"] for r in rows),
    )


# ---------------------------------------------------------------------------------------------
# Any op: check_vjp / assert_vjp / as_custom_vjp

VJP_TOL = 1e-10  # float64: both sides are exact up to rounding
VJP_FD_TOL = 1e-6  # float64 central differences, h = 1e-6: truncation O(h²) and rounding O(ε/h) sit below


def _differentiable(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) and not jax.dtypes.issubdtype(
        jnp.result_type(leaf), jax.dtypes.prng_key
    )


def _to_float64(leaf):
    return jnp.asarray(leaf, jnp.float64) if _differentiable(leaf) else leaf


@dataclass
class VjpRow:
    name: str  # the argument and the leaf's path in it, e.g. "arg1[0]['W']"
    shape: tuple
    vs_autodiff: float  # max over cotangents of ‖bwd − jax.vjp‖ / (‖bwd‖ + ‖jax.vjp‖)
    vs_directions: float | None  # the same against central differences along random directions
    vs_coordinates: float | None  # … and along sampled coordinates

    def ok(self, vjp_tol: float, fd_tol: float) -> bool:
        fd = [v for v in (self.vs_directions, self.vs_coordinates) if v is not None]
        return bool(self.vs_autodiff <= vjp_tol and all(v <= fd_tol for v in fd))  # NaN fails


@dataclass
class VjpReport:
    """What ``check_vjp`` found: one row per differentiable leaf of every argument."""

    rows: list
    vjp_tol: float = VJP_TOL
    fd_tol: float = VJP_FD_TOL
    problems: list = field(default_factory=list)  # structural faults of bwd's result, one line each

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok(self.vjp_tol, self.fd_tol) for r in self.rows)

    @property
    def worst(self) -> float:
        """The largest relative error over every comparison (NaN if any was NaN)."""
        values = [v for r in self.rows for v in (r.vs_autodiff, r.vs_directions, r.vs_coordinates) if v is not None]
        return worst(values)

    @property
    def failing(self) -> list:
        return [r.name for r in self.rows if not r.ok(self.vjp_tol, self.fd_tol)]

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "worst": self.worst,
            "tolerance_vs_autodiff": self.vjp_tol,
            "tolerance_vs_finite_differences": self.fd_tol,
            "problems": self.problems,
            "rows": [vars(r) | {"ok": r.ok(self.vjp_tol, self.fd_tol)} for r in self.rows],
        }

    def __str__(self) -> str:
        def num(v):
            return "—" if v is None else f"{v:.2e}"

        width = max([len("argument leaf")] + [len(r.name) for r in self.rows])
        lines = [f"{'argument leaf':<{width}}  {'shape':<12}{'vs jax.vjp':>12}{'vs FD dirs':>12}{'vs FD coords':>14}"]
        for r in self.rows:
            flag = "" if r.ok(self.vjp_tol, self.fd_tol) else "  FAILED"
            lines.append(
                f"{r.name:<{width}}  {'x'.join(map(str, r.shape)) or 'scalar':<12}{num(r.vs_autodiff):>12}"
                f"{num(r.vs_directions):>12}{num(r.vs_coordinates):>14}{flag}"
            )
        lines += [f"problem: {p}" for p in self.problems]
        verdict = (
            "OK" if self.ok else "FAILED: " + ", ".join(self.failing + (["bwd's result"] if self.problems else []))
        )
        lines.append(
            f"worst {num(self.worst)} (tolerance {self.vjp_tol:g} vs jax.vjp, {self.fd_tol:g} vs finite "
            f"differences): {verdict}"
        )
        return "\n".join(lines)


def check_vjp(
    fwd,
    bwd,
    *args,
    cotangents: int = 3,
    directions: int = 2,
    coordinates: int = 6,
    step: float = 1e-6,
    seed: int = 0,
    vjp_tol: float = VJP_TOL,
    fd_tol: float = VJP_FD_TOL,
) -> VjpReport:
    """Check a hand-written backward rule ``bwd`` against autodiff and finite differences, in float64.

    The convention is ``jax.custom_vjp``'s: ``fwd(*args) -> (out, residuals)`` and ``bwd(residuals, ct)
    -> tuple of cotangents, one per argument``; ``args`` and ``out`` may be pytrees. Floating leaves
    are cast to float64 (inside ``jax.enable_x64``; the caller's setting is untouched); integer, boolean
    and PRNG-key leaves get no cotangent (``bwd`` may return None or zeros for them).

    For each of ``cotangents`` random cotangents ``ct`` (standard normal, the structure of ``out``):
      - against autodiff: ``bwd(residuals, ct)`` vs ``jax.vjp(lambda *a: fwd(*a)[0], *args)[1](ct)``;
      - against central finite differences of s(x) = ⟨ct, f(x)⟩: for every differentiable leaf, along
        ``directions`` random unit directions v — ⟨bwd's leaf, v⟩ vs (s(x + hv) − s(x − hv)) / 2h —
        and along ``coordinates`` sampled coordinates (all of them in a smaller leaf).
    Each comparison is the relative difference ‖a − b‖ / (‖a‖ + ‖b‖) of the leaf's values (0 when both
    are 0); a row keeps the largest over cotangents. Anything non-finite fails. Returns a
    ``VjpReport``: ``ok``, ``worst``, one row per leaf, and a ``str()`` table naming the failing ones.
    """
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        args = jax.tree_util.tree_map(_to_float64, args)
        out, residuals = fwd(*args)
        f = jax.jit(lambda *a: fwd(*a)[0])
        _, reference_vjp = jax.vjp(lambda *a: fwd(*a)[0], *args)
        leaves = [
            (i, path, leaf)
            for i, arg in enumerate(args)
            for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]
            if _differentiable(leaf)
        ]
        found = {(i, jax.tree_util.keystr(path)): {"auto": [], "dirs": [], "coords": []} for i, path, _ in leaves}
        problems = []
        for _ in range(cotangents):
            ct = jax.tree_util.tree_map(lambda o: jnp.asarray(rng.standard_normal(np.shape(o))), out)
            mine = bwd(residuals, ct)
            if not isinstance(mine, (tuple, list)) or len(mine) != len(args):
                problems.append(
                    f"bwd returned {type(mine).__name__} of length "
                    f"{len(mine) if isinstance(mine, (tuple, list)) else '—'}; it must return a tuple "
                    f"with one cotangent per argument ({len(args)})"
                )
                break
            ref = reference_vjp(ct)

            def s(*a, ct=ct):
                return sum(
                    jnp.vdot(c, o) for c, o in zip(jax.tree_util.tree_leaves(ct), jax.tree_util.tree_leaves(f(*a)))
                )

            mine_at, ref_at = (
                [dict(jax.tree_util.tree_flatten_with_path(tree)[0]) for tree in trees] for trees in (mine, ref)
            )
            for i, path, leaf in leaves:
                name = (i, jax.tree_util.keystr(path))
                got = mine_at[i].get(path)
                if got is None or np.shape(got) != np.shape(leaf):
                    problems.append(f"bwd gives arg{i}{name[1]} no cotangent of shape {np.shape(leaf)}")
                    continue
                got = np.asarray(got, np.float64)
                found[name]["auto"].append(relative_difference(got, ref_at[i][path]))

                def slope(v, i=i, path=path, leaf=leaf):  # central difference of s along v in this leaf alone
                    moved = [_with_leaf(args, i, path, leaf + sign * step * v) for sign in (1, -1)]
                    return (float(s(*moved[0])) - float(s(*moved[1]))) / (2 * step)

                dirs = [rng.standard_normal(np.shape(leaf)) for _ in range(directions)]
                dirs = [d / (np.linalg.norm(d) or 1.0) for d in dirs]
                found[name]["dirs"].append(
                    relative_difference([np.vdot(got, d) for d in dirs], [slope(jnp.asarray(d)) for d in dirs])
                )
                size = int(np.prod(np.shape(leaf)))
                picks = np.arange(size) if size <= coordinates else rng.choice(size, coordinates, replace=False)
                units = [np.eye(size)[j].reshape(np.shape(leaf)) for j in picks]
                found[name]["coords"].append(
                    relative_difference(got.ravel()[picks], [slope(jnp.asarray(u)) for u in units])
                )
    rows = [
        VjpRow(
            name=f"arg{i}{key}",
            shape=tuple(np.shape(leaf)),
            vs_autodiff=worst(found[(i, key)]["auto"]) if found[(i, key)]["auto"] else float("nan"),
            vs_directions=worst(found[(i, key)]["dirs"]) if directions and found[(i, key)]["dirs"] else None,
            vs_coordinates=worst(found[(i, key)]["coords"]) if coordinates and found[(i, key)]["coords"] else None,
        )
        for (i, path, leaf), key in ((x, jax.tree_util.keystr(x[1])) for x in leaves)
    ]
    return VjpReport(rows, vjp_tol, fd_tol, sorted(set(problems), key=problems.index))


def assert_vjp(fwd, bwd, *args, **options) -> VjpReport:
    """``check_vjp``, raising AssertionError with the report's table when it fails (for pytest)."""
    report = check_vjp(fwd, bwd, *args, **options)
    if not report.ok:
        raise AssertionError("hand-written backward disagrees:\n" + str(report))
    return report


def as_custom_vjp(fwd, bwd):
    """``f(*args) = fwd(*args)[0]`` whose ``jax.grad`` / ``jax.vjp`` run ``bwd`` (``jax.custom_vjp``).

    Static configuration (an activation's name, a flag) belongs in a closure or ``functools.partial``
    around fwd and bwd, not in ``args``."""

    @jax.custom_vjp
    def f(*args):
        return fwd(*args)[0]

    f.defvjp(fwd, bwd)
    return f


def _with_leaf(args, i, path, value):
    """``args`` with the leaf at ``path`` of argument ``i`` replaced by ``value``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(args[i])
    new = treedef.unflatten([value if p == path else leaf for p, leaf in leaves])
    return (*args[:i], new, *args[i + 1 :])
