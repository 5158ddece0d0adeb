"""Optimizers and schedules: closed-form first steps, quadratic convergence (jitted and eager),
tree structure, traced hyperparameters, and N-step agreement with an independent NumPy reference."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import optim, schedules
from jaxmlp.hyper import Hyper, stack, validate

NAMES = list(optim.OPTIMIZERS)


def tree():
    return ({"W": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.1, -0.2])}, {"W": jnp.array([[4.0], [-1.0]])})


def grads_like(t, seed):
    leaves, treedef = jax.tree_util.tree_flatten(t)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)])


def test_adam_first_step_is_minus_lr_sign_g():
    p = tree()
    g = grads_like(p, 0)
    opt = optim.get("adam")
    updates, state = opt.update(g, opt.init(p), p, Hyper(learning_rate=0.01).as_arrays())
    for u, gl in zip(jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(g)):
        np.testing.assert_allclose(u, -0.01 * np.sign(gl), rtol=1e-5)  # |g|/(|g|+eps): eps = 1e-8
    assert int(state.count) == 1


@pytest.mark.parametrize(
    "name, expected",
    [
        ("sgd", lambda g, p: -0.1 * g),
        ("momentum", lambda g, p: -0.1 * g),  # v1 = g
        ("nesterov", lambda g, p: -0.1 * (g + 0.9 * g)),  # v1 = g, Δ = -η (g + μ v1)
        ("rmsprop", lambda g, p: -0.1 * g / (np.sqrt(0.1 * g * g) + 1e-8)),  # s1 = (1-ρ) g²
        ("adamw", lambda g, p: -0.1 * (np.sign(g) + 0.01 * p)),
    ],
)
def test_first_steps_closed_form(name, expected):
    p = tree()
    g = grads_like(p, 1)
    opt = optim.get(name)
    hyper = Hyper(learning_rate=0.1, weight_decay=0.01).as_arrays()
    updates, _ = opt.update(g, opt.init(p), p, hyper)
    for u, gl, pl in zip(*(jax.tree_util.tree_leaves(t) for t in (updates, g, p))):
        np.testing.assert_allclose(u, expected(np.asarray(gl), np.asarray(pl)), rtol=1e-5, atol=1e-7)


# Learning rates that converge on the quadratic below within the step budget.
QUAD_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "rmsprop": 0.01, "adam": 0.05, "adamw": 0.05}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", NAMES)
def test_converges_on_a_quadratic(name, jit):
    """f(θ) = ½ Σ c ⊙ (θ − θ*)², condition number 4; converge to < 1e-2 (stax's criterion)."""
    target = {"a": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array([[0.5], [-0.5]])}
    curv = {"a": jnp.array([1.0, 2.0, 4.0]), "b": jnp.array([[1.0], [3.0]])}
    params = jax.tree_util.tree_map(jnp.zeros_like, target)
    opt = optim.get(name)
    hyper = Hyper(learning_rate=QUAD_LR[name]).as_arrays()

    def step(carry, _):
        params, state = carry
        g = jax.tree_util.tree_map(lambda c, p, t: c * (p - t), curv, params, target)
        updates, state = opt.update(g, state, params, hyper)
        return (optim.apply_updates(params, updates), state), None

    carry = (params, opt.init(params))
    if jit:
        carry, _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=500))(carry)
    else:
        for _ in range(500):
            carry, _ = step(carry, None)
    err = max(
        float(jnp.max(jnp.abs(p - t)))
        for p, t in zip(jax.tree_util.tree_leaves(carry[0]), jax.tree_util.tree_leaves(target))
    )
    assert err < 1e-2


@pytest.mark.parametrize("name", NAMES)
def test_state_and_updates_keep_tree_structure(name):
    p = tree()
    opt = optim.get(name)
    state = opt.init(p)
    updates, new_state = opt.update(grads_like(p, 2), state, p, Hyper().as_arrays())
    assert jax.tree_util.tree_structure(updates) == jax.tree_util.tree_structure(p)
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
    assert type(new_state) is type(state)


def numpy_reference(name, params, grads_seq, h):
    """An independent NumPy implementation of each rule, written from the papers' formulas."""
    p = [np.array(x, np.float64) for x in params]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    for t, gs in enumerate(grads_seq, start=1):
        for i, g in enumerate(gs):
            g = np.asarray(g, np.float64)
            if name == "sgd":
                p[i] = p[i] - h["learning_rate"] * g
            elif name in ("momentum", "nesterov"):
                m[i] = h["momentum"] * m[i] + g
                d = g + h["momentum"] * m[i] if name == "nesterov" else m[i]
                p[i] = p[i] - h["learning_rate"] * d
            elif name == "rmsprop":
                v[i] = h["rho"] * v[i] + (1 - h["rho"]) * g**2
                p[i] = p[i] - h["learning_rate"] * g / (np.sqrt(v[i]) + h["eps"])
            else:
                m[i] = h["b1"] * m[i] + (1 - h["b1"]) * g
                v[i] = h["b2"] * v[i] + (1 - h["b2"]) * g**2
                mhat, vhat = m[i] / (1 - h["b1"] ** t), v[i] / (1 - h["b2"] ** t)
                wd = h["weight_decay"] * p[i] if name == "adamw" else 0.0
                p[i] = p[i] - h["learning_rate"] * (mhat / (np.sqrt(vhat) + h["eps"]) + wd)
    return p


@pytest.mark.parametrize("name", NAMES)
def test_50_steps_match_numpy_reference(name):
    """float32 JAX vs float64 NumPy over 50 steps: rtol 1e-4 (float32 rounding accumulates ~50·ε)."""
    h = dict(learning_rate=0.01, momentum=0.8, b1=0.85, b2=0.99, eps=1e-6, rho=0.95, weight_decay=0.05)
    p = tree()
    opt = optim.get(name)
    hyper = Hyper(**h).as_arrays()
    grads_seq = [grads_like(p, 100 + s) for s in range(50)]
    state = opt.init(p)
    update = jax.jit(opt.update)
    for g in grads_seq:
        u, state = update(g, state, p, hyper)
        p = optim.apply_updates(p, u)
    ref = numpy_reference(name, jax.tree_util.tree_leaves(tree()), [jax.tree_util.tree_leaves(g) for g in grads_seq], h)
    for got, want in zip(jax.tree_util.tree_leaves(p), ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_reordered_form_equals_textbook_formula_float64(name, x64):
    """Adam computes η m̂/(√v̂ + ε) as α_t m/(√v + ε̂) (one division per element). In float64, with ε
    as large as √v̂ (gradients ~1e-3, ε = 1e-3) so that where ε enters matters, 20 steps agree with
    the textbook formula to 1e-12 relative (only rounding differs); an unscaled ε would be off by
    ~10% at the first step (√(1 − β₂) = 0.1 here)."""
    h = dict(learning_rate=0.01, b1=0.9, b2=0.99, eps=1e-3, weight_decay=0.05)
    p = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), tree())
    grads_seq = [
        jax.tree_util.tree_map(lambda g: 1e-3 * g.astype(jnp.float64), grads_like(p, 200 + s)) for s in range(20)
    ]
    opt = optim.get(name)
    hyper = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), Hyper(**h).as_arrays())
    state = opt.init(p)
    for g in grads_seq:
        u, state = opt.update(g, state, p, hyper)
        p = optim.apply_updates(p, u)
    h = {k: float(getattr(hyper, k)) for k in h}  # Hyper stores float32: the reference uses the same values
    ref = numpy_reference(name, jax.tree_util.tree_leaves(tree()), [jax.tree_util.tree_leaves(g) for g in grads_seq], h)
    for got, want in zip(jax.tree_util.tree_leaves(p), ref):
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_hyperparameters_are_traced_not_baked_in():
    """One compiled update serves every learning rate, and vmap sweeps it (jax's testTracedStepSize)."""
    p = tree()
    g = grads_like(p, 3)
    opt = optim.get("adam")
    compiled = jax.jit(opt.update)
    traces = []

    def counting(g, s, p, h):
        traces.append(1)
        return opt.update(g, s, p, h)

    counted = jax.jit(counting)
    for lr in (0.1, 0.01, 0.001):
        counted(g, opt.init(p), p, Hyper(learning_rate=lr).as_arrays())
    assert len(traces) == 1
    swept = jax.vmap(lambda h: compiled(g, opt.init(p), p, h)[0])(
        stack([Hyper(learning_rate=lr) for lr in (0.1, 0.01)])
    )
    first = jax.tree_util.tree_leaves(swept)[0]
    np.testing.assert_allclose(first[0], 10 * first[1], rtol=1e-5)


def test_ema_of_parameters():
    p = {"w": jnp.array([0.0, 10.0])}
    ema = optim.ema_init(p)
    assert ema["w"] is not p["w"]
    ema = optim.ema_update(ema, {"w": jnp.array([1.0, 0.0])}, 0.9, 1, "constant")
    np.testing.assert_allclose(ema["w"], [0.1, 9.0], rtol=1e-6)


def _reference_ema(schedule, decay, thetas):
    """The three published forms written out in float64 NumPy, each its own way: TensorFlow's
    ExponentialMovingAverage(num_updates=t) for "warmup"; optax's ema(debias=True) — an accumulator
    from ZERO divided by 1 − dᵗ on read — for "debias"; the plain recurrence from θ₀ for "constant"."""
    theta0, out = thetas[0], []
    shadow = theta0.copy()  # warmup and constant start at θ₀
    acc = np.zeros_like(theta0)  # optax: m₀ = 0
    for t, th in enumerate(thetas[1:], start=1):
        if schedule == "warmup":
            d = min(decay, (1 + t) / (10 + t))
            shadow = d * shadow + (1 - d) * th
            out.append(shadow.copy())
        elif schedule == "debias":
            acc = decay * acc + (1 - decay) * th
            out.append(acc / (1 - decay**t))
        else:
            shadow = decay * shadow + (1 - decay) * th
            out.append(shadow.copy())
    return out


@pytest.mark.parametrize("schedule", optim.EMA_SCHEDULES)
@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9, 0.999])
def test_each_ema_schedule_equals_its_published_form(x64, schedule, decay):
    """300 updates of a random walk of parameters (past the warm-up's end for d = 0.9, well inside it
    for 0.999), jitted with the decay and the count traced, against ``_reference_ema``. float64 both
    ways and the same additions in a different order: 1e-12 relative."""
    rng = np.random.default_rng(0)
    thetas = list(np.cumsum(rng.normal(size=(301, 5)), axis=0))
    update = jax.jit(partial(optim.ema_update, schedule=schedule))
    ema = optim.ema_init({"w": jnp.asarray(thetas[0])})
    for t, (th, ref) in enumerate(zip(thetas[1:], _reference_ema(schedule, decay, thetas)), start=1):
        ema = update(ema, {"w": jnp.asarray(th)}, jnp.float64(decay), jnp.int32(t))
        np.testing.assert_allclose(ema["w"], ref, rtol=1e-12, atol=1e-12, err_msg=f"step {t}")


def test_ema_schedules_differ_where_they_should():
    """Decay 0 is every schedule's "no average" (sweeps give members without EMA decay 0); the
    warm-up ends at t = (10d − 1)/(1 − d); debias starts at β₁ = 0 and tends to d."""
    for s in optim.EMA_SCHEDULES:
        assert float(optim.ema_decay_at(s, 0.0, 7)) == 0.0
    assert (
        float(optim.ema_decay_at("warmup", 0.9, 79)) < np.float32(0.9) == float(optim.ema_decay_at("warmup", 0.9, 80))
    )
    assert float(optim.ema_decay_at("debias", 0.999, 1)) == 0.0
    np.testing.assert_allclose(float(optim.ema_decay_at("debias", 0.999, 50_000)), 0.999, rtol=1e-6)
    assert float(optim.ema_decay_at("constant", 0.999, 1)) == np.float32(0.999)
    with pytest.raises(ValueError, match="unknown EMA schedule 'polyak'; choose from warmup, debias, constant"):
        optim.ema_decay_at("polyak", 0.9, 1)


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        optim.get("lamb")


# ---------------------------------------------------------------------------------------------
# Schedules


def lr_at(kind, step, **kw):
    return float(schedules.learning_rate_at(kind, jnp.int32(step), Hyper(**kw).as_arrays()))


def test_schedules_closed_form():
    assert lr_at("constant", 500, learning_rate=0.1) == pytest.approx(0.1)
    assert lr_at("exponential", 50, learning_rate=0.1, decay_rate=0.5, decay_steps=100) == pytest.approx(
        0.1 * 0.5**0.5, rel=1e-6
    )
    assert lr_at("step", 199, learning_rate=0.1, decay_rate=0.5, decay_steps=100) == pytest.approx(0.05)
    assert lr_at("step", 200, learning_rate=0.1, decay_rate=0.5, decay_steps=100) == pytest.approx(0.025)
    assert lr_at("cosine", 0, learning_rate=0.1, total_steps=100) == pytest.approx(0.1)
    assert lr_at("cosine", 50, learning_rate=0.1, total_steps=100) == pytest.approx(0.05, rel=1e-6)
    assert lr_at("cosine", 100, learning_rate=0.1, total_steps=100, final_lr_fraction=0.1) == pytest.approx(
        0.01, rel=1e-5
    )
    assert lr_at("cosine", 1000, learning_rate=0.1, total_steps=100) == pytest.approx(0.0, abs=1e-9)


def test_linear_warmup_multiplies_any_schedule():
    assert lr_at("constant", 0, learning_rate=0.1, warmup_steps=10) == pytest.approx(0.01)
    assert lr_at("constant", 4, learning_rate=0.1, warmup_steps=10) == pytest.approx(0.05)
    assert lr_at("constant", 50, learning_rate=0.1, warmup_steps=10) == pytest.approx(0.1)
    assert lr_at("cosine", 4, learning_rate=0.1, warmup_steps=10, total_steps=100) == pytest.approx(
        0.05 * 0.5 * (1 + np.cos(np.pi * 0.04)), rel=1e-5
    )


def test_schedule_is_jittable_with_traced_parameters():
    f = jax.jit(lambda s, h: schedules.learning_rate_at("exponential", s, h))
    a = f(jnp.int32(100), Hyper(learning_rate=1.0, decay_rate=0.5, decay_steps=100).as_arrays())
    b = f(jnp.int32(100), Hyper(learning_rate=1.0, decay_rate=0.25, decay_steps=100).as_arrays())
    assert float(a) == pytest.approx(0.5) and float(b) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="unknown schedule"):
        schedules.learning_rate_at("onecycle", 0, Hyper())


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(learning_rate=0.0), "learning rate must be a finite number > 0"),
        (dict(learning_rate=-1.0), "learning rate"),
        (dict(learning_rate=float("nan")), "learning rate"),
        (dict(learning_rate=float("inf")), "learning rate"),
        (dict(dropout_rate=1.0), r"dropout rate must lie in \[0, 1\)"),
        (dict(dropout_rate=-0.1), "dropout"),
        (dict(b2=1.0), "b2"),
        (dict(l2=-1.0), "l2"),
        (dict(ema_decay=1.5), "ema decay"),
    ],
)
def test_validate_rejects_bad_hyperparameters(bad, message):
    with pytest.raises(ValueError, match=message):
        validate(Hyper(**bad))


def test_rmsprop_puts_eps_outside_the_square_root(x64):
    """RMSprop's ε is added to √s (as PyTorch), not inside the root as optax's √(s + ε): with ε large
    against √s the two differ by orders of magnitude, and ours matches the first (1e-12, float64)."""
    g = {"w": jnp.array([1e-3, -2e-3])}
    h = Hyper(learning_rate=0.1, rho=0.9, eps=1e-2).as_arrays(jnp.float64)
    opt = optim.get("rmsprop")
    updates, _ = opt.update(g, opt.init(g), g, h)
    s = 0.1 * np.array([1e-6, 4e-6])  # (1 − ρ) g²
    np.testing.assert_allclose(updates["w"], -0.1 * np.array([1e-3, -2e-3]) / (np.sqrt(s) + 1e-2), rtol=1e-12)
    assert not np.allclose(updates["w"], -0.1 * np.array([1e-3, -2e-3]) / np.sqrt(s + 1e-2), rtol=1e-2)
