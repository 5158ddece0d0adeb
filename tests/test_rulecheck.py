"""jaxmlp.rulecheck: check_vjp / check_jvp judge hand-written rules right; the corpus of tests/vjp_corpus.py.

The corpus is judged by its verdicts (a right rule passes, a wrong one fails); the other tests pin what
the report says (which witness, which leaf, which coordinate), the tolerances, and the conventions of
jax.custom_vjp / custom_jvp that the checker follows.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import vjp_corpus

import jaxmlp as jm
from jaxmlp import rulecheck

from helpers import REPO

CASES = vjp_corpus.CASES
BY_NAME = {c.name: c for c in CASES}


def rule(case, jit=False):
    return vjp_corpus.jitted(case) if jit else (case.fwd, case.bwd)


def test_the_corpus_covers_every_class_with_right_and_wrong_rules():
    assert len(CASES) >= 30 and len(BY_NAME) == len(CASES)
    kinds = {c.kind for c in CASES}
    assert kinds == {"size", "step", "none", "nonfinite", "while", "dtype", "constant", "coverage", "structure", "vmap"}
    for kind in kinds:
        assert {c.right for c in CASES if c.kind == kind} == {True, False}, kind


# every case once in the default run, alternating eager and jitted; all of them at 20 seeds below (slow)
@pytest.mark.parametrize("k", range(len(CASES)), ids=[c.name for c in CASES])
def test_every_corpus_case_is_judged_right(k):
    case = CASES[k]
    report = jm.check_vjp(*rule(case, jit=k % 2 == 1), *case.make_args(), seed=k)
    assert report.ok == case.right, str(report)


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("k", range(len(CASES)), ids=[c.name for c in CASES])
def test_every_corpus_verdict_is_the_same_for_20_seeds(k, jit):
    case = CASES[k]
    fwd, bwd = rule(case, jit)
    wrong = [s for s in range(20) if jm.check_vjp(fwd, bwd, *case.make_args(), seed=s).ok != case.right]
    assert not wrong, f"{case.name}: wrong verdict at seeds {wrong}"


# --- what the report says ----------------------------------------------------------------------


def failures(report):
    return [line for line in str(report).splitlines() if line.startswith("FAILED ")]


def test_a_bug_in_one_coordinate_is_found_there():
    case = BY_NAME["first differences missing the first coordinate"]
    report = jm.check_vjp(case.fwd, case.bwd, *case.make_args())
    assert report.failing == ["arg0"]
    exact = report.rows[0].check("exact")
    assert exact.witness == "jax.vjp" and exact.status == "disagrees" and exact.where == "[0]"
    assert any("jax.vjp disagrees" in line and "worst at [0]" in line for line in failures(report))


def test_each_witness_is_reported_against_its_own_tolerance():
    case = BY_NAME["pytree in and out, integer labels"]
    report = jm.check_vjp(case.fwd, case.bwd, *case.make_args())
    assert report.ok and [r.name for r in report.rows] == ["arg0['W']", "arg0['b']", "arg1"]  # labels: no row
    for row in report.rows:
        exact, fd, low, batched = (row.check(k) for k in ("exact", "fd", "dtype", "vmap"))
        assert exact.tolerance == rulecheck.TOL and exact.error < 1e-15
        assert fd.status == "agrees" and fd.error < fd.tolerance < 1e-6  # the estimated bound, not TOL
        assert low.witness == "float32" and low.tolerance >= float(np.sqrt(np.finfo(np.float32).eps))
        assert batched.error < rulecheck.TOL
    assert report.worst_vs_autodiff < 1e-15 and report.worst_vs_finite_differences < 1e-8
    json.dumps(report.to_dict())  # serialisable as it is


def test_relative_error_is_over_the_larger_norm():
    assert rulecheck.relative_error([1.0], [1.001]) == pytest.approx(0.001 / 1.001)
    assert rulecheck.relative_error([0.0], [0.0]) == 0.0 and rulecheck.relative_error([1.0], [0.0]) == 1.0
    assert np.isnan(rulecheck.relative_error([1.0, np.nan], [1.0, 1.0]))


@pytest.mark.parametrize("factor, ok", [(1 + 1e-12, True), (1 + 1e-9, False)])
def test_the_autodiff_tolerance_is_1e_10(factor, ok):
    """A rule off by 1e-9 fails, one off by 1e-12 (rounding) passes: the default is what the docs say."""
    case = BY_NAME["pytree in and out, integer labels"]

    def bwd(res, ct):
        g, dx, _ = case.bwd(res, ct)
        return g, dx * factor, None

    with jax.enable_x64(True):  # a float64 caller: the float32 witness does not round the factor away
        args = jax.tree_util.tree_map(
            lambda a: jnp.asarray(a, jnp.float64) if a.dtype.kind == "f" else a, case.make_args()
        )
        assert jm.check_vjp(case.fwd, bwd, *args).ok == ok


def test_a_wrong_shape_names_the_argument_and_both_shapes():
    case = BY_NAME["weight gradient of the wrong shape"]
    report = jm.check_vjp(case.fwd, case.bwd, *case.make_args())
    assert not report.ok
    assert any("arg0['W']: bwd gives shape (4, 6) float32, expected (6, 4)" in p for p in report.problems), (
        report.problems
    )
    short = BY_NAME["one cotangent short"]
    assert "one entry per argument (2)" in jm.check_vjp(short.fwd, short.bwd, *short.make_args()).problems[0]


def test_a_cotangent_of_another_dtype_is_named():
    case = BY_NAME["a float16 cotangent for a float32 argument"]
    report = jm.check_vjp(case.fwd, case.bwd, *case.make_args())
    assert any("bwd gives a float16 cotangent for a float32 argument" in p for p in report.problems)


def test_none_is_a_zero_cotangent_as_in_custom_vjp():
    right, wrong = (
        BY_NAME["None for a gate used only through a comparison"],
        BY_NAME["None for a scale that multiplies the output"],
    )
    assert jm.check_vjp(right.fwd, right.bwd, *right.make_args()).ok
    report = jm.check_vjp(wrong.fwd, wrong.bwd, *wrong.make_args())
    assert report.failing == ["arg1"] and report.rows[1].check("exact").status == "disagrees"
    x, s = wrong.make_args()  # jax.custom_vjp reads the same None as zero
    grad = jax.grad(lambda s: jm.as_custom_vjp(wrong.fwd, wrong.bwd)(x, s).sum())(s)
    np.testing.assert_array_equal(grad, 0.0)


def test_a_non_finite_reference_is_named_and_finite_differences_judge_there():
    right, wrong = BY_NAME["safe sqrt: where(x > 0, sqrt(x), 0)"], BY_NAME["safe sqrt whose masked branch is 0.5"]
    ok = jm.check_vjp(right.fwd, right.bwd, *right.make_args())
    assert ok.ok and any("jax.vjp is non-finite at 16 coordinate(s)" in n for n in ok.notes), ok.notes
    bad = jm.check_vjp(wrong.fwd, wrong.bwd, *wrong.make_args())
    fd = bad.rows[0].check("fd")
    assert bad.rows[0].check("exact").status == "agrees"  # on the coordinates where jax.vjp is finite
    (x,) = wrong.make_args()
    assert fd.status == "disagrees" and x[tuple(json.loads(fd.where))] < 0  # where jax.vjp is NaN


def test_reverse_mode_unavailable_falls_back_to_forward_mode():
    case = BY_NAME["Newton square root missing the 1/2"]
    report = jm.check_vjp(case.fwd, case.bwd, *case.make_args())
    exact = report.rows[0].check("exact")
    assert exact.witness == "jax.jvp (dot-product test)" and exact.status == "disagrees"
    assert exact.error == pytest.approx(0.5, rel=1e-6)  # bwd is 2x: ‖2g − g‖ / ‖2g‖
    assert any("jax.vjp cannot differentiate fwd" in n for n in report.notes)


def test_an_overflow_at_the_callers_dtype_fails_with_its_place():
    case = BY_NAME["softplus via exp(x)/(1+exp(x)) in float32 at x = 100"]
    report = jm.check_vjp(case.fwd, case.bwd, *case.make_args())
    low = report.rows[0].check("dtype")
    assert report.rows[0].check("exact").status == "agrees"  # float64 alone would pass this rule
    assert low.status == "disagrees" and "overflows in float32" in low.detail and low.where == "[0, 0]"


def test_stop_gradient_makes_finite_differences_no_witness_not_a_failure():
    case = BY_NAME["batch norm with stop_gradient statistics"]
    report = jm.check_vjp(case.fwd, case.bwd, *case.make_args())
    fd = report.rows[0].check("fd")
    assert report.ok and fd.status == "not a witness" and "stop_gradient" in fd.detail


def test_a_rule_that_batches_wrongly_is_caught_by_the_vmap_witness_alone():
    case = BY_NAME["normalize, a NumPy callback that reduces every axis (the batch too)"]
    report = jm.check_vjp(case.fwd, case.bwd, *case.make_args())
    row = report.rows[0]
    assert [row.check(k).status for k in ("exact", "fd", "dtype", "vmap")] == ["agrees"] * 3 + ["disagrees"]
    numpy_rule = BY_NAME["a backward in NumPy (cannot be traced)"]
    problems = jm.check_vjp(numpy_rule.fwd, numpy_rule.bwd, *numpy_rule.make_args()).problems
    assert any(p.startswith("under jax.vmap the rule raises") for p in problems)


def test_autodiff_of_a_loop_is_no_witness_where_converged_finite_differences_back_the_rule():
    """Bisection: autodiff differentiates the iterations (0), the implicit rule is the derivative."""
    right = BY_NAME["y + y^3 = a by bisection, implicit rule (autodiff gives 0)"]
    report = jm.check_vjp(right.fwd, right.bwd, *right.make_args())
    exact, fd = report.rows[0].check("exact"), report.rows[0].check("fd")
    assert report.ok and exact.status == "not a witness" and "iterations" in exact.detail and fd.status == "agrees"
    # where the forward declares another derivative (stop_gradient), autodiff stays the reference
    declared = BY_NAME["batch norm with stop_gradient statistics, full backward"]
    assert jm.check_vjp(declared.fwd, declared.bwd, *declared.make_args()).rows[0].check("exact").status == "disagrees"


def test_finite_differences_that_do_not_converge_are_left_out():
    case = BY_NAME["safe sqrt at exactly zero (an infinite one-sided slope)"]
    report = jm.check_vjp(case.fwd, case.bwd, *case.make_args())
    assert report.ok and "do not converge left out" in report.rows[0].check("fd").detail


def test_a_rule_that_computes_in_float32_inside_is_judged_at_float32s_resolution():
    case = BY_NAME["RMS norm computed in float32 inside, float16 arguments"]
    report = jm.check_vjp(case.fwd, case.bwd, *case.make_args())
    assert report.ok and any("computes in float32 even when given float64" in n for n in report.notes)
    assert report.rows[0].check("exact").tolerance == pytest.approx(100 * np.finfo(np.float32).eps)


def test_complex_arguments_are_refused_in_words():
    report = jm.check_vjp(lambda z: (z * z, z), lambda z, g: (2 * g * z,), np.array([1 + 2j], np.complex64))
    assert not report.ok and "complex arguments are not supported" in report.problems[0]


def test_cost_grows_with_probes_not_with_size_squared():
    """A 300x300 weight: a dense identity over its coordinates would need 65 GB (the size benchmark times it)."""
    case = BY_NAME["linear 256x128"]
    params, x = vjp_corpus._linear_args(300, 300, 8)()
    report = jm.check_vjp(case.fwd, case.bwd, params, x, batch=0)
    assert report.ok, str(report)
    assert report.rows[0].check("fd").status == "agrees"


def _sin_with_argmax(x):
    return (jnp.sin(x), jnp.argmax(x)), x  # an integer output: its cotangent is float0


def _bernoulli_mask(x, key):
    mask = jax.random.bernoulli(key, 0.5, x.shape)
    return x * mask, mask


ODD_ARGUMENTS = [
    (
        "an integer output",
        _sin_with_argmax,
        lambda x, ct: (ct[0] * jnp.cos(x),),
        (np.linspace(-1, 1, 5, dtype=np.float32),),
    ),
    (
        "a Python float argument",
        lambda x, s: (x * s, (x, s)),
        lambda res, g: (g * res[1], jnp.sum(g * res[0])),
        (np.linspace(-1, 1, 5, dtype=np.float32), 2.0),
    ),
    ("a 0-d argument", lambda s: (s**3, s), lambda s, g: (3 * s**2 * g,), (np.float32(1.5),)),
    ("a typed key", _bernoulli_mask, lambda m, g: (g * m, None), (np.ones(6, np.float32), jax.random.key(0))),
    ("a raw key", _bernoulli_mask, lambda m, g: (g * m, None), (np.ones(6, np.float32), jax.random.PRNGKey(0))),
]


@pytest.mark.parametrize("name, fwd, bwd, args", ODD_ARGUMENTS, ids=[c[0] for c in ODD_ARGUMENTS])
def test_right_rules_with_odd_arguments_and_outputs_pass(name, fwd, bwd, args):
    report = jm.check_vjp(fwd, bwd, *args)
    assert report.ok, str(report)
    assert all(row.check("vmap").status == "agrees" for row in report.rows)  # batched keys and float0 too


@jax.custom_jvp
def _round_ste(x):  # straight-through rounding written with custom_jvp: the derivative is 1 by declaration
    return jnp.round(x)


_round_ste.defjvp(lambda primals, tangents: (jnp.round(primals[0]), tangents[0]))


def test_a_custom_jvp_inside_the_forward_declares_its_derivative():
    """Finite differences (0) agree with a rule that returns 0, but the forward declares 1: a wrong rule."""
    x = np.linspace(-2.3, 2.7, 7).astype(np.float32)
    wrong = jm.check_vjp(lambda x: (_round_ste(x), None), lambda _, g: (0 * g,), x)
    assert not wrong.ok and wrong.rows[0].check("exact").status == "disagrees"
    assert jm.check_vjp(lambda x: (_round_ste(x), None), lambda _, g: (g,), x).ok


def test_none_inside_an_argument_pytree():
    def fwd(pair):
        x, _ = pair
        return jnp.sin(x), x

    report = jm.check_vjp(fwd, lambda x, g: ((g * jnp.cos(x), None),), (np.ones(3, np.float32), None))
    assert report.ok, str(report)


def test_bfloat16_inside_is_named_bfloat16():
    def fwd(x):
        return (x.astype(jnp.bfloat16) * 2).astype(x.dtype), None

    report = jm.check_vjp(fwd, lambda _, g: ((g.astype(jnp.bfloat16) * 2).astype(g.dtype),), np.ones(4, np.float32))
    assert any("computes in bfloat16" in n for n in report.notes), report.notes


def test_a_jvp_with_a_wrongly_shaped_primal_fails_in_words():
    report = jm.check_jvp(softplus, lambda p, t: (softplus(p[0])[:2], jax.nn.sigmoid(p[0]) * t[0]), X)
    assert not report.ok and any("primal output has another structure or shape" in p for p in report.problems)


def test_bad_options_raise():
    case = BY_NAME["sin(40x)"]
    with pytest.raises(ValueError, match="cotangents >= 1"):
        jm.check_vjp(case.fwd, case.bwd, *case.make_args(), cotangents=0)


def test_the_callers_x64_setting_is_untouched():
    x64 = jax.config.jax_enable_x64
    case = BY_NAME["sin(40x)"]
    jm.check_vjp(case.fwd, case.bwd, *case.make_args())
    assert jax.config.jax_enable_x64 == x64


def test_the_readme_shows_the_report_that_its_example_prints():
    """README's failing-rule table is this report (the lines without figures: those vary with the CPU)."""
    text = (REPO / "README.md").read_text()
    shown = text[
        text.index("argument leaf  shape") : text.index("verdict: FAILED: arg0") + len("verdict: FAILED: arg0")
    ]
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3)).at[0, 0].set(100.0)

    def naive(x, dy):
        e = jnp.exp(x)
        return (dy * e / (1 + e),)

    printed = str(jm.check_vjp(lambda x: (jnp.logaddexp(x, 0.0), x), naive, x))
    keep = ("argument leaf", "FAILED ", "witness:", "verdict:")
    assert [ln for ln in shown.splitlines() if ln.startswith(keep)] == [
        ln for ln in printed.splitlines() if ln.startswith(keep)
    ]


def test_assert_vjp_raises_with_the_table():
    case = BY_NAME["entropy without the +1"]
    with pytest.raises(AssertionError, match=r"(?s)arg0 .*FAILED arg0: jax.vjp disagrees.*verdict: FAILED: arg0"):
        jm.assert_vjp(case.fwd, case.bwd, *case.make_args())


# --- check_jvp -------------------------------------------------------------------------------------


def softplus(x):
    return jnp.logaddexp(x, 0.0)


def softplus_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return softplus(x), jax.nn.sigmoid(x) * dx


def softplus_jvp_naive(primals, tangents):  # right in float64, overflows in float32
    (x,), (dx,) = primals, tangents
    return softplus(x), jnp.exp(x) / (1 + jnp.exp(x)) * dx


def softplus_jvp_half(primals, tangents):
    (x,), (dx,) = primals, tangents
    return softplus(x), 0.5 * jax.nn.sigmoid(x) * dx


def softplus_jvp_shifted(primals, tangents):  # a primal output that is not f's
    (x,), (dx,) = primals, tangents
    return softplus(x) + 1e-3, jax.nn.sigmoid(x) * dx


@jax.custom_vjp
def opaque_square(x):  # forward mode cannot go through a custom_vjp: the dot-product test with jax.vjp judges
    return x * x


opaque_square.defvjp(lambda x: (x * x, x), lambda x, g: (2 * x * g,))


def square_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return opaque_square(x), 2 * x * dx


def weighted(x, w):
    return jnp.tanh(x) * w


def weighted_jvp(primals, tangents):
    (x, w), (dx, dw) = primals, tangents
    return weighted(x, w), (1 - jnp.tanh(x) ** 2) * w * dx + jnp.tanh(x) * dw


def product(A, B):
    return A @ B


def product_jvp_perturbed(primals, tangents):  # right one argument at a time, not linear in both together
    (A, B), (tA, tB) = primals, tangents
    return A @ B, (A + tA) @ (B + tB) - A @ B


def weighted_jvp_forgets_w(primals, tangents):
    (x, w), (dx, _) = primals, tangents
    return weighted(x, w), (1 - jnp.tanh(x) ** 2) * w * dx


X = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32) * 3
LARGE = X.copy()
LARGE[0, 0] = 100.0
JVP_CASES = [
    ("softplus", softplus, softplus_jvp, (X,), True),
    ("softplus, exp(x)/(1+exp(x)) at x = 100 in float32", softplus, softplus_jvp_naive, (LARGE,), False),
    ("softplus at half the slope", softplus, softplus_jvp_half, (X,), False),
    ("softplus with a shifted primal output", softplus, softplus_jvp_shifted, (X,), False),
    ("square through a custom_vjp", opaque_square, square_jvp, (X,), True),
    ("tanh(x)·w, two arguments", weighted, weighted_jvp, (X, X[::-1].copy()), True),
    ("tanh(x)·w without w's tangent", weighted, weighted_jvp_forgets_w, (X, X[::-1].copy()), False),
    ("a product, perturbed arguments multiplied", product, product_jvp_perturbed, (X, X.T.copy()), False),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name, f, f_jvp, args, right", JVP_CASES, ids=[c[0] for c in JVP_CASES])
def test_check_jvp_verdicts(name, f, f_jvp, args, right, jit):
    if jit:
        f, f_jvp = jax.jit(f), jax.jit(f_jvp)
    report = jm.check_jvp(f, f_jvp, *args, seed=int(jit))
    assert report.ok == right, str(report)


def test_check_jvp_names_the_witness_and_the_fault():
    report = jm.check_jvp(weighted, weighted_jvp_forgets_w, X, X[::-1].copy())
    assert report.failing == ["arg1"] and report.rows[1].check("exact").witness == "jax.jvp"
    opaque = jm.check_jvp(opaque_square, square_jvp, X)
    assert opaque.ok and opaque.rows[0].check("exact").witness == "jax.vjp (dot-product test)"
    shifted = jm.check_jvp(softplus, softplus_jvp_shifted, X)
    assert any("jvp's primal output differs from fwd(*args)" in p for p in shifted.problems)
    naive = jm.check_jvp(softplus, softplus_jvp_naive, LARGE)
    assert "overflows in float32" in naive.rows[0].check("dtype").detail
    joint = jm.check_jvp(product, product_jvp_perturbed, X, X.T.copy())
    assert any(p.startswith("jvp is not linear in its tangents") for p in joint.problems), joint.problems
    with pytest.raises(AssertionError, match="hand-written JVP disagrees"):
        jm.assert_jvp(softplus, softplus_jvp_half, X)


def test_as_custom_jvp_makes_jax_jvp_run_the_rule():
    f = jm.as_custom_jvp(softplus, softplus_jvp_half)
    _, tangent = jax.jvp(f, (X,), (np.ones_like(X),))
    np.testing.assert_allclose(tangent, 0.5 * jax.nn.sigmoid(X), rtol=1e-6)


# --- as_custom_vjp (moved from test_gradcheck) ----------------------------------------------------


@pytest.mark.parametrize("transform", ["plain", "jit", "vmap"])
def test_as_custom_vjp_makes_jax_grad_run_the_rule(transform):
    """A rule that returns twice the true cotangent shows that jax.grad ran it (and not autodiff)."""
    case = BY_NAME["pytree in and out, integer labels"]

    def bwd_twice(residuals, ct):
        g, dx, _ = case.bwd(residuals, ct)
        return jax.tree_util.tree_map(lambda a: 2 * a, g), 2 * dx, None

    f = jm.as_custom_vjp(case.fwd, bwd_twice)
    params, x, labels = case.make_args()

    def loss(params, x, fn):
        out = fn(params, x, labels)
        return jnp.sum(out["y"] ** 2) + jnp.sum(out["picked"])

    def reference(params):
        return jax.grad(loss, argnums=(0, 1))(params, x, lambda *a: case.fwd(*a)[0])

    if transform == "vmap":  # a member axis over the parameters, as in a sweep
        members = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), params)
        mine = jax.vmap(lambda p: jax.grad(loss, argnums=(0, 1))(p, x, f))(members)
        cases = [
            (
                jax.tree_util.tree_map(lambda a, k=k: a[k], mine),
                reference(jax.tree_util.tree_map(lambda a, k=k: a[k], members)),
            )
            for k in range(2)
        ]
    else:
        grad = jax.grad(loss, argnums=(0, 1))
        if transform == "jit":
            grad = jax.jit(grad, static_argnums=2)
        cases = [(grad(params, x, f), reference(params))]
    for mine, plain in cases:
        for a, b in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(plain)):
            np.testing.assert_allclose(a, 2 * b, rtol=1e-5)  # float32: a handful of roundings


def test_a_while_loop_rule_is_usable_under_jax_grad():
    """The point of a while_loop rule: jax.grad of the wrapped function runs and equals the derivative."""
    case = BY_NAME["Newton square root (while_loop)"]
    (a,) = case.make_args()
    g = jax.grad(lambda a: jm.as_custom_vjp(case.fwd, case.bwd)(a).sum())(a)
    np.testing.assert_allclose(g, 0.5 / np.sqrt(a), rtol=1e-6)
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work"):
        jax.grad(lambda a: case.fwd(a)[0].sum())(a)
