"""experiments/seed_model.py: the seed notebook's model — its gradients are right, its naive softmax blows up."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import seed_model as seed

from helpers import tree_rel_diff


@pytest.mark.parametrize(
    "setup", [seed.SeedSetup(), seed.SeedSetup(stable_softmax=True, bias=True)], ids=["seed", "fixed"]
)
def test_seed_gradients_equal_jax_grad(x64, setup):
    params = seed.init(jax.random.PRNGKey(0), setup, d_in=6, d_out=4)
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 6), jnp.float64)
    y = jax.random.randint(jax.random.PRNGKey(2), (8,), 0, 4)
    _, grads, _ = seed.loss_and_grads(params, x, y, setup)
    auto = jax.grad(lambda p: seed.loss_and_grads(p, x, y, setup)[0])(params)
    assert tree_rel_diff(grads, auto) <= 1e-10  # float64: both exact up to rounding
    if not setup.bias:  # the seed's biases get no gradient: they are not in the forward pass
        assert not np.asarray(grads[0]["b"]).any() and not np.asarray(grads[1]["b"]).any()


def test_naive_softmax_overflows_where_the_stable_one_does_not():
    z = jnp.array([[100.0, 0.0, -5.0]], jnp.float32)  # exp(100) overflows float32
    assert np.isnan(np.asarray(seed.naive_softmax(z))).any()
    from jaxmlp.ops.losses import softmax

    np.testing.assert_allclose(softmax(z)[0, 0], 1.0)


def test_seed_run_reports_the_blow_up_and_the_fix():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 20)).astype(np.float32)  # raw pixels, like the seed
    y = rng.integers(0, 3, 200)
    args = (jnp.asarray(x), jnp.asarray(y), jnp.asarray(x[:50]), jnp.asarray(y[:50]))
    blown = seed.run(seed.SeedSetup(steps=30, init="he", learning_rate=0.5), *args, key=jax.random.PRNGKey(0))
    assert blown["first_nonfinite_params_step"] is not None and np.isnan(blown["test_accuracy"])
    xs = (x - x.mean()) / x.std()
    fixed = seed.run(
        seed.SeedSetup(steps=30, normalize_inputs=True, stable_softmax=True, bias=True),
        jnp.asarray(xs),
        jnp.asarray(y),
        jnp.asarray(xs[:50]),
        jnp.asarray(y[:50]),
        key=jax.random.PRNGKey(0),
    )
    assert fixed["first_nonfinite_step"] is None and 0 <= fixed["test_accuracy"] <= 1
    assert fixed["loss"].shape == (30,)
