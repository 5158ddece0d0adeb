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
  (x ± t·d, d scaled by max(|xᵢ|, 10⁻³·rms(x)), t = 10⁻⁵), at steps t, t/2 and t/4. Richardson's
  extrapolation R = (4·D(t/2) − D(t))/3 is the estimate; its error bound is
  ``fd_safety`` × (|D(t) − D(t/2)| + 16·ε·Σ|ct·f(x)|/t) (truncation seen between the steps, plus
  rounding). A probe whose differences do not converge as t² (D(t) − D(t/2) ≈ 4·(D(t/2) − D(t/4)) or
  below rounding: an infinite slope, a kink within the steps) is left out. A probe fails when
  |rule − R| exceeds its bound.
- **who is right** when autodiff and finite differences disagree: where the forward declares another
  derivative (``stop_gradient``, a ``custom_vjp`` or a ``custom_jvp`` in its jaxpr — jax.nn's too, to be
  safe), autodiff; finite differences are then
  "not a witness" for that leaf. Otherwise the forward's values: where converged finite differences agree
  with the rule and disagree with autodiff (a bisection or fixed-point ``while_loop`` differentiated
  through its iterations, a formula that loses precision), autodiff is "not a witness". Where finite
  differences disagree with both, they are not a witness (a kink, a ``custom_jvp`` inside).
- **the caller's dtype**: the rule run at the dtype it was given (e.g. float32), outside float64: a
  non-finite cotangent where float64 gives a finite one that the dtype can hold and autodiff at that
  dtype is finite fails ("overflows in float32"), and so does an error beyond √ε of that dtype *and*
  beyond 10× autodiff's own error at that dtype. Cotangent shapes and dtypes are checked here against
  the arguments' (a float16 gradient for a float32 parameter is a bug that ``jax.custom_vjp`` passes on
  silently), and the rule is run once through ``jax.custom_vjp`` itself, so what it would refuse at run
  time is refused here. A rule or forward whose float64 jaxpr still computes in float32 (or lower) is
  judged at that precision's resolution (tolerance 100·ε of it), and the report says so.
- **vmap**: the rule under ``jax.vmap`` (through ``jax.custom_vjp`` / ``custom_jvp``, as a user's batched
  code runs it) over ``batch`` perturbed copies of the arguments equals the rule applied to each copy
  (tolerance ``tol``); both runs are jitted, so the rule must trace (no NumPy on its inputs).

A rule that makes the checker itself fail is a failed report that says so in one line; a bad option
(``cotangents=0``) raises ``OptionError``.

``check_jvp`` probes each leaf alone and, once, every leaf together (a rule must be linear in its
tangents). Relative errors are ‖a − b‖ / max(‖a‖, ‖b‖) (0 when both are 0). Complex arguments are
refused. What the witnesses cannot see: an error below ``tol`` of the cotangent's norm; a rule that is
wrong only where no random point lands (exactly at a kink); where autodiff is unavailable or no witness,
an error below the finite differences' bound — and so an autodiff that is merely imprecise, where finite
differences cannot resolve the difference, fails a more accurate rule.
"""

from jaxmlp.rulecheck.jvp import as_custom_jvp, assert_jvp, check_jvp
from jaxmlp.rulecheck.probes import FD_STEP, MEMORY_FLOATS
from jaxmlp.rulecheck.report import FD_SAFETY, TOL, Check, LeafRow, RuleReport, VjpReport, relative_error, worst
from jaxmlp.rulecheck.vjp import as_custom_vjp, assert_vjp, check_vjp

__all__ = [
    "check_vjp",
    "assert_vjp",
    "as_custom_vjp",
    "check_jvp",
    "assert_jvp",
    "as_custom_jvp",
    "RuleReport",
    "VjpReport",
    "LeafRow",
    "Check",
    "relative_error",
    "worst",
    "TOL",
    "FD_SAFETY",
    "FD_STEP",
    "MEMORY_FLOATS",
]
