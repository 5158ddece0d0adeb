"""Every op's hand-derived backward through the public ``check_vjp`` (float64, against jax.vjp and
finite differences), jitted and eager; the ops' values and statistics; the seed's numbers.

Tolerances: check_vjp's, 1e-10 against jax.vjp (both sides compute the same derivative with a handful
of floating-point operations: ~1e-15; a wrong term is off by O(1) relative), finite differences within
3x their own estimated error, the rule at the caller's dtype (float32 here unless x64 is on) and under
vmap (jaxmlp.rulecheck's docstring). Other comparisons state theirs.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp.data import back_one_hot, one_hot
from jaxmlp.ops import activations, batchnorm, dropout, linear, losses
from jaxmlp.rulecheck import assert_vjp

RTOL = 1e-10
MODES = [pytest.param(False, id="eager"), pytest.param(True, id="jit")]


def maybe_jit(f, jit):
    return jax.jit(f) if jit else f


def rand(key, shape):
    """Normal numbers, float64 where x64 is on (check_vjp casts to float64 itself)."""
    return jax.random.normal(jax.random.PRNGKey(key), shape, jnp.float64 if jax.config.jax_enable_x64 else None)


def assert_close(a, b, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(np.abs(b).max(), 1e-300))


# ---------------------------------------------------------------------------------------------
# Every op in the jax.custom_vjp convention, checked by the public check_vjp:
# fwd(*args) -> (y, residuals), bwd(residuals, dy) -> one cotangent per argument


def linear_op(params, x):
    y, cache = linear.forward(params, x)
    return y, (params, cache)


def linear_bwd(residuals, dy):
    params, cache = residuals
    dx, grads = linear.backward(params, cache, dy)
    return grads, dx


def activation_op(name):
    def fwd(x):
        return activations.forward(name, x)

    def bwd(cache, dy):
        return (activations.backward(name, cache, dy),)

    return fwd, bwd


def dropout_op(rate, key):  # the rate and key are configuration: the op differentiates x
    def fwd(x):
        return dropout.forward(x, rate, key)

    def bwd(mask, dy):
        return (dropout.backward(mask, dy),)

    return fwd, bwd


def batchnorm_op(params, x):
    y, cache, _, _ = batchnorm.forward_train(params, x)
    return y, cache


def batchnorm_bwd(cache, dy):
    dx, grads = batchnorm.backward(cache, dy)
    return grads, dx


def batchnorm_eval_op(params, state, x):  # running statistics: differentiable constants of the batch
    return batchnorm.forward_eval_with_cache(params, state, x)


def batchnorm_eval_bwd(cache, dy):
    dx, grads, state_grads = batchnorm.backward_eval(cache, dy)
    return grads, state_grads, dx


def cross_entropy_op(z, labels):  # integer labels: no cotangent
    return losses.cross_entropy_forward(z, labels)


def cross_entropy_bwd(cache, dloss):
    return losses.cross_entropy_backward(cache, dloss), None


def softmax_op(z):
    p = losses.softmax(z)
    return p, p


def softmax_bwd(p, dp):
    return (losses.softmax_backward(p, dp),)


def l2_op(W):
    return losses.l2_penalty([W], 0.01, 8), W


def l2_bwd(W, dpenalty):
    return (dpenalty * losses.l2_backward(W, 0.01, 8),)


def jitted(fwd, bwd, jit):
    return (jax.jit(fwd), jax.jit(bwd)) if jit else (fwd, bwd)


# (5, 3): dW computed as xᵀ dy; (12, 3) and (40, 10) narrow by ≥ 4×: dW computed as (dyᵀ x)ᵀ
@pytest.mark.parametrize("d_in, d_out", [(5, 3), (12, 3), (40, 10)])
@pytest.mark.parametrize("jit", MODES)
def test_linear_backward(jit, d_in, d_out):
    params = linear.init(jax.random.PRNGKey(0), d_in, d_out, "xavier")
    params["b"] = rand(9, (d_out,))
    assert_vjp(*jitted(linear_op, linear_bwd, jit), params, rand(1, (4, d_in)))
    dx, dp_only = linear.backward(params, rand(1, (4, d_in)), rand(2, (4, d_out)), need_dx=False)
    _, dp = linear.backward(params, rand(1, (4, d_in)), rand(2, (4, d_out)))
    assert dx is None and np.allclose(dp_only["W"], dp["W"])


@pytest.mark.parametrize("jit", MODES)
@pytest.mark.parametrize("name", activations.ACTIVATIONS)
def test_activation_backward(name, jit):
    assert_vjp(*jitted(*activation_op(name), jit), rand(3, (6, 7)) * 3)


@pytest.mark.parametrize("jit", MODES)
def test_dropout_backward_and_statistics(jit):
    key = jax.random.PRNGKey(7)
    assert_vjp(*jitted(*dropout_op(0.3, key), jit), rand(5, (20, 50)))
    _, mask = dropout.forward(jnp.ones((200, 50)), 0.3, key)
    kept = np.asarray(mask) > 0
    assert kept.mean() == pytest.approx(0.7, abs=0.02)  # 10k Bernoulli draws: std 0.005
    np.testing.assert_allclose(np.asarray(mask)[kept], 1 / 0.7)  # inverted scaling
    x = rand(5, (20, 50))
    y0, _ = dropout.forward(x, 0.0, key)
    assert_close(y0, x)  # rate 0 is the identity


@pytest.mark.parametrize("jit", MODES)
def test_batchnorm_backward(jit):
    params = {"gamma": rand(8, (5,)), "beta": rand(9, (5,))}
    assert_vjp(*jitted(batchnorm_op, batchnorm_bwd, jit), params, rand(10, (7, 5)) * 2 + 1)


@pytest.mark.parametrize("jit", MODES)
def test_batchnorm_eval_backward_and_the_same_values_as_forward_eval(jit):
    params = {"gamma": rand(8, (5,)), "beta": rand(9, (5,))}
    state = {"mean": rand(18, (5,)), "var": jnp.abs(rand(19, (5,))) + 0.5}
    x = rand(10, (7, 5)) * 2 + 1
    assert_vjp(*jitted(batchnorm_eval_op, batchnorm_eval_bwd, jit), params, state, x)
    y, _ = batchnorm.forward_eval_with_cache(params, state, x)
    np.testing.assert_array_equal(y, batchnorm.forward_eval(params, state, x))  # the same expression


@pytest.mark.parametrize("jit", MODES)
def test_softmax_backward(jit):
    assert_vjp(*jitted(softmax_op, softmax_bwd, jit), rand(13, (4, 6)) * 5)


@pytest.mark.parametrize("jit", MODES)
def test_cross_entropy_fused_backward_is_p_minus_y_over_m(x64, jit):
    z, y = rand(15, (5, 4)) * 3, jnp.array([0, 3, 1, 1, 2])
    assert_vjp(*jitted(cross_entropy_op, cross_entropy_bwd, jit), z, y)
    dz = losses.cross_entropy_backward(losses.cross_entropy_forward(z, y)[1])
    assert_close(dz, (losses.softmax(z) - one_hot(y, 4).astype(jnp.float64)) / 5)


@pytest.mark.parametrize("jit", MODES)
def test_l2_backward(x64, jit):
    assert_vjp(*jitted(l2_op, l2_bwd, jit), rand(16, (3, 4)))
    Ws = [rand(16, (3, 4)), rand(17, (4, 2))]
    assert float(losses.l2_penalty(Ws, 0.01, 8)) == pytest.approx(
        0.01 / 16 * sum(float(jnp.sum(W**2)) for W in Ws), rel=1e-12
    )


def test_weight_grad_layouts_agree_and_vmap(x64):
    """Both layouts of xᵀ dy give the same values (float64: same products; 1e-12 covers summation
    order), the narrowing one really takes the transposed form, and both batch under vmap."""
    for d_in, d_out, transposed in ((8, 3, False), (12, 3, True), (40, 10, True)):
        x, dy = rand(1, (6, d_in)), rand(2, (6, d_out))
        assert_close(jax.jit(linear.weight_grad)(x, dy), x.T @ dy, rtol=1e-12)
        jaxpr = str(jax.make_jaxpr(linear.weight_grad)(x, dy))
        assert ("optimization_barrier" in jaxpr) == transposed
        xs, dys = rand(3, (5, 6, d_in)), rand(4, (5, 6, d_out))
        batched = jax.jit(jax.vmap(linear.weight_grad))(xs, dys)
        assert_close(batched, jnp.einsum("kbi,kbo->kio", xs, dys), rtol=1e-12)
        # transpose_narrow=False (MLPConfig.weight_grad_layout="plain", sweeps): always xᵀ dy
        plain = partial(linear.weight_grad, transpose_narrow=False)
        assert "optimization_barrier" not in str(jax.make_jaxpr(plain)(x, dy))
        assert_close(plain(x, dy), x.T @ dy, rtol=1e-12)  # eager: one dot
        shared = jax.vmap(plain, in_axes=(None, 0))(x, dys)  # a sweep: the batch shared
        assert_close(shared, jnp.einsum("bi,kbo->kio", x, dys), rtol=1e-12)


def test_mlp_weight_grad_layouts_give_the_same_gradients(x64):
    """MLPConfig.weight_grad_layout only changes how dW is computed: 784-100-10-like narrowing
    layers give equal gradients (1e-12, float64 summation order) in "auto" and "plain"."""
    from jaxmlp import mlp
    from jaxmlp.hyper import Hyper

    grads = {}
    for layout in mlp.WEIGHT_GRAD_LAYOUTS:
        config = mlp.MLPConfig(sizes=(40, 9, 3), weight_grad_layout=layout)
        params, state = mlp.init(jax.random.PRNGKey(0), config, dtype=jnp.float64)
        batch = (rand(5, (7, 40)), jnp.arange(7) % 3)
        _, grads[layout], _, _ = mlp.loss_and_grads(params, state, batch, Hyper().as_arrays(), None, config=config)
    for a, b in zip(jax.tree_util.tree_leaves(grads["auto"]), jax.tree_util.tree_leaves(grads["plain"])):
        assert_close(a, b, rtol=1e-12)
    with pytest.raises(ValueError, match="weight-gradient layout"):
        mlp.MLPConfig(weight_grad_layout="sideways")


@pytest.mark.parametrize("method, std", [("he", (2 / 400) ** 0.5), ("xavier", (2 / 500) ** 0.5), ("seed", 0.01)])
def test_linear_init_std_and_zero_bias(method, std):
    p = linear.init(jax.random.PRNGKey(0), 400, 100, method)
    assert p["W"].shape == (400, 100) and p["W"].dtype == jnp.float32
    assert float(jnp.std(p["W"])) == pytest.approx(std, rel=0.03)  # 40k samples: std error ~0.4%
    assert not np.any(np.asarray(p["b"]))
    with pytest.raises(ValueError, match="unknown init 'orthogonal'"):
        linear.init(jax.random.PRNGKey(0), 2, 2, "orthogonal")


def test_activation_values():
    x = jnp.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(activations.forward("relu", x)[0], [0, 0, 3])  # seed's ReLU test
    np.testing.assert_allclose(activations.forward("sigmoid", x)[0], 1 / (1 + np.exp([2.0, 0, -3])), rtol=1e-6)
    np.testing.assert_allclose(activations.forward("tanh", x)[0], np.tanh([-2.0, 0, 3]), rtol=1e-6)
    # relu'(0) = 0, as jax.nn.relu and jax.grad of our forward
    assert float(activations.backward("relu", activations.forward("relu", jnp.zeros(1))[1], jnp.ones(1))[0]) == 0.0
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        activations.forward("gelu", x)


def test_batchnorm_statistics_and_running_average(x64):
    x = rand(12, (64, 3)) * 4 + 2
    p = batchnorm.init(3, jnp.float64)
    y, _, mean, var = batchnorm.forward_train(p, x)
    np.testing.assert_allclose(np.asarray(y).mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(y).var(0), np.asarray(var / (var + batchnorm.EPS)), rtol=1e-12)
    s = batchnorm.update_state(batchnorm.init_state(3, jnp.float64), mean, var, 64, 0.9)
    np.testing.assert_allclose(s["mean"], 0.1 * np.asarray(x).mean(0), rtol=1e-12)
    np.testing.assert_allclose(s["var"], 0.9 + 0.1 * np.asarray(x).var(0, ddof=1), rtol=1e-12)
    # evaluation with running stats equal to the batch stats reproduces training mode
    y_eval = batchnorm.forward_eval(p, {"mean": mean, "var": var}, x)
    assert_close(y_eval, y)


def test_cross_entropy_is_stable_for_huge_logits(x64):
    z = jnp.array([[1000.0, 0.0, -1000.0], [0.0, 5000.0, 0.0]])
    loss, cache = losses.cross_entropy_forward(z, jnp.array([0, 1]))
    assert np.isfinite(float(loss)) and float(loss) == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.isfinite(np.asarray(losses.cross_entropy_backward(cache))))
    loss_wrong, _ = losses.cross_entropy_forward(z, jnp.array([2, 0]))
    assert float(loss_wrong) == pytest.approx((2000 + 5000) / 2)


# ---------------------------------------------------------------------------------------------
# The seed notebook's own unit tests, kept as regression tests


def test_seed_softmax_vector():
    p = losses.softmax(jnp.array([[-3.44, 1.16, -0.81, 3.91]]))[0]
    np.testing.assert_allclose(p, [0.0006, 0.0596, 0.0083, 0.9315], atol=5e-5)


SEED_Z = np.array([[1, 2, 3, 4], [2, 2, 3, 4], [5, 5, 5, 4]], np.float64)


def test_seed_softmax_table(x64):
    # The seed stored examples as COLUMNS ((classes, m) layout): softmax runs down each column.
    # We are batch-major, so the seed's table is softmax of the transpose, transposed back.
    p = np.asarray(losses.softmax(jnp.asarray(SEED_Z.T))).T
    e = np.exp(SEED_Z - SEED_Z.max(0))
    np.testing.assert_allclose(p, e / e.sum(0), rtol=1e-12)
    np.testing.assert_allclose(p[:, 0], [0.01714783, 0.04661262, 0.93623955], rtol=1e-6)
    np.testing.assert_allclose(p[:, 3], [1 / 3, 1 / 3, 1 / 3], rtol=1e-12)
    np.testing.assert_allclose(p.sum(0), 1, rtol=1e-12)


def test_seed_loss_value(x64):
    # y is the one-hot of each column's argmax (ties -> first index, as np.argmax did in the seed).
    z = jnp.asarray(SEED_Z.T)  # 4 examples x 3 classes
    y = jnp.argmax(z, axis=1)
    p = losses.softmax(z)
    assert float(losses.cross_entropy_probs(p, one_hot(y, 3))) == pytest.approx(0.37474097876709611, rel=1e-12)
    assert float(losses.cross_entropy_forward(z, y)[0]) == pytest.approx(0.37474097876709611, rel=1e-12)


def test_seed_one_hot_and_predict():
    y = np.array([1, 0, 3])
    np.testing.assert_array_equal(one_hot(y, 4), [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(back_one_hot(one_hot(y, 4)), y)
    # predict = argmax of the softmax = argmax of the logits
    np.testing.assert_array_equal(back_one_hot(losses.softmax(jnp.asarray(SEED_Z.T))), [2, 2, 2, 0])


@pytest.mark.parametrize("d_in, d_out", [(6, 5), (40, 8)])
@pytest.mark.parametrize("jit", MODES)
def test_linear_mixed_precision_is_bf16_operands_f32_accumulation(jit, d_in, d_out):
    """With matmul_dtype=bfloat16 every product equals the float64 product of the bf16-ROUNDED
    operands up to float32 accumulation (rtol 1e-5: ≤ 40 terms at ε32 ≈ 6e-8), outputs are float32,
    and the result differs from the plain float32 layer (so bf16 really is in effect)."""
    f32 = jnp.float32
    params = linear.init(jax.random.PRNGKey(0), d_in, d_out, "xavier", dtype=f32)
    params["b"] = jax.random.normal(jax.random.PRNGKey(9), (d_out,), f32)
    x = jax.random.normal(jax.random.PRNGKey(1), (7, d_in), f32)
    dy = jax.random.normal(jax.random.PRNGKey(2), (7, d_out), f32)

    def run(params, x, dy):
        y, cache = linear.forward(params, x, jnp.bfloat16)
        dx, g = linear.backward(params, cache, dy)
        return y, dx, g, cache

    y, dx, g, cache = maybe_jit(run, jit)(params, x, dy)
    r = lambda a: np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64)  # noqa: E731
    xb, Wb, dyb = r(x), r(params["W"]), r(dy)
    b = np.asarray(params["b"], np.float64)
    assert y.dtype == dx.dtype == g["W"].dtype == g["b"].dtype == jnp.float32
    assert cache.dtype == jnp.bfloat16  # the cache holds the rounded input
    np.testing.assert_allclose(y, xb @ Wb + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g["W"], xb.T @ dyb, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, dyb @ Wb.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g["b"], np.asarray(dy, np.float64).sum(0), rtol=1e-5, atol=1e-5)
    y32, _ = linear.forward(params, x)
    assert np.abs(np.asarray(y) - np.asarray(y32)).max() > 1e-4  # bf16 rounding is visible
