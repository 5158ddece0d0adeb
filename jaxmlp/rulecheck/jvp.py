"""``check_jvp``: a ``jax.custom_jvp`` rule judged by the same witnesses as ``check_vjp``."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.rulecheck.judge import compare, judge_dtype, judge_fd, reconcile, vmap_witness
from jaxmlp.rulecheck.probes import (
    Leaf,
    all_finite,
    cast_floats,
    checkable_leaves,
    copies,
    describe_finite_differences,
    differentiable,
    finite_differences,
    flat,
    inspect_forward,
    jvp_values,
    leaf_of,
    make_probes,
    one_line,
    random_like,
    stack_cotangents,
    step_scale,
    with_leaf,
)
from jaxmlp.rulecheck.report import (
    FD,
    FD_SAFETY,
    TOL,
    Check,
    RuleReport,
    begin,
    relative_error,
    reported,
    resolution,
)


def _tangents(args, leaf: Leaf, value):
    """Tangents for ``args`` that are ``value`` in ``leaf`` and zero elsewhere (float0 for integer leaves)."""

    def zero(a):
        return (
            jnp.zeros(np.shape(a), jnp.result_type(a))
            if differentiable(a)
            else np.zeros(np.shape(a), jax.dtypes.float0)
        )

    zeros = tuple(jax.tree_util.tree_map(zero, a) for a in args)
    return with_leaf(zeros, leaf.i, leaf.path, jnp.asarray(value, jnp.result_type(leaf_of(args, leaf))))


def _tangent_out(result, out, problems, *, check_dtype: bool):
    """The rule's tangent output flattened to float64, or None when its structure, shapes or dtypes are wrong."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        problems.append("jvp must return (primal_out, tangent_out)")
        return None, None
    primal, tangent = result
    shapes = [np.shape(o) for o in jax.tree_util.tree_leaves(out)]
    if (
        jax.tree_util.tree_structure(primal) != jax.tree_util.tree_structure(out)
        or [np.shape(p) for p in jax.tree_util.tree_leaves(primal)] != shapes
    ):
        problems.append("jvp's primal output has another structure or shape than fwd(*args)")
        return None, None
    if jax.tree_util.tree_structure(tangent) != jax.tree_util.tree_structure(out):
        problems.append(
            f"jvp's tangent output has the structure {jax.tree_util.tree_structure(tangent)}, expected the output's "
            f"{jax.tree_util.tree_structure(out)}"
        )
        return None, None
    for k, (t, o) in enumerate(zip(jax.tree_util.tree_leaves(tangent), jax.tree_util.tree_leaves(out))):
        if not differentiable(o):
            continue
        if np.shape(t) != np.shape(o):
            problems.append(f"jvp's tangent output {k} has shape {np.shape(t)}, expected {np.shape(o)} (the output's)")
            return None, None
        if not differentiable(t):
            problems.append(f"jvp's tangent output {k} is {jnp.result_type(t)} for a floating output")
            return None, None
        if check_dtype and np.dtype(jnp.result_type(t)) != np.dtype(jnp.result_type(o)):
            problems.append(
                f"jvp's tangent output {k} is {jnp.result_type(t)} for a {jnp.result_type(o)} output "
                "(jax.custom_jvp refuses it at run time)"
            )
    return np.asarray(flat(primal), np.float64), np.asarray(flat(tangent), np.float64)


@reported("jvp")
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
    tangent_out)`` — by the witnesses of the package's docstring: for tangents on each leaf (every
    coordinate of a small one, random directions in a large one), the rule's tangent output against
    ``jax.jvp`` (the dot-product test with ``jax.vjp`` where forward mode cannot run) and against finite
    differences of ⟨ct, f⟩ at ``cotangents`` random cotangents; at the caller's dtype; under ``jax.vmap``."""
    leaves, refused = checkable_leaves(args)
    found = begin("jvp", leaves, cotangents)
    found.problems += refused
    rng = np.random.default_rng(seed)
    if found.problems:
        return found.report(tol, fd_safety)
    # one dense tangent per leaf, exactly representable at the caller's dtype, for the dtype witness
    dtype_probe = {
        leaf.name: np.asarray((rng.standard_normal(leaf.value.shape) * step_scale(leaf.value)).astype(leaf.dtype))
        for leaf in leaves
    }
    at_caller = _at_callers_dtype(fwd, jvp, args, leaves, dtype_probe, found)
    if at_caller is None:
        return found.report(tol, fd_safety)
    out_c, tangents_c = at_caller
    forward_finite = all_finite(out_c)

    with jax.enable_x64(True):
        args64 = cast_floats(lambda a: jnp.float64, args)
        try:
            out = fwd(*args64)
        except Exception as e:  # noqa: BLE001 - reported
            found.problems.append(f"fwd raises in float64: {one_line(e)}")
            return found.report(tol, fd_safety)
        cts = [cast_floats(lambda a: jnp.float64, random_like(out, rng)) for _ in range(cotangents)]
        ct_leaves = stack_cotangents(cts)
        f = jax.jit(fwd)
        reverse = _autodiff_mode(fwd, f, args64, leaves, cts, found, tol)
        found.witnesses.append(describe_finite_differences(coordinates, directions, fd_safety))
        calls = [(fwd, args64)]
        if leaves:  # the rule's own precision, on a tangent of the first leaf
            calls.append((jvp, (args64, _tangents(args64, leaves[0], np.zeros(leaves[0].value.shape)))))
        forward = inspect_forward(*calls)
        exact_tol, floor = resolution(forward, tol, found, "f or its jvp")
        ev = _Evaluation(f, args64, out, ct_leaves, forward, exact_tol, floor)
        for n, leaf in enumerate(leaves):
            probes = make_probes(leaf, rng, coordinates, directions)
            tangents = _rule_tangents(
                jvp, ev, leaf, [*probes.dense(leaf.value.shape), dtype_probe[leaf.name]], found, n
            )
            if tangents is None:
                continue
            row = found.rows[leaf.name]
            _judge_leaf(row, leaf, probes, tangents[:-1], None if reverse is None else reverse[n], ev, fd_safety)
            tan_c, ref_c = tangents_c[leaf.name]
            if leaf.dtype != np.float64 and tan_c is not None:
                try:
                    ref64 = np.asarray(flat(jax.jvp(f, args64, _tangents(args64, leaf, dtype_probe[leaf.name]))[1]))
                except Exception:  # noqa: BLE001 - judged without autodiff's own error
                    ref64 = None
                row.checks.append(
                    judge_dtype(
                        tan_c[None],
                        tangents[-1:],
                        None if ref_c is None or ref64 is None else ref_c[None],
                        None if ref64 is None else ref64[None],
                        leaf.dtype,
                        forward_finite,
                        lambda r, c: f"output coordinate {c}",
                        "jvp",
                    )
                )
        if len(leaves) > 1 and not found.problems and reverse is not False:
            _joint_tangent(jvp, ev, leaves, reverse, rng, found)
        low = sorted({str(leaf.dtype) for leaf in leaves if leaf.dtype != np.float64})
        if low:
            found.witnesses.append(
                f"the rule in {', '.join(low)} (the caller's dtype) against itself in float64 on one dense "
                "tangent per leaf"
            )
        if batch and leaves and not found.problems:
            _vmap_rows(fwd, jvp, args64, leaves, rng, batch, found, exact_tol)
    return found.report(tol, fd_safety)


@dataclass
class _Evaluation:
    """What the probes evaluate: f = fwd (jitted) at float64 ``args``, its output, cotangents stacked per
    floating output (C, …), and what in the forward makes finite differences no witness (if anything)."""

    f: object
    args: tuple
    out: object
    ct_leaves: list
    forward: object  # probes.Forward
    tol: float  # the exact witnesses' tolerance (looser where the rule computes in less than float64)
    floor: float  # finite differences' relative allowance, likewise

    @property
    def ct_flat(self) -> np.ndarray:  # (C, Q): every cotangent flattened over the floating outputs
        if not self.ct_leaves:
            return np.zeros((0, 0))
        return np.concatenate([c.reshape(len(c), -1) for c in self.ct_leaves], axis=1)


def _at_callers_dtype(fwd, jvp, args, leaves, dtype_probe, found):
    """The rule and autodiff at the caller's dtype on each leaf's dense tangent: (out, {leaf name: (the
    rule's tangent output, autodiff's) flattened}), None when the rule raises; and one run through
    jax.custom_jvp itself."""
    tangents_c = {}
    try:
        out_c = fwd(*args)
        for leaf in leaves:
            tangents = _tangents(args, leaf, dtype_probe[leaf.name])
            _, tan = _tangent_out(jvp(args, tangents), out_c, found.problems, check_dtype=True)
            try:
                ref = np.asarray(flat(jax.jvp(fwd, args, tangents)[1]), np.float64)
            except Exception:  # noqa: BLE001 - the dtype witness then judges without autodiff's own error
                ref = None
            tangents_c[leaf.name] = (tan, ref)
    except Exception as e:  # noqa: BLE001 - reported
        found.problems.append(f"the rule raises at the caller's dtype: {one_line(e)}")
        return None
    if leaves:
        try:
            jax.jvp(as_custom_jvp(fwd, jvp), args, _tangents(args, leaves[0], dtype_probe[leaves[0].name]))
        except Exception as e:  # noqa: BLE001 - reported
            found.problems.append(f"jax.custom_jvp refuses the rule: {one_line(e)}")
    return out_c, tangents_c


def _autodiff_mode(fwd, f, args64, leaves, cts, found, tol):
    """None when jax.jvp can differentiate fwd (it judges every probe); else, per leaf, jax.vjp's cotangents
    (C, *shape) for the dot-product test; False when neither mode can."""
    try:
        if leaves:
            jax.jvp(f, args64, _tangents(args64, leaves[0], np.zeros(leaves[0].value.shape)))
        found.witnesses.append(f"jax.jvp (forward mode) in float64 on every probe, tolerance {tol:g}")
        return None
    except Exception as e:  # noqa: BLE001 - reverse mode below
        forward_error = one_line(e)
    try:
        _, pullback = jax.vjp(fwd, *args64)
        pulled = [pullback(ct) for ct in cts]
    except Exception as e:  # noqa: BLE001 - finite differences alone
        found.notes.append(f"neither jax.jvp ({forward_error}) nor jax.vjp ({one_line(e)}) can differentiate fwd")
        return False
    found.notes.append(f"jax.jvp cannot differentiate fwd ({forward_error}); the dot-product test with jax.vjp judges")
    found.witnesses.append(
        f"jax.vjp (reverse mode) in float64: the dot-product test <ct, jvp(d)> = <J^T ct, d>, tolerance {tol:g}"
    )
    return [np.stack([np.asarray(leaf_of(p, leaf), np.float64) for p in pulled]) for leaf in leaves]


def _rule_tangents(jvp, ev, leaf, directions, found, n):
    """The rule's tangent outputs in float64 for tangents ``directions`` on ``leaf`` (P, Q), None when it
    raises or its result is malformed; the first leaf also checks the rule's primal output."""
    outs = []
    try:
        for d in directions:
            primal, tan = _tangent_out(
                jvp(ev.args, _tangents(ev.args, leaf, d)), ev.out, found.problems, check_dtype=False
            )
            if tan is None:
                return None
            outs.append(tan)
    except Exception as e:  # noqa: BLE001 - reported
        found.problems.append(f"jvp raises in float64: {one_line(e)}")
        return None
    out_flat = np.asarray(flat(ev.out), np.float64)
    if n == 0 and relative_error(primal, out_flat) > ev.tol:
        found.problems.append(f"jvp's primal output differs from fwd(*args) by {relative_error(primal, out_flat):.1e}")
    return np.stack(outs)


def _judge_leaf(row, leaf, probes, rule_t, reverse, ev, fd_safety):
    """The exact witness (jax.jvp on every probe, else the dot-product test with jax.vjp's ``reverse``) and
    finite differences, for the rule's tangent outputs ``rule_t`` (P, Q) on the probes of one leaf."""
    where = lambda r, c: f"tangent at {probes.names[r]}, output coordinate {c}"  # noqa: E731
    exact_name = "jax.jvp" if reverse is None else "jax.vjp (dot-product test)"
    tol = ev.tol
    exact = Check(exact_name, "skipped", detail="neither jax.jvp nor jax.vjp can differentiate f")
    if not np.isfinite(rule_t).all():
        r, c = np.unravel_index(int(np.argmax(~np.isfinite(rule_t))), rule_t.shape)
        row.checks.append(Check(exact_name, "disagrees", float("nan"), tol, where(r, c), "jvp is non-finite"))
        return
    ct_flat = ev.ct_flat
    rule_p = rule_t @ ct_flat.T  # (P, C)
    exact_p = np.full_like(rule_p, np.nan)
    out_size = ct_flat.shape[1]
    if reverse is None:
        ref_t = jvp_values(ev.f, ev.args, leaf, probes, ev.ct_leaves, out_size, full=True)
        exact = compare(rule_t, ref_t, tol, "jax.jvp", where, "jvp")
        row.checks.append(exact)
        finite = np.isfinite(ref_t).all(1, keepdims=True)
        if not finite.all():
            row.checks[-1].detail += " (jax.jvp is non-finite on some probes: finite differences judge those)"
        exact_p = np.where(finite, np.nan_to_num(ref_t) @ ct_flat.T, np.nan)
    elif reverse is not False:
        exact_p = probes.directional(reverse)
        norms = probes.norms[:, None]
        names = probes.names
        exact = compare((rule_p / norms).T, (exact_p / norms).T, tol, exact_name, lambda r, c: names[c], "jvp")
        row.checks.append(exact)
    if exact.status == "skipped":
        row.checks.append(exact)
    try:
        fd, bound = finite_differences(ev.f, ev.args, leaf, probes, ev.ct_leaves, out_size)
    except Exception as e:  # noqa: BLE001 - reported
        row.checks.append(Check(FD, "skipped", detail=f"f cannot be evaluated at the steps: {one_line(e)}"))
        return
    fd_check, fd_against_exact = judge_fd(
        rule_p, fd, bound, exact_p, probes.names, probes.norms, fd_safety, ev.forward, "jvp", floor=ev.floor
    )
    row.checks.append(fd_check)
    reconcile(exact, fd_check, fd_against_exact, ev.forward)


def _joint_tangent(jvp, ev, leaves, reverse, rng, found):
    """Every leaf's tangent at once: a rule that is right one argument at a time but not linear in its
    tangents together (a product of perturbed arguments, say) is a problem of the rule as a whole."""
    tangents = _tangents(ev.args, leaves[0], np.zeros(leaves[0].value.shape))
    for leaf in leaves:
        value = rng.standard_normal(leaf.value.shape) * step_scale(leaf.value)
        tangents = with_leaf(tangents, leaf.i, leaf.path, jnp.asarray(value))
    _, rule = _tangent_out(jvp(ev.args, tangents), ev.out, found.problems, check_dtype=False)
    if rule is None:
        return
    if reverse is None:
        mine, ref = rule, np.asarray(flat(jax.jvp(ev.f, ev.args, tangents)[1]), np.float64)
    else:  # the dot-product test: <ct, jvp(t)> against the sum over leaves of <J^T ct, t>
        mine = ev.ct_flat @ rule
        ref = sum(
            np.asarray(r.reshape(len(r), -1)) @ np.ravel(leaf_of(tangents, leaf)) for r, leaf in zip(reverse, leaves)
        )
    err = relative_error(mine, ref)
    if not err <= ev.tol:
        found.problems.append(
            f"jvp is not linear in its tangents: with every argument's tangent at once it differs from autodiff by "
            f"{err:.1e} (tolerance {ev.tol:.0e}), though each argument alone may agree"
        )


def _vmap_rows(fwd, jvp, args64, leaves, rng, batch, found, tol):
    """The rule batched through jax.custom_jvp against the rule per example, a random tangent per leaf."""
    found.witnesses.append(
        f"jax.vmap over {batch} perturbed copies of the arguments, through jax.custom_jvp, tolerance {tol:g}"
    )
    g = as_custom_jvp(fwd, jvp)
    examples = copies(args64, rng, batch)
    for leaf in leaves:
        extra = [rng.standard_normal(leaf.value.shape) * step_scale(leaf.value) for _ in range(batch)]

        def run(a, v, leaf=leaf):
            return flat(jax.jvp(g, a, _tangents(a, leaf, v))[1])

        vmap_witness(
            run, examples, extra, [leaf], found.rows, tol, found.problems, lambda result, _leaf: result, output=True
        )


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
