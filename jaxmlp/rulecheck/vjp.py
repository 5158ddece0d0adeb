"""``check_vjp``: a ``jax.custom_vjp`` rule judged by every witness (the package's docstring states them)."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.rulecheck.judge import compare, coordinate_names, judge_dtype, judge_fd, reconcile, vmap_witness
from jaxmlp.rulecheck.probes import (
    Leaf,
    all_finite,
    cast_floats,
    checkable_leaves,
    copies,
    describe_finite_differences,
    finite_differences,
    float_leaves,
    index_str,
    inspect_forward,
    jvp_values,
    leaf_of,
    make_probes,
    one_line,
    random_like,
    stack_cotangents,
)
from jaxmlp.rulecheck.report import FD, FD_SAFETY, TOL, Check, RuleReport, begin, reported, resolution


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
    nones = [p for p, v in jax.tree_util.tree_flatten_with_path(arg_i, is_leaf=lambda x: x is None)[0] if v is None]
    extra = [p for p, _ in got if p not in nones and not any(q[: len(p)] == p for q, _ in arg_leaves)]
    if len(out) != len(arg_leaves) or extra:
        problems.append(
            f"{name}: the cotangent's structure {jax.tree_util.tree_structure(result_i)} does not match the "
            f"argument's {jax.tree_util.tree_structure(arg_i)} (None may stand for any part of it)"
        )
    return out


def _split(result, args, label, problems) -> list | None:
    """A rule's per-argument result as one {path: value} per argument, or None when it is malformed."""
    if not isinstance(result, (tuple, list)) or len(result) != len(args):
        what = f"{len(result)} entries" if isinstance(result, (tuple, list)) else f"a single {type(result).__name__}"
        problems.append(f"{label} returned {what}; it must return a tuple with one entry per argument ({len(args)})")
        return None
    return [_cotangent_tree(r, a, f"arg{i}", problems) for i, (r, a) in enumerate(zip(result, args))]


def _leaf_value(split, leaf: Leaf, problems, *, check_dtype: bool) -> np.ndarray | None:
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


@dataclass
class _Run:
    """One run of the rule at one dtype: its output, the cotangents it was given, and per leaf the rule's
    cotangents (C, *shape) as float64 (None where the result was malformed) and autodiff's (or None)."""

    out: object
    residuals: object
    cts: list
    mine: list
    autodiff: list | None


@reported("vjp")
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
    cotangent per argument`` — by the witnesses of the package's docstring, at ``cotangents`` random
    cotangents. Cost: one forward per probe and step (``coordinates``, ``directions``), never a leaf's size
    squared. ``batch=0`` skips the vmap witness. Returns a ``RuleReport`` (``ok``, ``print``-able)."""
    leaves, refused = checkable_leaves(args)
    found = begin("vjp", leaves, cotangents)
    found.problems += refused
    rng = np.random.default_rng(seed)
    if found.problems:
        return found.report(tol, fd_safety)
    low = sorted({str(leaf.dtype) for leaf in leaves if leaf.dtype != np.float64})
    caller = _run(fwd, bwd, args, leaves, None, found, "at the caller's dtype", rng=rng, cotangents=cotangents)
    if caller is None:
        return found.report(tol, fd_safety)
    try:
        jax.vjp(as_custom_vjp(fwd, bwd), *args)[1](caller.cts[0])
    except Exception as e:  # noqa: BLE001 - reported
        found.problems.append(f"jax.custom_vjp refuses the rule: {one_line(e)}")
    forward_finite = all_finite(caller.out)

    with jax.enable_x64(True):
        args64 = cast_floats(lambda a: jnp.float64, args)
        cts64 = [cast_floats(lambda a: jnp.float64, ct) for ct in caller.cts]  # the same values, exactly
        run64 = _run(fwd, bwd, args64, leaves, cts64, found, "in float64")
        if run64 is None:
            return found.report(tol, fd_safety)
        for n, leaf in enumerate(leaves):
            if run64.mine[n] is None and caller.mine[n] is not None:
                found.problems.append(
                    f"{leaf.name}: bwd's cotangent is malformed in float64 (not at the caller's dtype)"
                )
        forward = inspect_forward((lambda *a: fwd(*a)[0], args64), (bwd, (run64.residuals, cts64[0])))
        exact_tol, floor = resolution(forward, tol, found, "fwd or bwd")
        found.witnesses.append(
            f"jax.vjp (reverse mode) in float64 at {cotangents} random cotangents, tolerance {exact_tol:g}"
            if run64.autodiff is not None
            else f"jax.jvp (forward mode) in float64: the dot-product test <ct, J·d> = <bwd(ct), d> on every "
            f"finite-difference probe, tolerance {exact_tol:g}"
        )
        found.witnesses.append(describe_finite_differences(coordinates, directions, fd_safety))
        f = jax.jit(lambda *a: fwd(*a)[0])
        ct_leaves = stack_cotangents(cts64)
        evaluation = _Evaluation(f, args64, ct_leaves, sum(np.size(o) for o in float_leaves(run64.out)))
        for n, leaf in enumerate(leaves):
            if run64.mine[n] is not None and caller.mine[n] is not None:
                _judge_leaf(
                    found.rows[leaf.name],
                    leaf,
                    run64,
                    n,
                    evaluation,
                    forward,
                    rng,
                    found.notes,
                    coordinates=coordinates,
                    directions=directions,
                    tol=exact_tol,
                    fd_safety=fd_safety,
                    floor=floor,
                )

        if low:
            found.witnesses.append(
                f"the rule in {', '.join(low)} (the caller's dtype) against itself in float64: non-finite values "
                "fail, and errors beyond √ε and 10× autodiff's own"
            )
        for n, leaf in enumerate(leaves):
            if leaf.dtype != np.float64 and run64.mine[n] is not None and caller.mine[n] is not None:
                flat = [None if r is None else r[n].reshape(cotangents, -1) for r in (caller.autodiff, run64.autodiff)]
                found.rows[leaf.name].checks.append(
                    judge_dtype(
                        caller.mine[n].reshape(cotangents, -1),
                        run64.mine[n].reshape(cotangents, -1),
                        *flat,
                        leaf.dtype,
                        forward_finite,
                        coordinate_names(leaf),
                    )
                )

        if batch and leaves and not found.problems:  # the rule batched through jax.custom_vjp, against per example
            found.witnesses.append(
                f"jax.vmap over {batch} perturbed copies of the arguments, through jax.custom_vjp, tolerance {tol:g}"
            )
            g = as_custom_vjp(fwd, bwd)
            examples = copies(args64, rng, batch)
            extra = [cast_floats(lambda a: jnp.float64, random_like(run64.out, rng)) for _ in range(batch)]
            vmap_witness(
                lambda a, ct: jax.vjp(g, *a)[1](ct),
                examples,
                extra,
                leaves,
                found.rows,
                exact_tol,
                found.problems,
                leaf_of,
            )
    return found.report(tol, fd_safety)


def _run(fwd, bwd, args, leaves, cts, found, where, *, rng=None, cotangents=0) -> _Run | None:
    """The rule and autodiff at ``args``' dtype, at ``cts`` (or ``cotangents`` new random ones rounded to the
    output's dtype); None when the rule raises or its result is malformed (said in ``found.problems``)."""
    at_caller = cts is None
    try:
        out, residuals = fwd(*args)
        cts = [random_like(out, rng) for _ in range(cotangents)] if at_caller else cts
        split = [_split(bwd(residuals, ct), args, "bwd", found.problems) for ct in cts]
    except Exception as e:  # noqa: BLE001 - reported
        found.problems.append(f"the rule raises {where}: {one_line(e)}")
        return None
    if any(s is None for s in split):
        return None
    mine = []
    for leaf in leaves:
        said = found.problems if at_caller else []  # a fault of shape is said once, at the caller's dtype
        values = [_leaf_value(s, leaf, said, check_dtype=at_caller) for s in split]
        mine.append(None if any(v is None for v in values) else np.stack(values))
    autodiff = None
    if not at_caller or any(leaf.dtype != np.float64 for leaf in leaves):
        try:
            _, pullback = jax.vjp(lambda *a: fwd(*a)[0], *args)
            pulled = [pullback(ct) for ct in cts]
            autodiff = [np.stack([np.asarray(leaf_of(p, leaf), np.float64) for p in pulled]) for leaf in leaves]
        except Exception as e:  # noqa: BLE001 - forward mode judges instead (in float64), said so
            if not at_caller:
                found.notes.append(
                    f"jax.vjp cannot differentiate fwd ({one_line(e)}); forward mode (jax.jvp) judges instead"
                )
    return _Run(out, residuals, cts, mine, autodiff)


@dataclass
class _Evaluation:
    """What the probes evaluate: f = fwd(*args)[0] (jitted) at float64 ``args``, contracted with ``ct_leaves``."""

    f: object
    args: tuple
    ct_leaves: list
    out_size: int


def _judge_leaf(row, leaf, run64, n, ev, forward, rng, notes, *, coordinates, directions, tol, fd_safety, floor):
    """The exact witness (jax.vjp, else forward mode's dot-product test) and finite differences on one leaf."""
    rule = run64.mine[n]  # (C, *shape)
    flat = rule.reshape(len(rule), -1)
    reverse = None if run64.autodiff is None else run64.autodiff[n]
    exact_name = "jax.vjp" if reverse is not None else "jax.jvp (dot-product test)"
    if not np.isfinite(flat).all():
        k = int(np.argmax(~np.isfinite(flat).all(0)))
        also = "" if reverse is None else f" (jax.vjp there: {reverse.reshape(len(rule), -1)[0, k]:.6g})"
        where = index_str(leaf.value.shape, k)
        row.checks.append(Check(exact_name, "disagrees", float("nan"), tol, where, f"bwd is non-finite{also}"))
        return
    sets = [make_probes(leaf, rng, coordinates, directions)]
    if reverse is not None:
        exact = compare(flat, reverse.reshape(len(reverse), -1), tol, "jax.vjp", coordinate_names(leaf))
        row.checks.append(exact)
        finite = np.isfinite(reverse).all(0)
        if not finite.all():
            first = index_str(leaf.value.shape, int(np.argmax(~finite.ravel())))
            notes.append(
                f"{leaf.name}: jax.vjp is non-finite at {int((~finite).sum())} coordinate(s) (first {first}) where "
                "bwd is finite; finite differences judge those"
            )
            if sets[0].kind == "dense":  # the dense directions mix them in: probe them one by one as well
                sets.append(make_probes(leaf, rng, coordinates, directions, only=~finite))
        exact_p = [s.directional(np.where(np.isfinite(reverse), reverse, np.nan)) for s in sets]
    else:
        try:
            exact_p = [jvp_values(ev.f, ev.args, leaf, s, ev.ct_leaves, ev.out_size, full=False) for s in sets]
            norms = np.concatenate([s.norms for s in sets])[:, None]
            names = sum((s.names for s in sets), [])
            rule_p = np.concatenate([s.directional(rule) for s in sets]) / norms
            exact = compare(rule_p.T, (np.concatenate(exact_p) / norms).T, tol, exact_name, lambda r, c: names[c])
            row.checks.append(exact)
        except Exception as e:  # noqa: BLE001 - finite differences alone, said so
            exact = Check(exact_name, "skipped", detail=f"jax.jvp cannot run either: {one_line(e)}")
            row.checks.append(exact)
            exact_p = [np.full((len(s.names), len(rule)), np.nan) for s in sets]
    try:
        fd = [finite_differences(ev.f, ev.args, leaf, s, ev.ct_leaves, ev.out_size) for s in sets]
    except Exception as e:  # noqa: BLE001 - reported
        row.checks.append(Check(FD, "skipped", detail=f"f cannot be evaluated at the steps: {one_line(e)}"))
        return
    fd_check, fd_against_exact = judge_fd(
        np.concatenate([s.directional(rule) for s in sets]),
        np.concatenate([r for r, _ in fd]),
        np.concatenate([b for _, b in fd]),
        np.concatenate(exact_p),
        sum((s.names for s in sets), []),
        np.concatenate([s.norms for s in sets]),
        fd_safety,
        forward,
        floor=floor,
    )
    row.checks.append(fd_check)
    reconcile(exact, fd_check, fd_against_exact, forward)


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
