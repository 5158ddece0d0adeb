"""Turning a witness's values into a ``Check`` (internal to ``jaxmlp.rulecheck``): exact comparisons, finite
differences against their estimated error, the caller's dtype against float64, ``vmap`` against the rule
per example."""

from __future__ import annotations

import jax
import numpy as np

from jaxmlp.rulecheck.probes import index_str, one_line, stack
from jaxmlp.rulecheck.report import FD, Check, relative_error


def compare(mine, ref, tol, witness, where_of, label="bwd", ref_label=None) -> Check:
    """An exact witness: 2-D arrays (rows, cols), judged on the coordinates where ``ref`` is finite."""
    finite = np.isfinite(ref)
    a, b = np.where(finite, mine, 0.0), np.where(finite, ref, 0.0)
    err = relative_error(a, b)
    if err <= tol:
        return Check(witness, "agrees", err, tol)
    r, c = np.unravel_index(int(np.argmax(np.abs(a - b))), a.shape)
    detail = f"{label} {a[r, c]:.10g} vs {ref_label or witness} {b[r, c]:.10g}"
    return Check(witness, "disagrees", err, tol, where_of(r, c), detail)


def judge_fd(rule_p, fd_p, bound_p, exact_p, probes_names, norms, safety, forward, label="bwd", floor=1e-13):
    """Finite differences on all probes of one leaf: (P, C) arrays for the rule, the estimate (NaN where it is
    no evidence), its error bound and the exact witness (NaN where there is none). Returns the Check and
    whether finite differences disagree with the exact witness anywhere (then autodiff may be the wrong side).
    ``floor``: a relative allowance for rules that compute in less than float64."""
    usable = np.isfinite(fd_p) & np.isfinite(bound_p)
    if not usable.any():
        detail = "they do not converge, or f is non-finite at the steps (not smooth there, or outside its domain)"
        return Check(FD, "skipped", detail=detail), False
    limit = safety * bound_p + floor * np.maximum(np.abs(fd_p), np.abs(rule_p))
    off = np.where(usable, np.abs(rule_p - fd_p), 0.0)
    bad = usable & (off > limit)
    exact_off = usable & np.isfinite(exact_p) & (np.abs(np.nan_to_num(exact_p) - fd_p) > limit)
    a, b = np.where(usable, rule_p, 0.0), np.where(usable, fd_p, 0.0)
    err = relative_error(a, b)
    scale = max(np.linalg.norm(a), np.linalg.norm(b)) or 1.0
    tol = float(np.linalg.norm(np.where(usable, limit, 0.0)) / scale)
    left_out = int((~usable).any(1).sum())
    note = f"{left_out} probe(s) where they do not converge left out" if left_out else ""
    if not bad.any():
        return Check(FD, "agrees", err, tol, detail=note), bool(exact_off.any())
    if not (bad & ~exact_off).any():  # wherever FD disagrees with the rule, it disagrees with autodiff too
        detail = f"they disagree with autodiff itself ({forward.reason()}); autodiff judged"
        return Check(FD, "not a witness", err, tol, detail=detail), True
    ratio = np.where(bad & ~exact_off, off / np.maximum(limit, 1e-300), 0.0)
    p, c = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    n = norms[p]
    detail = f"{label} {rule_p[p, c] / n:.10g} vs finite differences {fd_p[p, c] / n:.10g} ± {limit[p, c] / n:.1e}"
    return Check(FD, "disagrees", err, tol, probes_names[p], detail), bool(exact_off.any())


def reconcile(exact: Check, fd: Check, fd_against_exact: bool, forward) -> None:
    """Autodiff is the forward's derivative unless it disagrees with converged finite differences that agree
    with the rule, in a forward that declares no other derivative (no stop_gradient, no custom_vjp): then
    autodiff is no witness (a loop's iterations differentiated instead of their limit, a formula that loses
    precision) and finite differences judge."""
    if exact.status == "disagrees" and fd.status == "agrees" and fd_against_exact and not forward.declared:
        why = "it differentiates the loop's iterations, not their limit" if forward.loops else "it loses precision here"
        exact.status = "not a witness"
        exact.detail = (
            f"it disagrees with finite differences, which agree with the rule ({why}); finite differences judged"
        )


def judge_dtype(mine_c, mine64, ref_c, ref64, dtype: np.dtype, forward_finite: bool, where_of, label="bwd") -> Check:
    """The rule at the caller's dtype against the same rule in float64 at the same point (2-D arrays);
    ``ref_c`` / ``ref64``: autodiff at the caller's dtype and in float64 (None where it cannot run)."""
    name = str(dtype)
    if not forward_finite:
        return Check(name, "skipped", detail=f"the forward itself is non-finite in {name}")
    representable = np.abs(np.nan_to_num(mine64)) <= float(np.finfo(dtype).max)  # else no rule could give it
    autodiff_finite = np.ones_like(representable) if ref_c is None else np.isfinite(ref_c)
    bad = ~np.isfinite(mine_c) & np.isfinite(mine64) & representable & autodiff_finite
    if bad.any():
        r, c = np.unravel_index(int(np.argmax(bad)), bad.shape)
        return Check(
            name,
            "disagrees",
            where=where_of(r, c),
            detail=f"overflows in {name}: {label} gives {mine_c[r, c]} where float64 gives {mine64[r, c]:.10g}",
        )
    finite = np.isfinite(mine64) & np.isfinite(mine_c)
    err = relative_error(np.where(finite, mine_c, 0.0), np.where(finite, mine64, 0.0))
    floor = float(np.sqrt(np.finfo(dtype).eps))
    ref_err = float("nan") if ref_c is None or ref64 is None else relative_error(ref_c, ref64)
    tol = max(floor, 10 * ref_err) if np.isfinite(ref_err) else floor
    if err <= tol:
        return Check(name, "agrees", err, tol)
    return Check(name, "disagrees", err, tol, detail=f"loses more digits in {name} than autodiff does ({ref_err:.1e})")


def vmap_witness(run, examples, per_example_extra, leaves, rows, tol, problems, pick, output=False):
    """The rule under jax.vmap against the rule per example: ``run(args, extra)`` gives a result from which
    ``pick(result, leaf)`` takes one leaf's values."""
    try:
        one = jax.jit(run)  # compiled once, like the batched program: the rule as a user's jitted code runs it
        single = [one(a, e) for a, e in zip(examples, per_example_extra)]
        batched = jax.jit(jax.vmap(run))(stack(examples), stack(per_example_extra))
    except Exception as e:  # noqa: BLE001 - reported
        problems.append(f"under jax.vmap the rule raises: {one_line(e)}")
        return
    for leaf in leaves:
        want = np.stack([np.asarray(pick(s, leaf), np.float64) for s in single]).reshape(len(single), -1)
        got = np.asarray(pick(batched, leaf), np.float64).reshape(len(single), -1)
        both = np.isnan(want) & np.isnan(got)  # the same NaN on both sides is the same result

        def where(r, c, leaf=leaf):  # ``output``: the values are the flattened output, not the leaf
            return f"copy {r} at output coordinate {c}" if output else f"copy {r} at {index_str(leaf.value.shape, c)}"

        rows[leaf.name].checks.append(
            compare(np.where(both, 0.0, got), np.where(both, 0.0, want), tol, "vmap", where, "batched", "per example")
        )


def coordinate_names(leaf):
    return lambda r, c: index_str(leaf.value.shape, c)
