"""Whole networks: the hand-written backward equals jax.grad and finite differences.

Matrix: activation {sigmoid, tanh, relu} × dropout {0, 0.3} × batch norm {off, on} × L2 {0, 1e-3}
× depth {1, 2, 3 hidden layers}, each with the same dropout key on both sides.
Tolerances (relative difference ‖g − ĝ‖/(‖g‖ + ‖ĝ‖) per parameter array):
  - float64 vs jax.grad ≤ 1e-10: both are exact up to rounding (~1e-16 seen); a wrong term is O(1).
  - float32 vs jax.grad ≤ 1e-4: rounding at ε32 ≈ 6e-8, amplified by BN's 1/σ and sums of 16 terms.
  - float64 vs central finite differences < 1e-7 (h = 1e-6: truncation ~h², rounding ~ε/h ≈ 1e-10).
"""

import itertools
import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import mlp
from jaxmlp.gradcheck import check_gradients, manual_and_autodiff
from jaxmlp.hyper import Hyper
from jaxmlp.ops import losses

from helpers import tree_rel_diff

MATRIX = list(itertools.product(["sigmoid", "tanh", "relu"], [0.0, 0.3], [False, True], [0.0, 1e-3], [1, 2, 3]))


def ids(c):
    act, dr, bn, l2, depth = c
    return f"{act}-drop{dr}-{'bn' if bn else 'nobn'}-l2{l2}-h{depth}"


def matrix_params(slow_unless_depth=None):
    """The matrix as pytest params; with ``slow_unless_depth``, other depths are marked slow
    (``make test`` keeps one depth of every combination; ``make test-all`` runs them all)."""
    out = []
    for c in MATRIX:
        marks = [pytest.mark.slow] if slow_unless_depth and c[-1] != slow_unless_depth else []
        out.append(pytest.param(c, id=ids(c), marks=marks))
    return out


def setup(act, dr, bn, l2, depth, dtype):
    config = mlp.MLPConfig(sizes=(6,) + (5,) * depth + (3,), activation=act, batchnorm=bn, init="xavier")
    params, state = mlp.init(jax.random.PRNGKey(depth), config, dtype=dtype)
    x = jax.random.normal(jax.random.PRNGKey(10), (8, 6), dtype)
    y = jax.random.randint(jax.random.PRNGKey(11), (8,), 0, 3)
    hyper = Hyper(dropout_rate=dr or None, l2=l2).as_arrays(dtype)  # rate 0: no dropout layer
    return config, params, state, (x, y), hyper


def per_array_max(a, b):
    return tree_rel_diff(a, b)


_jitted = jax.jit(manual_and_autodiff, static_argnames="config")


def check_float64(combo, f):
    config, params, state, batch, hyper = setup(*combo, jnp.float64)
    manual, auto = f(params, state, batch, hyper, jax.random.PRNGKey(5), config=config)
    assert jax.tree_util.tree_structure(manual) == jax.tree_util.tree_structure(params)
    assert per_array_max(manual, auto) <= 1e-10


@pytest.mark.parametrize("combo", matrix_params())
def test_backward_equals_jax_grad_float64_jit(x64, combo):
    check_float64(combo, _jitted)


@pytest.mark.parametrize("combo", matrix_params(slow_unless_depth=2))
def test_backward_equals_jax_grad_float64_eager(x64, combo):
    check_float64(combo, manual_and_autodiff)


@pytest.mark.parametrize("combo", matrix_params(slow_unless_depth=2))
def test_backward_equals_jax_grad_float32(combo):
    config, params, state, batch, hyper = setup(*combo, jnp.float32)
    manual, auto = _jitted(params, state, batch, hyper, jax.random.PRNGKey(5), config=config)
    assert jax.tree_util.tree_leaves(manual)[0].dtype == jnp.float32
    assert per_array_max(manual, auto) <= 1e-4


def perturbed(params, scale=0.3):
    """The parameters moved away from their initialization: γ ≠ 1, β ≠ 0, b ≠ 0, W changed."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(42), len(leaves))
    return treedef.unflatten([a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)])


def trained_like_params():
    """The matrix at depth 2 with batch norm in `make test` (where γ and β matter); the rest slow."""
    return [pytest.param(c, id=ids(c), marks=[] if c[-1] == 2 and c[2] else [pytest.mark.slow]) for c in MATRIX]


@pytest.mark.parametrize("combo", trained_like_params())
def test_backward_equals_jax_grad_at_trained_like_parameters(x64, combo):
    """The matrix again away from the initialization, where γ = 1 and β = b = 0 would hide a term
    (batch norm's backward without γ passes every test at initialization)."""
    config, params, state, batch, hyper = setup(*combo, jnp.float64)
    params = perturbed(params)
    assert not np.allclose(params[0].get("gamma", 0.0), 1.0)
    manual, auto = _jitted(params, state, batch, hyper, jax.random.PRNGKey(5), config=config)
    assert per_array_max(manual, auto) <= 1e-10


@pytest.mark.parametrize(
    "sizes",
    [
        (24, 6, 3),
        pytest.param((40, 10, 2), marks=pytest.mark.slow),
        pytest.param((48, 12, 3, 1), marks=pytest.mark.slow),
    ],
)
def test_backward_equals_jax_grad_where_weight_gradients_take_the_transposed_form(x64, sizes):
    """Layers that narrow by ≥ 4× compute dW as (dyᵀx)ᵀ (linear.weight_grad); the network's gradients
    there equal jax.grad (1e-10) and finite differences (1e-7), at perturbed parameters with batch norm."""
    config = mlp.MLPConfig(sizes=sizes, activation="tanh", batchnorm=True)
    assert any(4 * d_out <= d_in for d_in, d_out in zip(sizes[:-1], sizes[1:]))
    params, state = mlp.init(jax.random.PRNGKey(0), config, dtype=jnp.float64)
    report = check_gradients(
        config,
        Hyper(dropout_rate=0.2, l2=1e-3),
        key=jax.random.PRNGKey(1),
        params=perturbed(params),
        state=state,
        batch_size=8,
    )
    assert report.ok, report.to_dict()


FD_MATRIX = list(itertools.product(["sigmoid", "tanh", "relu"], [0.0, 0.3], [False, True], [1e-3], [2]))


@pytest.mark.parametrize("combo", FD_MATRIX, ids=[ids(c) for c in FD_MATRIX])
def test_backward_equals_finite_differences(x64, combo):
    act, dr, bn, l2, depth = combo
    config = mlp.MLPConfig(sizes=(4,) + (5,) * depth + (3,), activation=act, batchnorm=bn)
    report = check_gradients(
        config, Hyper(dropout_rate=dr or None, l2=l2), key=jax.random.PRNGKey(3), batch_size=6, fd_samples=1000
    )  # every coordinate of these small arrays
    assert all(r["finite_difference_coords"] == np.prod(r["shape"]) for r in report.arrays)
    assert report.max_rel_diff_vs_finite_differences < 1e-7
    assert report.max_rel_error_vs_autodiff <= 1e-10


def test_gradcheck_catches_a_wrong_backward(x64, monkeypatch):
    """The referee is not a rubber stamp: break one term of the tanh derivative and it fails."""
    from jaxmlp.ops import activations

    monkeypatch.setitem(activations._TABLE, "tanh", (activations.tanh_forward, lambda y, dy: dy * (1 - y)))
    report = check_gradients(
        mlp.MLPConfig(sizes=(4, 5, 3), activation="tanh"), Hyper(), key=jax.random.PRNGKey(0), batch_size=6
    )
    assert not report.ok
    assert report.max_rel_error_vs_autodiff > 1e-3
    assert report.max_rel_diff_vs_finite_differences > 1e-3


def test_shapes_structure_and_batchnorm_has_no_hidden_bias():
    config = mlp.MLPConfig(sizes=(7, 6, 5, 4), batchnorm=True)
    params, state = mlp.init(jax.random.PRNGKey(0), config)
    assert [sorted(p) for p in params] == [["W", "beta", "gamma"], ["W", "beta", "gamma"], ["W", "b"]]
    assert [p["W"].shape for p in params] == [(7, 6), (6, 5), (5, 4)]
    assert [sorted(s) for s in state] == [["mean", "var"], ["mean", "var"]]
    x = jnp.ones((3, 7))
    logits, new_state = mlp.forward(params, state, x, config=config, hyper=Hyper(), train=True)
    assert logits.shape == (3, 4)
    assert not np.allclose(new_state[0]["mean"], state[0]["mean"])  # training moved the running mean
    assert mlp.predict(params, state, x, config=config).shape == (3,)


def test_train_mode_updates_running_stats_and_eval_uses_them():
    config = mlp.MLPConfig(sizes=(3, 4, 2), batchnorm=True)
    params, state = mlp.init(jax.random.PRNGKey(0), config)
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 3)) * 3 + 5
    _, s1 = mlp.forward(params, state, x, config=config, hyper=Hyper(bn_momentum=0.5), train=True)
    z = np.asarray(x @ params[0]["W"])
    np.testing.assert_allclose(s1[0]["mean"], 0.5 * z.mean(0), rtol=1e-5)
    _, s2 = mlp.forward(params, s1, x, config=config, train=False)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(s2), jax.tree_util.tree_leaves(s1)))


def test_dropout_is_off_in_evaluation_and_needs_a_key_in_training():
    config = mlp.MLPConfig(sizes=(3, 8, 2))
    params, state = mlp.init(jax.random.PRNGKey(0), config)
    x = jnp.ones((4, 3))
    a, _ = mlp.forward(params, state, x, config=config, hyper=Hyper(dropout_rate=0.5), train=False)
    b, _ = mlp.forward(params, state, x, config=config, train=False)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="needs a key"):
        mlp.forward(params, state, x, config=config, hyper=Hyper(dropout_rate=0.5), train=True)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(sizes=(784,)), "layer sizes"),
        (dict(sizes=(784, 0, 10)), "layer sizes"),
        (dict(activation="swish"), "unknown activation"),
        (dict(init="zeros"), "unknown init"),
    ],
)
def test_config_rejects_bad_structure(bad, message):
    with pytest.raises(ValueError, match=message):
        mlp.MLPConfig(**bad)


def test_softmax_regression_has_no_hidden_layer(x64):
    config = mlp.MLPConfig(sizes=(5, 3))
    report = check_gradients(config, Hyper(l2=0.1), key=jax.random.PRNGKey(0), batch_size=4)
    assert report.ok and [r["name"] for r in report.arrays] == ["layer0.W", "layer0.b"]


def test_autodiff_loss_and_grads_is_a_drop_in_referee(x64):
    """The benchmark's jax.grad path returns the same cost, state, metrics and gradients."""
    config, params, state, batch, hyper = setup("relu", 0.3, True, 1e-3, 2, jnp.float64)
    key = jax.random.PRNGKey(4)
    a = mlp.loss_and_grads(params, state, batch, hyper, key, config=config)
    b = mlp.autodiff_loss_and_grads(params, state, batch, hyper, key, config=config)
    assert float(a[0]) == pytest.approx(float(b[0]), rel=1e-14)
    assert tree_rel_diff(a[1], b[1]) <= 1e-10
    assert tree_rel_diff(a[2], b[2]) == 0.0 and int(a[3]["correct"]) == int(b[3]["correct"])


@pytest.mark.parametrize("bn", [False, True])
def test_input_dropout_gradients(x64, bn):
    """Input dropout has no backward of its own: the first layer caches the dropped-out input."""
    config = mlp.MLPConfig(sizes=(6, 5, 4, 3), batchnorm=bn, activation="tanh")
    report = check_gradients(
        config,
        Hyper(dropout_rate=0.3, input_dropout_rate=0.4, l2=1e-3),
        key=jax.random.PRNGKey(2),
        batch_size=6,
        fd_samples=1000,
    )
    assert report.ok, report.to_dict()
    params, state = mlp.init(jax.random.PRNGKey(0), config)
    x = jnp.ones((200, 6))
    _, _, caches = mlp.forward_with_caches(
        params, state, x, config=config, hyper=Hyper(input_dropout_rate=0.4), train=True, key=jax.random.PRNGKey(1)
    )
    seen = np.asarray(caches.hidden[0][0])  # the first linear layer's input
    assert (seen == 0).mean() == pytest.approx(0.4, abs=0.03)
    np.testing.assert_allclose(seen[seen > 0], 1 / 0.6, rtol=1e-6)


# eager is slow here (≈ 14 s of op-by-op dispatch): `make test-all`; the op-level test runs eager always
@pytest.mark.parametrize("jit", [pytest.param(False, id="eager", marks=pytest.mark.slow), pytest.param(True, id="jit")])
@pytest.mark.parametrize("bn", [False, True], ids=["nobn", "bn"])
def test_mixed_precision_gradients(jit, bn):
    """matmul_dtype=bfloat16: the hand-written gradients equal jax.grad of the same mixed-precision
    cost, and the float32 gradients, to bf16 accuracy; they stay float32 and differ from float32's.

    Tolerances (tree_rel_diff, max over arrays): bf16 keeps 8 significant bits, unit roundoff
    2⁻⁸ ≈ 3.9e-3 per rounded operand. jax.grad rounds each weight cotangent to bf16 where the
    hand-written backward keeps the float32 accumulation, so the two differ by about one unit
    roundoff: ≤ 1e-2. Against float32 the operands of all eight products are rounded: ≤ 2e-2
    (tanh: no ReLU kink whose side a rounding could flip), and ≥ 1e-4, or bf16 was not in effect.
    """
    sizes = (40, 16, 16, 5)
    c32 = mlp.MLPConfig(sizes=sizes, activation="tanh", batchnorm=bn, init="xavier")
    cbf = mlp.MLPConfig(sizes=sizes, activation="tanh", batchnorm=bn, init="xavier", matmul_dtype="bfloat16")
    params, state = mlp.init(jax.random.PRNGKey(0), c32)
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 40), jnp.float32)
    y = jax.random.randint(jax.random.PRNGKey(2), (32,), 0, 5)
    hyper, key = Hyper(dropout_rate=0.2, l2=1e-3).as_arrays(jnp.float32), jax.random.PRNGKey(3)
    f = jax.jit(manual_and_autodiff, static_argnames="config") if jit else manual_and_autodiff
    manual, auto = f(params, state, (x, y), hyper, key, config=cbf)
    ref, _ = f(params, state, (x, y), hyper, key, config=c32)
    assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(manual))
    assert tree_rel_diff(manual, auto) <= 1e-2
    assert 1e-4 <= tree_rel_diff(manual, ref) <= 2e-2
    hlo = jax.jit(partial(mlp.loss_and_grads, config=cbf)).lower(params, state, (x, y), hyper, key).as_text()
    dots = [line for line in hlo.splitlines() if "stablehlo.dot_general" in line]
    assert len(dots) == 3 + 3 + 2  # forward, weight gradients, input gradients but the first layer's
    assert all(re.search(r"\(tensor<[\dx]+xbf16>, tensor<[\dx]+xbf16>\) -> tensor<[\dx]+xf32>", d) for d in dots)


def test_mixed_precision_config_round_trips_and_defaults():
    c = mlp.MLPConfig(sizes=(4, 3, 2), matmul_dtype="bfloat16")
    assert mlp.MLPConfig.from_dict(c.to_dict()) == c
    old = {k: v for k, v in c.to_dict().items() if k != "matmul_dtype"}  # written before the option
    assert mlp.MLPConfig.from_dict(old).matmul_dtype == "float32"
    with pytest.raises(ValueError, match="unknown matmul dtype 'float16'"):
        mlp.MLPConfig(sizes=(4, 2), matmul_dtype="float16")


def test_forward_with_caches_and_backward_compose_to_loss_and_grads(x64):
    """The public pieces of the hand-written path: forward_with_caches gives forward's logits and state
    plus the caches, and backward of the cross-entropy's dlogits is loss_and_grads' gradient (L2 = 0)."""
    config, params, state, (x, y), hyper = setup("tanh", 0.3, True, 0.0, 2, jnp.float64)
    key = jax.random.PRNGKey(7)
    logits, new_state, caches = mlp.forward_with_caches(
        params, state, x, config=config, hyper=hyper, train=True, key=key
    )
    plain_logits, plain_state = mlp.forward(params, state, x, config=config, hyper=hyper, train=True, key=key)
    assert np.array_equal(logits, plain_logits) and tree_rel_diff(new_state, plain_state) == 0.0
    _, ce_cache = losses.cross_entropy_forward(logits, y)
    grads = mlp.backward(params, caches, losses.cross_entropy_backward(ce_cache), config=config)
    _, reference, _, _ = mlp.loss_and_grads(params, state, (x, y), hyper, key, config=config)
    assert tree_rel_diff(grads, reference) == 0.0


def user_loss(forward_fn, config, hyper, train, key):
    """A function of the logits that is not cross-entropy, of params, state and the input."""

    def f(params, state, x):
        logits, _ = forward_fn(params, state, x, config=config, hyper=hyper, train=train, key=key)
        return jnp.sum(jnp.tanh(logits) ** 2) + jnp.sum(logits[:, 0] * x[:, 0])

    return f


REFEREE_CASES = [  # every transform and both modes in `make test`; the other four pairs slow
    pytest.param(
        train,
        transform,
        id=f"{'train' if train else 'eval'}-{transform}",
        marks=[]
        if (train, transform) in {(True, "jit"), (False, "plain"), (True, "vmap"), (False, "scan")}
        else [pytest.mark.slow],
    )
    for train in (True, False)
    for transform in ("plain", "jit", "vmap", "scan")
]


@pytest.mark.parametrize("train, transform", REFEREE_CASES)
def test_jax_grad_through_forward_equals_the_referee(x64, train, transform):
    """jax.grad through jm.forward runs the hand-derived rules (custom_vjp) and equals plain autodiff of
    the same forward (autodiff_forward) to 1e-10 in float64 — for parameters, the input and, in
    evaluation mode, the running statistics — with input dropout, dropout and batch norm (γ ≠ 1,
    β ≠ 0, running statistics ≠ their initial values)."""
    config = mlp.MLPConfig(sizes=(6, 5, 4, 3), activation="tanh", batchnorm=True, init="xavier")
    params, state = mlp.init(jax.random.PRNGKey(0), config, dtype=jnp.float64)
    params = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(3), a.shape), params)
    state = jax.tree_util.tree_map(lambda a: a + 0.3, state)
    xs = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 6), jnp.float64)  # three batches
    hyper = Hyper(dropout_rate=0.3, input_dropout_rate=0.2).as_arrays(jnp.float64)
    key = jax.random.PRNGKey(2)

    def gradients(forward_fn):
        grad = jax.grad(user_loss(forward_fn, config, hyper, train, key), argnums=(0, 1, 2))
        if transform == "plain":
            return grad(params, state, xs[0])
        if transform == "jit":
            return jax.jit(grad)(params, state, xs[0])
        if transform == "vmap":  # per-batch gradients
            return jax.vmap(grad, in_axes=(None, None, 0))(params, state, xs)

        def body(total, x):  # summed over batches inside a scan
            g = grad(params, state, x)
            return jax.tree_util.tree_map(jnp.add, total, g), None

        zero = jax.tree_util.tree_map(jnp.zeros_like, (params, state, xs[0]))
        return jax.lax.scan(body, zero, xs)[0]

    mine, referee = gradients(mlp.forward), gradients(mlp.autodiff_forward)
    assert tree_rel_diff(mine, referee) <= 1e-10
    dx = np.asarray(mine[2])
    assert np.abs(dx).max() > 0  # the first layer's input gradient exists
    if not train:
        assert np.abs(np.asarray(mine[1][0]["mean"])).max() > 0  # the running statistics' too


def test_jax_grad_through_forward_runs_the_hand_written_backward(x64, monkeypatch):
    calls = []
    real = mlp._backward

    def spy(*args, **kwargs):
        calls.append(kwargs.get("need_dx"))
        return real(*args, **kwargs)

    monkeypatch.setattr(mlp, "_backward", spy)
    config = mlp.MLPConfig(sizes=(4, 5, 3))
    params, state = mlp.init(jax.random.PRNGKey(0), config, dtype=jnp.float64)
    x = jnp.ones((2, 4))
    jax.grad(user_loss(mlp.forward, config, None, False, None), argnums=2)(params, state, x)
    assert calls == [True]
    jax.grad(user_loss(mlp.autodiff_forward, config, None, False, None), argnums=2)(params, state, x)
    assert calls == [True]  # the referee does not
