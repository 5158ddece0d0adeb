"""Is a hand-written derivative rule right? ``check_vjp`` for ``jax.custom_vjp`` rules, ``check_jvp`` for
``jax.custom_jvp`` rules: every rule judged by several independent witnesses, each against its own tolerance.

Contract::

    report = check_vjp(fwd, bwd, x, params)    # fwd(*args) -> (out, residuals); bwd(residuals, ct) -> tuple
    report = check_jvp(f, f_jvp, x, params)    # f(*args) -> out; f_jvp(primals, tangents) -> (out, tangent_out)
    report.ok; print(report)                   # a table: one row per argument leaf, each witness's figure
    assert_vjp(fwd, bwd, x, params)            # AssertionError carrying that table (for pytest); assert_jvp
    f = as_custom_vjp(fwd, bwd)                # jax.grad(f) runs bwd;  as_custom_jvp(f, f_jvp): jax.jvp runs f_jvp

Arguments and outputs may be pytrees. Floating leaves are differentiated; integer, boolean and PRNG-key
leaves are not (``bwd`` gives them ``None`` or zeros). ``None`` from ``bwd`` for a floating argument, or for
any subtree of one, means a zero cotangent, as in ``jax.custom_vjp``: it fails only where the true cotangent
is not zero.

The witnesses (the report says which ones judged each leaf):
- **autodiff** (exact: tolerance ``tol`` = 1e-10, relative): in float64, ``jax.vjp`` of ``f = fwd(*args)[0]``
  against ``bwd`` for ``cotangents`` random cotangents, every coordinate at once. Where reverse mode cannot
  run (``lax.while_loop``), forward mode instead: the dot-product test ⟨ct, J·v⟩ (``jax.jvp``) =
  ⟨bwd(ct), v⟩ on the probes below. ``check_jvp`` uses ``jax.jvp`` first and the dot-product test with
  ``jax.vjp`` second. Where autodiff is non-finite and the rule finite (the safe ``where``/``sqrt``
  pattern), autodiff does not judge those coordinates; finite differences do, and the report says so.
- **finite differences** (judged against their own estimated error): float64 central differences of
  s(x) = ⟨ct, f(x)⟩ along probes d — every coordinate of leaves with at most ``coordinates`` elements,
  ``directions`` dense random directions otherwise — with a step per coordinate from the leaf's values
  (x ± t·d, d scaled by max(|xᵢ|, 10⁻³·rms(x)), t = 10⁻⁵), at steps t and t/2. Richardson's
  extrapolation R = (4·D(t/2) − D(t))/3 is the estimate; its error bound is
  ``fd_safety`` × (|D(t) − D(t/2)| + 16·ε·Σ|ct·f(x)|/t) (truncation seen between the two steps, plus
  rounding). A probe fails when |rule − R| exceeds its bound. Where finite differences disagree with
  autodiff itself (``stop_gradient``, a custom derivative inside the forward, a kink within the step)
  they are not a witness for that leaf, which the report says rather than failing a rule that agrees
  with autodiff.
- **the caller's dtype**: the rule run at the dtype it was given (e.g. float32), outside float64: a
  non-finite cotangent where float64 gives a finite one fails ("overflows in float32"), and so does an
  error beyond √ε of that dtype *and* beyond 10× autodiff's own error at that dtype. Cotangent
  shapes and dtypes are checked here against the arguments' (a float16 gradient for a float32
  parameter is a bug that ``jax.custom_vjp`` passes on silently), and the rule is run once through
  ``jax.custom_vjp`` itself, so what it would refuse at run time is refused here.
- **vmap**: the rule under ``jax.vmap`` (through ``jax.custom_vjp`` / ``custom_jvp``, as a user's batched
  code runs it) over ``batch`` perturbed copies of the arguments equals the rule applied to each copy
  (tolerance ``tol``).

Relative errors are ‖a − b‖ / max(‖a‖, ‖b‖) (0 when both are 0). What the witnesses cannot see: an
error below ``tol`` of the cotangent's norm; a rule that is wrong only where no random point lands
(exactly at a kink); with autodiff unavailable, an error below the finite differences' bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

TOL = 1e-10  # exact witnesses in float64: both sides are the same derivative up to rounding
FD_SAFETY = 3.0  # finite differences: a probe fails beyond this multiple of its estimated error
FD_STEP = 1e-5  # relative step t (Richardson over t and t/2: truncation O(t⁴), rounding O(ε/t))
NOISE = 16.0  # rounding of s(x) taken as NOISE·ε·Σ|ct·f(x)|
EPS = float(np.finfo(np.float64).eps)
MEMORY_FLOATS = 2**24  # float64 values that one batch of probe evaluations may hold (128 MiB)


# ---------------------------------------------------------------------------------------------
# Small helpers


def worst(values) -> float:
    """The largest of ``values``, NaN if any is NaN (Python's ``max`` would drop it: max([0.0, nan]) is 0.0)."""
    values = [float(v) for v in values]
    if any(np.isnan(v) for v in values):
        return float("nan")
    return max(values, default=0.0)


def relative_error(a, b) -> float:
    """‖a − b‖ / max(‖a‖, ‖b‖) over all values; 0 when both are 0, NaN when anything is non-finite."""
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("nan")
    denom = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


def _differentiable(leaf) -> bool:
    dtype = jnp.result_type(leaf)
    return jnp.issubdtype(dtype, jnp.inexact) and not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _index(shape, flat: int) -> str:
    return str([int(k) for k in np.unravel_index(int(flat), shape)]) if shape else "[]"


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _with_leaf(args, i, path, value):
    """``args`` with the leaf at ``path`` of argument ``i`` replaced by ``value``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(args[i])
    new = treedef.unflatten([value if p == path else leaf for p, leaf in leaves])
    return (*args[:i], new, *args[i + 1 :])


def _to(dtype_of, tree):
    """Floating leaves of ``tree`` cast by ``dtype_of(leaf)``; other leaves untouched."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype_of(a)) if _differentiable(a) else a, tree)


def _forward_constants(f, args) -> str:
    """What in the forward makes its derivative differ from finite differences by design, if anything."""
    try:
        text = str(jax.make_jaxpr(f)(*args))
    except Exception:  # noqa: BLE001 - only an explanation
        return ""
    found = [name for name in ("stop_gradient", "custom_jvp_call", "custom_vjp_call") if name in text]
    return ", ".join(found)


# ---------------------------------------------------------------------------------------------
# The report


@dataclass
class Check:
    """One witness's verdict on one argument leaf."""

    witness: str  # "jax.vjp", "jax.jvp", "finite differences", "float32", "vmap"
    status: str  # "agrees", "disagrees", "not a witness", "skipped"
    error: float | None = None  # relative error, ‖a − b‖ / max(‖a‖, ‖b‖)
    tolerance: float | None = None  # what the error is judged against
    where: str = ""  # the worst coordinate ("[2, 1]") or probe ("direction 3")
    detail: str = ""  # the values there, or why the witness could not judge


EXACT = ("jax.vjp", "jax.jvp", "jax.vjp (dot-product test)", "jax.jvp (dot-product test)")
FD = "finite differences"


@dataclass
class LeafRow:
    name: str  # the argument and the leaf's path in it, e.g. "arg1['W']"
    shape: tuple
    dtype: str
    checks: list = field(default_factory=list)

    def check(self, witness_kind: str) -> Check | None:
        """The check of one kind: "exact" (autodiff), "fd", "dtype" or "vmap"."""
        for c in self.checks:
            kind = "exact" if c.witness in EXACT else "fd" if c.witness == FD else c.witness
            if kind == witness_kind or (witness_kind == "dtype" and c.witness not in EXACT + (FD, "vmap")):
                return c
        return None

    @property
    def ok(self) -> bool:
        """No witness disagrees, and autodiff or finite differences agree (an unjudged leaf is not ok)."""
        judged = [c for c in self.checks if c.witness in EXACT + (FD,) and c.status == "agrees"]
        return bool(judged) and not any(c.status == "disagrees" for c in self.checks)


@dataclass
class RuleReport:
    """What ``check_vjp`` / ``check_jvp`` found: one row per differentiable leaf of every argument."""

    kind: str  # "vjp" or "jvp"
    rows: list
    problems: list = field(default_factory=list)  # faults of the rule as a whole, one line each
    notes: list = field(default_factory=list)  # what a witness could not do, and why
    witnesses: list = field(default_factory=list)  # which witnesses ran, in words
    tol: float = TOL
    fd_safety: float = FD_SAFETY

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok for r in self.rows)

    @property
    def failing(self) -> list:
        return [r.name for r in self.rows if not r.ok]

    def _worst(self, kind) -> float | None:
        values = [c.error for r in self.rows if (c := r.check(kind)) and c.error is not None]
        return worst(values) if values else None

    @property
    def worst_vs_autodiff(self) -> float | None:
        return self._worst("exact")

    @property
    def worst_vs_finite_differences(self) -> float | None:
        return self._worst("fd")

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "ok": self.ok,
            "worst_vs_autodiff": self.worst_vs_autodiff,
            "worst_vs_finite_differences": self.worst_vs_finite_differences,
            "tolerance_vs_autodiff": self.tol,
            "finite_difference_safety": self.fd_safety,
            "problems": self.problems,
            "notes": self.notes,
            "witnesses": self.witnesses,
            "rows": [
                {
                    "name": r.name,
                    "shape": list(r.shape),
                    "dtype": r.dtype,
                    "ok": r.ok,
                    "checks": [vars(c) for c in r.checks],
                }
                for r in self.rows
            ],
        }

    def __str__(self) -> str:
        def cell(c: Check | None) -> str:
            if c is None:
                return "—"
            if c.status == "skipped":
                return "skipped"
            if c.status == "not a witness":
                return "not a witness"
            if c.error is None:
                return "ok" if c.status == "agrees" else "FAILED"
            mark = "≤" if c.status == "agrees" else ">"
            return f"{c.error:.1e} {mark} {c.tolerance:.0e}"

        exact_name = next((c.witness for r in self.rows for c in r.checks if c.witness in EXACT), "autodiff")
        dtype_name = next((c.witness for r in self.rows if (c := r.check("dtype"))), "caller dtype")
        head = ["argument leaf", "shape", f"vs {exact_name}", "vs finite differences", dtype_name, "vmap", ""]
        body = [
            [
                r.name,
                "x".join(map(str, r.shape)) or "scalar",
                cell(r.check("exact")),
                cell(r.check("fd")),
                cell(r.check("dtype")),
                cell(r.check("vmap")),
                "" if r.ok else "FAILED",
            ]
            for r in self.rows
        ]
        widths = [max(len(line[k]) for line in [head, *body]) for k in range(len(head))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in [head, *body]]
        for r in self.rows:
            for c in r.checks:
                if c.status == "disagrees":
                    measured = c.error is not None and np.isfinite(c.error)
                    figure = f" by {c.error:.2e} (tolerance {c.tolerance:.1e})" if measured else ""
                    where = f" {'worst ' if measured else ''}at {c.where}" if c.where else ""
                    who = {"vmap": "jax.vmap"}.get(c.witness, c.witness)
                    who = who if c.witness in (*EXACT, FD, "vmap") else f"the {c.witness} run"
                    lines.append(f"FAILED {r.name}: {who} disagrees{figure}{where}{': ' if c.detail else ''}{c.detail}")
        lines += [f"problem: {p}" for p in self.problems]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"witness: {w}" for w in self.witnesses]
        bad = self.failing + (["the rule as a whole"] if self.problems else [])
        lines.append("verdict: OK" if self.ok else "verdict: FAILED: " + ", ".join(bad))
        return "\n".join(lines)


VjpReport = RuleReport  # the 0.3.0 name


# ---------------------------------------------------------------------------------------------
# Leaves and probes


@dataclass
class _Leaf:
    i: int  # which argument
    path: tuple
    name: str
    value: np.ndarray  # float64 copy of the caller's values (exact)
    dtype: np.dtype  # the caller's dtype


@dataclass
class _Probes:
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


def _differentiable_leaves(args) -> list:
    found = []
    for i, arg in enumerate(args):
        for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]:
            if _differentiable(leaf):
                name = f"arg{i}{jax.tree_util.keystr(path)}"
                dtype = np.dtype(jax.dtypes.canonicalize_dtype(jnp.result_type(leaf)))  # what JAX computes in
                found.append(_Leaf(i, path, name, np.asarray(leaf, np.float64), dtype))
    return found


def _scale(x: np.ndarray) -> np.ndarray:
    """Per-coordinate step scale: |xᵢ|, floored at 10⁻³·rms(x) (1 for an all-zero leaf)."""
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    return np.maximum(np.abs(x), 1e-3 * rms) if rms > 0 else np.ones_like(x)


def _probes(leaf: _Leaf, rng, coordinates: int, directions: int, only=None) -> _Probes:
    """Every coordinate of a small leaf (or of the coordinates in ``only``), else dense random directions."""
    sigma = _scale(leaf.value).ravel()
    where = np.arange(leaf.value.size) if only is None else np.flatnonzero(np.ravel(only))
    shape = leaf.value.shape
    if len(where) <= coordinates:
        return _Probes("sparse", (where, sigma[where]), [_index(shape, j) for j in where], sigma[where])
    mask = np.zeros(leaf.value.size)
    mask[where] = 1.0
    dirs = rng.standard_normal((directions, leaf.value.size)) * sigma * mask
    return _Probes(
        "dense", dirs.reshape((directions, *shape)), [f"direction {p}" for p in range(directions)], np.ones(directions)
    )


def _leaf_of(tree_tuple, leaf: _Leaf):
    return dict(jax.tree_util.tree_flatten_with_path(tree_tuple[leaf.i])[0])[leaf.path]


def _moved(value, probe, kind, tau):
    """value + τ·d for one probe (dense: d itself; sparse: (index, σ))."""
    if kind == "dense":
        return value + tau * probe
    index, sigma = probe
    return value.ravel().at[index].add(tau * sigma).reshape(value.shape)


# ---------------------------------------------------------------------------------------------
# Cotangent structure


def _cotangent_tree(result_i, arg_i, name, problems) -> dict:
    """{path: array or None (zero)} for every leaf of argument ``arg_i`` from the rule's ``result_i``,
    accepting None for the argument or any subtree of it; a structural fault goes to ``problems``."""
    arg_leaves = jax.tree_util.tree_flatten_with_path(arg_i)[0]
    if result_i is None:
        return {p: None for p, _ in arg_leaves}
    got = jax.tree_util.tree_flatten_with_path(result_i, is_leaf=lambda x: x is None)[0]
    out = {}
    for path, _ in arg_leaves:
        cover = [(p, v) for p, v in got if path[: len(p)] == p]
        if len(cover) == 1 and (cover[0][1] is None or cover[0][0] == path):
            out[path] = cover[0][1]
    extra = [p for p, _ in got if not any(q[: len(p)] == p for q, _ in arg_leaves)]
    if len(out) != len(arg_leaves) or extra:
        problems.append(
            f"{name}: the cotangent's structure {jax.tree_util.tree_structure(result_i)} does not match the "
            f"argument's {jax.tree_util.tree_structure(arg_i)} (None may stand for any part of it)"
        )
    return out


def _split(result, args, label, problems) -> list | None:
    """A rule's per-argument result as one {path: value} per argument, or None when it is malformed."""
    if not isinstance(result, (tuple, list)) or len(result) != len(args):
        length = len(result) if isinstance(result, (tuple, list)) else "—"
        problems.append(
            f"{label} returned {type(result).__name__} of length {length}; it must return a tuple with one "
            f"entry per argument ({len(args)})"
        )
        return None
    return [_cotangent_tree(r, a, f"arg{i}", problems) for i, (r, a) in enumerate(zip(result, args))]


def _leaf_value(split, leaf: _Leaf, problems, *, check_dtype: bool) -> np.ndarray | None:
    """The rule's cotangent for one leaf as float64 (None → zeros); None when it is missing or mis-shaped."""
    if leaf.path not in split[leaf.i]:
        return None
    got = split[leaf.i][leaf.path]
    if got is None:
        return np.zeros(leaf.value.shape)
    shape, dtype = np.shape(got), np.dtype(jnp.result_type(got))
    if shape != leaf.value.shape:
        problems.append(f"{leaf.name}: bwd gives shape {shape} {dtype}, expected {leaf.value.shape} (the argument's)")
        return None
    if check_dtype and not isinstance(got, (int, float)) and dtype != leaf.dtype:
        problems.append(
            f"{leaf.name}: bwd gives a {dtype} cotangent for a {leaf.dtype} argument (jax.custom_vjp passes it on: "
            f"jax.grad would return {dtype}); cast it to the argument's dtype"
        )
    return np.asarray(got, np.float64)


# ---------------------------------------------------------------------------------------------
# Evaluating many probes: jit + lax.map in batches of bounded memory; one by one where fwd cannot be batched


def _map(fn, consts, xs, floats_per_item: int):
    """np.stack([fn(consts, x) for x in xs]) (xs: a pytree with a leading probe axis)."""
    n = len(jax.tree_util.tree_leaves(xs)[0])
    batch = max(1, min(n, MEMORY_FLOATS // max(floats_per_item, 1)))
    try:
        run = jax.jit(lambda consts, xs: jax.lax.map(lambda x: fn(consts, x), xs, batch_size=batch))
        return np.asarray(run(consts, xs), np.float64)
    except Exception:  # noqa: BLE001 - fn cannot be traced under jit/vmap: one probe at a time
        items = [jax.tree_util.tree_map(lambda a, k=k: a[k], xs) for k in range(n)]
        return np.stack([np.asarray(fn(consts, x), np.float64) for x in items])


def _contract(out, ct_leaves):
    """(s, m): s_c = ⟨ct_c, out⟩ and m_c = Σ|ct_c·out| over the floating outputs (ct_leaves: (C, …) each)."""
    outs = [o for o in jax.tree_util.tree_leaves(out) if jnp.issubdtype(jnp.result_type(o), jnp.inexact)]
    s = sum(c.reshape(c.shape[0], -1) @ jnp.ravel(o) for c, o in zip(ct_leaves, outs))
    m = sum(jnp.abs(c.reshape(c.shape[0], -1)) @ jnp.abs(jnp.ravel(o)) for c, o in zip(ct_leaves, outs))
    return s, m


def _finite_differences(f, args, leaf: _Leaf, probes: _Probes, ct_leaves, out_size: int):
    """(R, bound), both (P, C): Richardson estimates of ⟨ct_c, J·d_p⟩ and their estimated errors (before
    the safety factor); NaN where f leaves its domain at a step."""
    t = FD_STEP
    steps = jnp.asarray([t, -t, t / 2, -t / 2])

    def at_probe(consts, probe):
        args, cts = consts
        value = _leaf_of(args, leaf)

        def at_step(tau):
            return _contract(f(*_with_leaf(args, leaf.i, leaf.path, _moved(value, probe, probes.kind, tau))), cts)[0]

        return jax.vmap(at_step)(steps)  # (4, C)

    s = _map(at_probe, (args, ct_leaves), probes.items(), 4 * (out_size + leaf.value.size))
    _, m = _contract(f(*args), ct_leaves)
    d1 = (s[:, 0] - s[:, 1]) / (2 * t)
    d2 = (s[:, 2] - s[:, 3]) / t
    bound = np.abs(d1 - d2) + NOISE * EPS * np.asarray(m, np.float64)[None, :] / t
    return (4 * d2 - d1) / 3, bound


def _tangent(value, probe, kind):
    return _moved(jnp.zeros_like(value), probe, kind, 1.0)


def _jvp_values(f, args, leaf: _Leaf, probes: _Probes, ct_leaves, out_size: int, full: bool):
    """Forward mode on each probe: ⟨ct_c, J·d_p⟩ (P, C), or with ``full`` J·d_p itself (P, out_size)."""

    def at_probe(consts, probe):
        args, cts = consts
        value = _leaf_of(args, leaf)
        _, out = jax.jvp(
            lambda v: f(*_with_leaf(args, leaf.i, leaf.path, v)), (value,), (_tangent(value, probe, probes.kind),)
        )
        return _flat(out) if full else _contract(out, cts)[0]

    return _map(at_probe, (args, ct_leaves), probes.items(), 2 * (out_size + leaf.value.size))


def _flat(tree):
    leaves = [jnp.ravel(o) for o in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(jnp.result_type(o), jnp.inexact)]
    return jnp.concatenate(leaves) if leaves else jnp.zeros(0)


# ---------------------------------------------------------------------------------------------
# Judging


def _compare(mine, ref, tol, witness, where_of, label="bwd", ref_label=None) -> Check:
    """An exact witness: 2-D arrays (rows, cols), judged on the coordinates where ``ref`` is finite."""
    finite = np.isfinite(ref)
    a, b = np.where(finite, mine, 0.0), np.where(finite, ref, 0.0)
    err = relative_error(a, b)
    if err <= tol:
        return Check(witness, "agrees", err, tol)
    r, c = np.unravel_index(int(np.argmax(np.abs(a - b))), a.shape)
    detail = f"{label} {a[r, c]:.6g} vs {ref_label or witness} {b[r, c]:.6g}"
    return Check(witness, "disagrees", err, tol, where_of(r, c), detail)


def _judge_fd(rule_p, fd_p, bound_p, exact_p, probes_names, norms, safety, constants, label="bwd") -> Check:
    """Finite differences on all probes of one leaf: (P, C) arrays for the rule, the estimate, its error
    bound and the exact witness (NaN where there is none)."""
    usable = np.isfinite(fd_p) & np.isfinite(bound_p)
    if not usable.any():
        return Check(FD, "skipped", detail="f is non-finite at the finite-difference steps (outside its domain)")
    limit = safety * bound_p + 1e-13 * np.abs(fd_p)
    off = np.where(usable, np.abs(rule_p - fd_p), 0.0)
    bad = usable & (off > limit)
    exact_off = usable & np.isfinite(exact_p) & (np.abs(np.nan_to_num(exact_p) - fd_p) > limit)
    a, b = np.where(usable, rule_p, 0.0), np.where(usable, fd_p, 0.0)
    err = relative_error(a, b)
    scale = max(np.linalg.norm(a), np.linalg.norm(b)) or 1.0
    tol = float(np.linalg.norm(np.where(usable, limit, 0.0)) / scale)
    if not bad.any():
        return Check(FD, "agrees", err, tol)
    if not (bad & ~exact_off).any():  # wherever FD disagrees with the rule, it disagrees with autodiff too
        reason = f"the forward uses {constants}" if constants else "the forward is not differentiable within the step"
        return Check(
            FD, "not a witness", err, tol, detail=f"they disagree with autodiff itself ({reason}); autodiff judged"
        )
    ratio = np.where(bad & ~exact_off, off / np.maximum(limit, 1e-300), 0.0)
    p, c = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    n = norms[p]
    detail = f"{label} {rule_p[p, c] / n:.6g} vs finite differences {fd_p[p, c] / n:.6g} ± {limit[p, c] / n:.1e}"
    return Check(FD, "disagrees", err, tol, probes_names[p], detail)


def _judge_dtype(mine_c, mine64, ref_c, ref64, dtype: np.dtype, forward_finite: bool, where_of, label="bwd") -> Check:
    """The rule at the caller's dtype against the same rule in float64 at the same point (2-D arrays);
    ``ref_c`` / ``ref64``: autodiff at the caller's dtype and in float64 (None where it cannot run)."""
    name = str(dtype)
    if not forward_finite:
        return Check(name, "skipped", detail=f"the forward itself is non-finite in {name}")
    bad = ~np.isfinite(mine_c) & np.isfinite(mine64)
    if bad.any():
        r, c = np.unravel_index(int(np.argmax(bad)), bad.shape)
        return Check(
            name,
            "disagrees",
            where=where_of(r, c),
            detail=f"overflows in {name}: {label} gives {mine_c[r, c]} where float64 gives {mine64[r, c]:.6g}",
        )
    finite = np.isfinite(mine64)
    err = relative_error(np.where(finite, mine_c, 0.0), np.where(finite, mine64, 0.0))
    floor = float(np.sqrt(np.finfo(dtype).eps))
    ref_err = float("nan") if ref_c is None or ref64 is None else relative_error(ref_c, ref64)
    tol = max(floor, 10 * ref_err) if np.isfinite(ref_err) else floor
    if err <= tol:
        return Check(name, "agrees", err, tol)
    return Check(name, "disagrees", err, tol, detail=f"loses more digits in {name} than autodiff does ({ref_err:.1e})")


# ---------------------------------------------------------------------------------------------
# Shared set-up


def _random_like(tree, rng):
    """Standard normal values for the floating leaves of ``tree``, rounded to their own dtype (float0 zeros
    for the others)."""

    def draw(leaf):
        if _differentiable(leaf):
            return np.asarray(rng.standard_normal(np.shape(leaf))).astype(jnp.result_type(leaf))
        return np.zeros(np.shape(leaf), jax.dtypes.float0)

    return jax.tree_util.tree_map(draw, tree)


def _float_leaves(tree) -> list:
    return [o for o in jax.tree_util.tree_leaves(tree) if _differentiable(o)]


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs) if isinstance(xs[0], np.ndarray) else jnp.stack(xs), *trees)


def _copies(args, rng, batch):
    """``batch`` copies of ``args`` for the vmap witness: copy k scales floating leaves by 1 + 0.01·k·u."""

    def copy(k):
        def move(a):
            return np.asarray(a) * (1 + 0.01 * k * rng.uniform(-1, 1, np.shape(a))) if _differentiable(a) else a

        return jax.tree_util.tree_map(move, args)

    return [copy(k) for k in range(batch)]


def _vmap_witness(run, examples, per_example_extra, leaves, rows, tol, problems, pick):
    """The rule under jax.vmap against the rule per example: ``run(args, extra)`` gives a result from which
    ``pick(result, leaf)`` takes one leaf's values."""
    try:
        one = jax.jit(run)  # compiled once, like the batched program: the rule as a user's jitted code runs it
        single = [one(a, e) for a, e in zip(examples, per_example_extra)]
        batched = jax.jit(jax.vmap(run))(_stack(examples), _stack(per_example_extra))
    except Exception as e:  # noqa: BLE001 - reported
        problems.append(f"under jax.vmap the rule raises: {_one_line(e)}")
        return
    for leaf in leaves:
        want = np.stack([np.asarray(pick(s, leaf), np.float64) for s in single]).reshape(len(single), -1)
        got = np.asarray(pick(batched, leaf), np.float64).reshape(len(single), -1)
        both = np.isnan(want) & np.isnan(got)  # the same NaN on both sides is the same result
        where = lambda r, c, leaf=leaf: f"copy {r} at {_index(leaf.value.shape, c)}"  # noqa: E731
        rows[leaf.name].checks.append(
            _compare(np.where(both, 0.0, got), np.where(both, 0.0, want), tol, "vmap", where, "batched", "per example")
        )


def _ratio_names(leaf):
    return lambda r, c: _index(leaf.value.shape, c)


# ---------------------------------------------------------------------------------------------
# check_vjp


def check_vjp(
    fwd,
    bwd,
    *args,
    cotangents: int = 2,
    directions: int = 4,
    coordinates: int = 128,
    batch: int = 3,
    seed: int = 0,
    tol: float = TOL,
    fd_safety: float = FD_SAFETY,
) -> RuleReport:
    """Check a ``jax.custom_vjp`` rule — ``fwd(*args) -> (out, residuals)``, ``bwd(residuals, ct) -> one
    cotangent per argument`` — by the witnesses of this module's docstring, at ``cotangents`` random
    cotangents. Cost: one forward per probe and step (``coordinates``, ``directions``), never a leaf's size
    squared. ``batch=0`` skips the vmap witness. Returns a ``RuleReport`` (``ok``, ``print``-able)."""
    rng = np.random.default_rng(seed)
    leaves = _differentiable_leaves(args)
    problems, notes, witnesses = [], [], []
    rows = {leaf.name: LeafRow(leaf.name, leaf.value.shape, str(leaf.dtype)) for leaf in leaves}

    def report():
        unique = sorted(set(problems), key=problems.index)
        return RuleReport("vjp", list(rows.values()), unique, notes, witnesses, tol, fd_safety)

    # 1. At the caller's dtype (outside float64): structure, shapes, dtypes; jax.custom_vjp's own run
    try:
        out_c, res_c = fwd(*args)
        cts_c = [_random_like(out_c, rng) for _ in range(cotangents)]
        split_c = [_split(bwd(res_c, ct), args, "bwd", problems) for ct in cts_c]
    except Exception as e:  # noqa: BLE001 - reported
        problems.append(f"the rule raises at the caller's dtype: {_one_line(e)}")
        return report()
    if any(s is None for s in split_c):
        return report()
    mine_c = [[_leaf_value(s, leaf, problems, check_dtype=True) for s in split_c] for leaf in leaves]
    try:
        jax.vjp(as_custom_vjp(fwd, bwd), *args)[1](cts_c[0])
    except Exception as e:  # noqa: BLE001 - reported
        problems.append(f"jax.custom_vjp refuses the rule: {_one_line(e)}")
    low = [leaf for leaf in leaves if leaf.dtype != np.float64]
    autodiff_c = None
    if low:
        try:
            _, pullback = jax.vjp(lambda *a: fwd(*a)[0], *args)
            autodiff_c = [[np.asarray(_leaf_of(pullback(ct), leaf), np.float64) for ct in cts_c] for leaf in leaves]
        except Exception:  # noqa: BLE001 - then the dtype witness judges without autodiff's own error
            pass
    forward_finite = all(np.isfinite(np.asarray(o, np.float64)).all() for o in _float_leaves(out_c))

    with jax.enable_x64(True):
        args64 = _to(lambda a: jnp.float64, args)
        f = jax.jit(lambda *a: fwd(*a)[0])
        try:
            out, residuals = fwd(*args64)
            cts = [_to(lambda a: jnp.float64, ct) for ct in cts_c]
            split = [_split(bwd(residuals, ct), args64, "bwd", problems) for ct in cts]
        except Exception as e:  # noqa: BLE001 - reported
            problems.append(f"the rule raises in float64: {_one_line(e)}")
            return report()
        if any(s is None for s in split):
            return report()
        mine = [[_leaf_value(s, leaf, problems, check_dtype=False) for s in split] for leaf in leaves]
        ct_leaves = [np.stack(c) for c in zip(*[[np.asarray(x) for x in _float_leaves(ct)] for ct in cts])]
        out_size = sum(np.size(o) for o in _float_leaves(out))

        # 2. Autodiff: reverse mode, or forward mode where reverse mode cannot run
        reverse = None
        try:
            _, pullback = jax.vjp(lambda *a: fwd(*a)[0], *args64)
            reverse = [[np.asarray(_leaf_of(pullback(ct), leaf), np.float64) for ct in cts] for leaf in leaves]
            witnesses.append(f"jax.vjp (reverse mode) in float64 at {cotangents} random cotangents, tolerance {tol:g}")
        except Exception as e:  # noqa: BLE001 - forward mode below
            notes.append(f"jax.vjp cannot differentiate fwd ({_one_line(e)}); forward mode (jax.jvp) judges instead")
            witnesses.append(
                f"jax.jvp (forward mode) in float64: the dot-product test <ct, J·d> = <bwd(ct), d> on every "
                f"finite-difference probe, tolerance {tol:g}"
            )
        witnesses.append(
            f"finite differences in float64: central, steps t and t/2 (t = {FD_STEP:g} × max(|x|, 1e-3·rms x) per "
            f"coordinate), Richardson-extrapolated; every coordinate of leaves of ≤ {coordinates} elements, "
            f"{directions} random directions otherwise; each probe within {fd_safety:g}× its estimated error"
        )
        constants = _forward_constants(lambda *a: fwd(*a)[0], args64)

        for n, leaf in enumerate(leaves):
            row = rows[leaf.name]
            if any(v is None for v in mine[n]) or any(v is None for v in mine_c[n]):
                continue  # a structural problem, reported
            rule = np.stack(mine[n])  # (C, *shape)
            flat = rule.reshape(len(rule), -1)
            exact_name = "jax.vjp" if reverse is not None else "jax.jvp (dot-product test)"
            if not np.isfinite(flat).all():
                k = int(np.argmax(~np.isfinite(flat).all(0)))
                also = (
                    ""
                    if reverse is None
                    else f" (jax.vjp there: {np.stack(reverse[n]).reshape(len(rule), -1)[0, k]:.6g})"
                )
                row.checks.append(
                    Check(
                        exact_name,
                        "disagrees",
                        float("nan"),
                        tol,
                        _index(leaf.value.shape, k),
                        f"bwd is non-finite{also}",
                    )
                )
                continue
            sets = [_probes(leaf, rng, coordinates, directions)]
            exact = []
            if reverse is not None:
                ref = np.stack(reverse[n])
                row.checks.append(_compare(flat, ref.reshape(len(ref), -1), tol, "jax.vjp", _ratio_names(leaf)))
                finite = np.isfinite(ref).all(0)
                if not finite.all():
                    notes.append(
                        f"{leaf.name}: jax.vjp is non-finite at {int((~finite).sum())} coordinate(s) (first "
                        f"{_index(leaf.value.shape, int(np.argmax(~finite.ravel())))}) where bwd is finite; finite "
                        "differences judge those"
                    )
                    if sets[0].kind == "dense":
                        sets.append(_probes(leaf, rng, coordinates, directions, only=~finite))
                exact = [s.directional(np.where(np.isfinite(ref), ref, np.nan)) for s in sets]
            else:
                try:
                    exact = [_jvp_values(f, args64, leaf, s, ct_leaves, out_size, full=False) for s in sets]
                    rule_p = np.concatenate([s.directional(rule) for s in sets])
                    ex = np.concatenate(exact)
                    norms = np.concatenate([s.norms for s in sets])
                    names = sum((s.names for s in sets), [])
                    row.checks.append(
                        _compare(
                            (rule_p / norms[:, None]).T,
                            (ex / norms[:, None]).T,
                            tol,
                            exact_name,
                            lambda r, c, names=names: names[c],
                        )
                    )
                except Exception as e:  # noqa: BLE001 - finite differences alone, said so
                    row.checks.append(Check(exact_name, "skipped", detail=f"jax.jvp cannot run either: {_one_line(e)}"))
                    exact = [np.full((len(s.names), len(cts)), np.nan) for s in sets]
            try:
                fd = [_finite_differences(f, args64, leaf, s, ct_leaves, out_size) for s in sets]
                row.checks.append(
                    _judge_fd(
                        np.concatenate([s.directional(rule) for s in sets]),
                        np.concatenate([r for r, _ in fd]),
                        np.concatenate([b for _, b in fd]),
                        np.concatenate(exact),
                        sum((s.names for s in sets), []),
                        np.concatenate([s.norms for s in sets]),
                        fd_safety,
                        constants,
                    )
                )
            except Exception as e:  # noqa: BLE001 - reported
                row.checks.append(Check(FD, "skipped", detail=f"f cannot be evaluated at the steps: {_one_line(e)}"))

        # 3. The caller's dtype: the same cotangents at the same point, against float64
        if low:
            witnesses.append(
                f"the rule in {', '.join(sorted({str(leaf.dtype) for leaf in low}))} (the caller's dtype) against "
                "itself in float64: non-finite values fail, and errors beyond √ε and 10× autodiff's own"
            )
        for n, leaf in enumerate(leaves):
            if leaf.dtype == np.float64 or any(v is None for v in mine[n] + mine_c[n]):
                continue
            rows[leaf.name].checks.append(
                _judge_dtype(
                    np.stack(mine_c[n]).reshape(cotangents, -1),
                    np.stack(mine[n]).reshape(cotangents, -1),
                    None if autodiff_c is None else np.stack(autodiff_c[n]).reshape(cotangents, -1),
                    None if reverse is None else np.stack(reverse[n]).reshape(cotangents, -1),
                    leaf.dtype,
                    forward_finite,
                    _ratio_names(leaf),
                )
            )

        # 4. vmap: the rule batched through jax.custom_vjp equals the rule per example
        if batch and leaves and not problems:
            witnesses.append(
                f"jax.vmap over {batch} perturbed copies of the arguments, through jax.custom_vjp, tolerance {tol:g}"
            )
            g = as_custom_vjp(fwd, bwd)
            examples = _copies(args64, rng, batch)
            extra = [_to(lambda a: jnp.float64, _random_like(out, rng)) for _ in range(batch)]
            _vmap_witness(lambda a, ct: jax.vjp(g, *a)[1](ct), examples, extra, leaves, rows, tol, problems, _leaf_of)
    return report()


def assert_vjp(fwd, bwd, *args, **options) -> RuleReport:
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


# ---------------------------------------------------------------------------------------------
# check_jvp


def _tangents(args, leaf: _Leaf, value):
    """Tangents for ``args`` that are ``value`` in ``leaf`` and zero elsewhere (float0 for integer leaves)."""

    def zero(a):
        return (
            jnp.zeros(np.shape(a), jnp.result_type(a))
            if _differentiable(a)
            else np.zeros(np.shape(a), jax.dtypes.float0)
        )

    zeros = tuple(jax.tree_util.tree_map(zero, a) for a in args)
    return _with_leaf(zeros, leaf.i, leaf.path, jnp.asarray(value, jnp.result_type(_leaf_of(args, leaf))))


def _tangent_out(result, out, problems, *, check_dtype: bool):
    """The rule's tangent output flattened to float64, or None when its structure, shapes or dtypes are wrong."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        problems.append("jvp must return (primal_out, tangent_out)")
        return None, None
    primal, tangent = result
    if jax.tree_util.tree_structure(tangent) != jax.tree_util.tree_structure(out):
        problems.append(
            f"jvp's tangent output has the structure {jax.tree_util.tree_structure(tangent)}, expected the output's "
            f"{jax.tree_util.tree_structure(out)}"
        )
        return None, None
    for k, (t, o) in enumerate(zip(jax.tree_util.tree_leaves(tangent), jax.tree_util.tree_leaves(out))):
        if not _differentiable(o):
            continue
        if np.shape(t) != np.shape(o):
            problems.append(f"jvp's tangent output {k} has shape {np.shape(t)}, expected {np.shape(o)} (the output's)")
            return None, None
        if check_dtype and np.dtype(jnp.result_type(t)) != np.dtype(jnp.result_type(o)):
            problems.append(
                f"jvp's tangent output {k} is {jnp.result_type(t)} for a {jnp.result_type(o)} output "
                "(jax.custom_jvp refuses it at run time)"
            )
    return np.asarray(_flat(primal), np.float64), np.asarray(_flat(tangent), np.float64)


def check_jvp(
    fwd,
    jvp,
    *args,
    cotangents: int = 2,
    directions: int = 4,
    coordinates: int = 128,
    batch: int = 3,
    seed: int = 0,
    tol: float = TOL,
    fd_safety: float = FD_SAFETY,
) -> RuleReport:
    """Check a ``jax.custom_jvp`` rule — ``fwd(*args) -> out``, ``jvp(primals, tangents) -> (out,
    tangent_out)`` — by the witnesses of this module's docstring: for tangents on each leaf (every
    coordinate of a small one, random directions in a large one), the rule's tangent output against
    ``jax.jvp`` (the dot-product test with ``jax.vjp`` where forward mode cannot run) and against finite
    differences of ⟨ct, f⟩ at ``cotangents`` random cotangents; at the caller's dtype; under ``jax.vmap``."""
    rng = np.random.default_rng(seed)
    leaves = _differentiable_leaves(args)
    problems, notes, witnesses = [], [], []
    rows = {leaf.name: LeafRow(leaf.name, leaf.value.shape, str(leaf.dtype)) for leaf in leaves}

    def report():
        unique = sorted(set(problems), key=problems.index)
        return RuleReport("jvp", list(rows.values()), unique, notes, witnesses, tol, fd_safety)

    def rounded(leaf, values):  # values exactly representable in the caller's dtype, as float64
        return np.asarray(np.asarray(values).astype(leaf.dtype), np.float64)

    # 1. At the caller's dtype: structure, shapes, dtypes; jax.custom_jvp's own run; one dense tangent per leaf
    dtype_probe = {
        leaf.name: rounded(leaf, rng.standard_normal(leaf.value.shape) * _scale(leaf.value)) for leaf in leaves
    }
    at_caller = {}
    try:
        out_c = fwd(*args)
        for leaf in leaves:
            tangents = _tangents(args, leaf, dtype_probe[leaf.name].astype(leaf.dtype))
            _, tan = _tangent_out(jvp(args, tangents), out_c, problems, check_dtype=True)
            try:
                ref = np.asarray(_flat(jax.jvp(fwd, args, tangents)[1]), np.float64)
            except Exception:  # noqa: BLE001 - the dtype witness then judges without autodiff's own error
                ref = None
            at_caller[leaf.name] = (tan, ref)
    except Exception as e:  # noqa: BLE001 - reported
        problems.append(f"the rule raises at the caller's dtype: {_one_line(e)}")
        return report()
    if leaves:
        try:
            jax.jvp(
                as_custom_jvp(fwd, jvp),
                args,
                _tangents(args, leaves[0], dtype_probe[leaves[0].name].astype(leaves[0].dtype)),
            )
        except Exception as e:  # noqa: BLE001 - reported
            problems.append(f"jax.custom_jvp refuses the rule: {_one_line(e)}")
    forward_finite = all(np.isfinite(np.asarray(o, np.float64)).all() for o in _float_leaves(out_c))
    low = [leaf for leaf in leaves if leaf.dtype != np.float64]

    with jax.enable_x64(True):
        args64 = _to(lambda a: jnp.float64, args)
        f = jax.jit(fwd)
        try:
            out = fwd(*args64)
        except Exception as e:  # noqa: BLE001 - reported
            problems.append(f"fwd raises in float64: {_one_line(e)}")
            return report()
        cts = [_to(lambda a: jnp.float64, _random_like(out, rng)) for _ in range(cotangents)]
        ct_leaves = [np.stack(c) for c in zip(*[[np.asarray(x) for x in _float_leaves(ct)] for ct in cts])]
        ct_flat = (
            np.concatenate([c.reshape(cotangents, -1) for c in ct_leaves], axis=1)
            if ct_leaves
            else np.zeros((cotangents, 0))
        )
        out_size = ct_flat.shape[1]
        out_flat = np.asarray(_flat(out), np.float64)

        reverse = None
        try:
            jax.jvp(f, args64, _tangents(args64, leaves[0], np.zeros(leaves[0].value.shape))) if leaves else None
            witnesses.append(f"jax.jvp (forward mode) in float64 on every probe, tolerance {tol:g}")
        except Exception as e:  # noqa: BLE001 - reverse mode below
            try:
                _, pullback = jax.vjp(fwd, *args64)
                reverse = [[np.asarray(_leaf_of(pullback(ct), leaf), np.float64) for ct in cts] for leaf in leaves]
            except Exception as e2:  # noqa: BLE001 - finite differences alone
                notes.append(f"neither jax.jvp ({_one_line(e)}) nor jax.vjp ({_one_line(e2)}) can differentiate fwd")
                reverse = False
            if reverse is not False:
                notes.append(
                    f"jax.jvp cannot differentiate fwd ({_one_line(e)}); the dot-product test with jax.vjp judges"
                )
                witnesses.append(
                    "jax.vjp (reverse mode) in float64: the dot-product test <ct, jvp(d)> = <J^T ct, d>, "
                    f"tolerance {tol:g}"
                )
        witnesses.append(
            f"finite differences in float64 of <ct, f> at {cotangents} random cotangents: central, steps t and t/2 "
            f"(t = {FD_STEP:g} × max(|x|, 1e-3·rms x)), Richardson-extrapolated; every coordinate of leaves of ≤ "
            f"{coordinates} elements, {directions} random directions otherwise; within {fd_safety:g}× the "
            "estimated error"
        )
        constants = _forward_constants(fwd, args64)

        for n, leaf in enumerate(leaves):
            row = rows[leaf.name]
            probes = _probes(leaf, rng, coordinates, directions)
            dense = probes.dense(leaf.value.shape)
            outs = []
            try:
                for d in [*dense, dtype_probe[leaf.name]]:
                    primal, tan = _tangent_out(
                        jvp(args64, _tangents(args64, leaf, d)), out, problems, check_dtype=False
                    )
                    if tan is None:
                        break
                    outs.append(tan)
            except Exception as e:  # noqa: BLE001 - reported
                problems.append(f"jvp raises in float64: {_one_line(e)}")
                break
            if len(outs) != len(dense) + 1:
                continue
            if n == 0 and relative_error(primal, out_flat) > tol:
                problems.append(
                    f"jvp's primal output differs from fwd(*args) by {relative_error(primal, out_flat):.1e}"
                )
            rule_t, dtype_t = np.stack(outs[:-1]), outs[-1][None]  # (P, Q), (1, Q)
            where = lambda r, c, names=probes.names: f"tangent at {names[r]}, output coordinate {c}"  # noqa: E731
            exact_name = "jax.jvp" if reverse is None else "jax.vjp (dot-product test)"
            if not np.isfinite(rule_t).all():
                r, c = np.unravel_index(int(np.argmax(~np.isfinite(rule_t))), rule_t.shape)
                row.checks.append(Check(exact_name, "disagrees", float("nan"), tol, where(r, c), "jvp is non-finite"))
                continue
            rule_p = rule_t @ ct_flat.T  # (P, C)
            exact_p = np.full_like(rule_p, np.nan)
            if reverse is None:
                ref_t = _jvp_values(f, args64, leaf, probes, ct_leaves, out_size, full=True)
                row.checks.append(_compare(rule_t, ref_t, tol, "jax.jvp", where, "jvp"))
                if not np.isfinite(ref_t).all():
                    notes.append(
                        f"{leaf.name}: jax.jvp is non-finite where the rule is finite; finite differences judge there"
                    )
                exact_p = np.where(np.isfinite(ref_t).all(1, keepdims=True), np.nan_to_num(ref_t) @ ct_flat.T, np.nan)
            elif reverse is not False:
                exact_p = probes.directional(np.stack(reverse[n]))
                norms = probes.norms[:, None]
                row.checks.append(
                    _compare(
                        (rule_p / norms).T,
                        (exact_p / norms).T,
                        tol,
                        exact_name,
                        lambda r, c, p=probes: p.names[c],
                        "jvp",
                    )
                )
            try:
                fd, bound = _finite_differences(f, args64, leaf, probes, ct_leaves, out_size)
                row.checks.append(
                    _judge_fd(rule_p, fd, bound, exact_p, probes.names, probes.norms, fd_safety, constants, "jvp")
                )
            except Exception as e:  # noqa: BLE001 - reported
                row.checks.append(Check(FD, "skipped", detail=f"f cannot be evaluated at the steps: {_one_line(e)}"))
            tan_c, ref_c = at_caller[leaf.name]
            if leaf.dtype != np.float64 and tan_c is not None:
                try:
                    dtype_ref = np.asarray(
                        _flat(jax.jvp(f, args64, _tangents(args64, leaf, dtype_probe[leaf.name]))[1])
                    )[None]
                except Exception:  # noqa: BLE001 - judged without autodiff's own error
                    dtype_ref = None
                row.checks.append(
                    _judge_dtype(
                        tan_c[None],
                        dtype_t,
                        None if ref_c is None else ref_c[None],
                        dtype_ref,
                        leaf.dtype,
                        forward_finite,
                        lambda r, c: f"output coordinate {c}",
                        "jvp",
                    )
                )
        if low:
            witnesses.append(
                f"the rule in {', '.join(sorted({str(leaf.dtype) for leaf in low}))} (the caller's dtype) against "
                "itself in float64 on one dense tangent per leaf"
            )

        # vmap: the rule batched through jax.custom_jvp equals the rule per example, a tangent per leaf
        if batch and leaves and not problems:
            witnesses.append(
                f"jax.vmap over {batch} perturbed copies of the arguments, through jax.custom_jvp, tolerance {tol:g}"
            )
            g = as_custom_jvp(fwd, jvp)
            examples = _copies(args64, rng, batch)
            for leaf in leaves:
                extra = [rng.standard_normal(leaf.value.shape) * _scale(leaf.value) for _ in range(batch)]

                def run(a, v, leaf=leaf):
                    return _flat(jax.jvp(g, a, _tangents(a, leaf, v))[1])

                _vmap_witness(run, examples, extra, [leaf], rows, tol, problems, lambda result, _leaf: result)
    return report()


def assert_jvp(fwd, jvp, *args, **options) -> RuleReport:
    """``check_jvp``, raising AssertionError with the report's table when it fails (for pytest)."""
    report = check_jvp(fwd, jvp, *args, **options)
    if not report.ok:
        raise AssertionError("hand-written JVP disagrees:\n" + str(report))
    return report


def as_custom_jvp(fwd, jvp):
    """``fwd`` as a ``jax.custom_jvp`` whose ``jax.jvp`` (and, by transposition, ``jax.grad``) runs ``jvp``."""

    @jax.custom_jvp
    def f(*args):
        return fwd(*args)

    f.defjvp(jvp)
    return f
