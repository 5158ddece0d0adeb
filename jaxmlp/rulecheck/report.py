"""The report of ``check_vjp`` / ``check_jvp`` (internal to ``jaxmlp.rulecheck``): one ``Check`` per witness
and leaf, one ``LeafRow`` per argument leaf, the ``RuleReport`` with its table; the relative error every
witness is measured with."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

TOL = 1e-10  # exact witnesses in float64: both sides are the same derivative up to rounding
FD_SAFETY = 3.0  # finite differences: a probe fails beyond this multiple of its estimated error


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
        values = [
            c.error
            for r in self.rows
            if (c := r.check(kind)) and c.error is not None and c.status in ("agrees", "disagrees")
        ]
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


VjpReport = RuleReport  # the 0.3.0 name (its fields changed: CHANGELOG, 0.4.0)


@dataclass
class Findings:
    """What the witnesses of one check have said so far: rows by leaf name, the rule's problems (faults of
    the rule as a whole), notes (what a witness could not do), and which witnesses ran."""

    kind: str  # "vjp" or "jvp"
    rows: dict
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    witnesses: list = field(default_factory=list)

    def report(self, tol, fd_safety) -> RuleReport:
        problems = sorted(set(self.problems), key=self.problems.index)
        return RuleReport(self.kind, list(self.rows.values()), problems, self.notes, self.witnesses, tol, fd_safety)


class OptionError(ValueError):
    """An option of check_vjp / check_jvp that cannot be used (raised, not reported)."""


def reported(kind: str):
    """Decorate a checker so that its own failure on an unusual rule is a failed report saying so in one
    line, not a traceback in the user's test (bad options still raise ``OptionError``)."""

    def decorate(check):
        @functools.wraps(check)
        def run(*args, **options):
            try:
                return check(*args, **options)
            except OptionError:
                raise
            except Exception as e:  # noqa: BLE001 - the verdict: this rule could not be judged
                text = str(e).strip().splitlines()
                line = f"{type(e).__name__}: {text[0] if text else ''}"[:300]
                return RuleReport(kind, [], [f"the checker could not judge this rule ({line})"])

        return run

    return decorate


def begin(kind: str, leaves, cotangents: int) -> Findings:
    """The start of every check: its options validated (``OptionError``), one row per leaf of ``leaves``."""
    if cotangents < 1:
        raise OptionError(f"check_{kind} needs cotangents >= 1 (got {cotangents})")
    return Findings(kind, {leaf.name: LeafRow(leaf.name, leaf.value.shape, str(leaf.dtype)) for leaf in leaves})


def resolution(forward, tol: float, found: Findings, who: str) -> tuple[float, float]:
    """(the exact witnesses' tolerance, finite differences' relative floor): ``tol`` and 1e-13, or 100·ε of
    the precision that ``forward`` (probes.Forward) computes in when that is less than float64, with a note."""
    if not forward.precision:
        return tol, 1e-13
    coarse = max(tol, 100 * float(np.finfo(forward.precision).eps))
    found.notes.append(
        f"{who} computes in {forward.precision} even when given float64 (its jaxpr has {forward.precision} "
        f"values): autodiff and finite differences judged at that resolution, tolerance {coarse:.1e}; a "
        "dtype-generic rule (jnp.promote_types(x.dtype, jnp.float32)) is checked to 1e-10"
    )
    return coarse, coarse
