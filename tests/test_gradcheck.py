"""jaxmlp.gradcheck's tool for anyone's op: check_vjp / assert_vjp / as_custom_vjp (the network report,
check_gradients, is exercised in test_mlp.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp as jm
from jaxmlp.gradcheck import GradReport, worst


def affine_fwd(params, x, labels):
    """A pytree op: params {"W", "b"}, input x, integer labels; output a dict of two arrays."""
    y = x @ params["W"] + params["b"]
    return {"y": y, "picked": jnp.take_along_axis(y, labels[:, None], axis=1)[:, 0]}, (params, x, labels)


def affine_bwd(residuals, ct):
    params, x, labels = residuals
    dy = ct["y"] + jax.nn.one_hot(labels, params["b"].shape[0]) * ct["picked"][:, None]
    return {"W": x.T @ dy, "b": dy.sum(0)}, dy @ params["W"].T, None


def point():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"W": jax.random.normal(k1, (4, 3)), "b": jax.random.normal(k2, (3,))}
    return params, jax.random.normal(k3, (5, 4)), jnp.array([0, 2, 1, 1, 0])


def test_a_right_rule_passes_on_pytrees_with_integer_arguments():
    x64 = jax.config.jax_enable_x64
    report = jm.check_vjp(affine_fwd, affine_bwd, *point())
    assert report.ok and report.worst < 1e-6, str(report)
    assert [r.name for r in report.rows] == ["arg0['W']", "arg0['b']", "arg1"]  # labels: no row
    assert all(r.vs_autodiff < 1e-12 and r.vs_directions < 1e-6 and r.vs_coordinates < 1e-6 for r in report.rows)
    assert jax.config.jax_enable_x64 == x64  # float64 only inside the check


def test_a_wrong_leaf_is_named_in_the_table():
    def bwd_wrong_bias(residuals, ct):
        g, dx, _ = affine_bwd(residuals, ct)
        return {**g, "b": g["b"] * 1.001}, dx, None

    report = jm.check_vjp(affine_fwd, bwd_wrong_bias, *point())
    assert not report.ok and report.failing == ["arg0['b']"]
    assert report.rows[1].vs_autodiff == pytest.approx(5e-4, rel=0.01)  # |0.001| / (1 + 1.001)
    with pytest.raises(AssertionError, match=r"(?s)arg0\['b'\] .* FAILED.*FAILED: arg0\['b'\]"):
        jm.assert_vjp(affine_fwd, bwd_wrong_bias, *point())


def test_nan_fails_and_a_malformed_result_is_a_problem():
    def bwd_nan(residuals, ct):
        g, dx, _ = affine_bwd(residuals, ct)
        return g, dx.at[0, 0].set(jnp.nan), None

    report = jm.check_vjp(affine_fwd, bwd_nan, *point())
    assert not report.ok and np.isnan(report.worst) and report.failing == ["arg1"]
    short = jm.check_vjp(affine_fwd, lambda r, ct: affine_bwd(r, ct)[:2], *point())
    assert not short.ok and "one cotangent per argument (3)" in short.problems[0]


def test_worst_keeps_nan_and_a_nan_network_report_fails():
    assert np.isnan(worst([0.0, float("nan")])) and max([0.0, float("nan")]) == 0.0
    assert not GradReport("float64", float("nan"), None).ok
    assert not GradReport("float64", 0.0, float("nan")).ok


@pytest.mark.parametrize("transform", ["plain", "jit", "vmap"])
def test_as_custom_vjp_makes_jax_grad_run_the_rule(transform):
    """A rule that returns twice the true cotangent shows that jax.grad ran it (and not autodiff)."""

    def bwd_twice(residuals, ct):
        g, dx, _ = affine_bwd(residuals, ct)
        return jax.tree_util.tree_map(lambda a: 2 * a, g), 2 * dx, None

    f = jm.as_custom_vjp(affine_fwd, bwd_twice)
    params, x, labels = point()

    def loss(params, x, fn):
        out = fn(params, x, labels)
        return jnp.sum(out["y"] ** 2) + jnp.sum(out["picked"])

    def reference(params):
        return jax.grad(loss, argnums=(0, 1))(params, x, lambda *a: affine_fwd(*a)[0])

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
