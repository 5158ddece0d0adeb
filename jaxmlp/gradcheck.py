"""Gradient truth for jaxmlp's network: the hand-derived backward of the whole MLP against ``jax.grad``
and central finite differences (``check_gradients``; any op's rule: ``jaxmlp.rulecheck``).

Contract::

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
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxmlp import memory, mlp
from jaxmlp.rulecheck import worst

AUTODIFF_TOL = {"float64": 1e-10, "float32": 1e-4}
FD_TOL = 1e-7
HOST_COPIES = 3  # relative_difference: both gradients of an array as float64 NumPy, and their difference
FD_LANE_BYTES = 2**28  # finite differences: bytes of perturbed parameter copies evaluated together


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

    ``coords`` index ``ravel_pytree(params)``; they are evaluated in one jitted call, vmapped in groups
    whose perturbed copies of the parameters take at most ``FD_LANE_BYTES`` (one at a time for a network
    larger than that: a vmap over every coordinate would copy the parameters once per coordinate).
    """
    return finite_differences_program(config, h)(params, state, batch, hyper, key, jnp.asarray(coords))


def finite_differences_program(config, h: float = 1e-6):
    """``finite_differences`` as one jitted function of (params, state, batch, hyper, key, coords)."""

    def run(params, state, batch, hyper, key, coords):
        flat, unravel = ravel_pytree(params)

        def slope(i):
            def cost_at(delta):
                return mlp.cost(unravel(flat.at[i].add(delta)), state, batch, hyper, key, config=config)

            return (cost_at(h) - cost_at(-h)) / (2 * h)

        # each lane perturbs its own copy of the parameters: at most FD_LANE_BYTES of copies at a time
        lanes = max(1, min(coords.shape[0], FD_LANE_BYTES // max(flat.size * flat.dtype.itemsize, 1)))
        return jax.lax.map(slope, coords, batch_size=lanes)

    return jax.jit(run)


def _check_memory(config, dtype, args, *programs) -> None:
    """ValueError unless the compiled ``programs`` fit in the free memory: the arguments, allocated
    already; each program's peak by XLA's buffer assignment (its arguments included: copies and
    temporaries hold them again); ``HOST_COPIES`` float64 copies of the largest array (the relative
    differences of the gradients). A count of what is known, not every byte the runtime takes (its
    measured peak against this count: benchmarks/RESULTS.md, "gradcheck's memory")."""
    need = memory.tree_bytes(args)  # allocated already, and held while the programs run
    need += sum(memory.program_bytes(p) or 0 for p in programs if p is not None)
    need += HOST_COPIES * max(np.prod(a.shape) for a in jax.tree_util.tree_leaves(args[0])) * 8
    memory.check(
        int(need),
        memory.available_bytes(),
        f"checking the gradients of {'-'.join(map(str, config.sizes))} in {dtype} (compiled)",
        "use narrower or fewer hidden layers",
    )


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
    initialization from ``key``; on ``batch`` = (x, y) when given, else on a random batch. Both programs
    are compiled first and their memory, by XLA's own count, checked against the free memory before
    either runs (ValueError, one line; the caller may check ``memory.gradcheck_bytes``, a lower bound,
    before anything is allocated)."""
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
    leaves = jax.tree_util.tree_leaves(params)  # in the order of the gradients' leaves
    with_fd = fd_samples is not None and dtype == jnp.float64
    if with_fd:  # sample coordinates per array, then evaluate every sampled coordinate in one call
        rng = np.random.default_rng(int(jax.random.randint(fkey, (), 0, 2**31 - 1)))
        offsets = np.cumsum([0] + [g.size for g in leaves])
        picks = [
            np.arange(g.size) if g.size <= fd_samples else np.sort(rng.choice(g.size, fd_samples, replace=False))
            for g in leaves
        ]
        coords = jnp.asarray(np.concatenate([o + p for o, p in zip(offsets, picks)]))
    args = (params, state, batch, hyper, dkey)
    grads = jax.jit(partial(manual_and_autodiff, config=config)).lower(*args).compile()
    fd_program = finite_differences_program(config, fd_step).lower(*args, coords).compile() if with_fd else None
    _check_memory(config, dtype, args, grads, fd_program)
    manual, auto = grads(*args)
    names = array_names(params)
    m_leaves, a_leaves = jax.tree_util.tree_leaves(manual), jax.tree_util.tree_leaves(auto)
    rows = [
        {"name": name, "shape": list(g.shape), "rel_error_vs_autodiff": relative_difference(g, ga)}
        for name, g, ga in zip(names, m_leaves, a_leaves)
    ]
    fd_max = None
    if with_fd:
        fd = np.asarray(fd_program(*args, coords))
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
