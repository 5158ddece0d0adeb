"""jaxmlp.memory: exact state sizes without allocating, the fit rule, and its one-line refusal."""

import jax
import pytest

from jaxmlp import memory, step
from jaxmlp.hyper import Hyper
from jaxmlp.mlp import MLPConfig

from helpers import small_tc


@pytest.mark.parametrize("optimizer, ema", [("sgd", None), ("adam", 0.9)])
def test_state_bytes_is_what_init_state_allocates(optimizer, ema):
    tc = small_tc(optimizer=optimizer, model=MLPConfig(sizes=(16, 32, 10), batchnorm=True))
    hyper = Hyper(ema_decay=ema).as_arrays()
    real = step.init_state(jax.random.PRNGKey(0), tc, hyper)
    assert memory.state_bytes(tc, hyper) == memory.tree_bytes(real)
    params = 16 * 32 + 2 * 32 + 32 * 10 + 10  # W, γ, β; W, b
    copies = {"sgd": 1, "adam": 3}[optimizer] + (ema is not None)  # params, optimizer moments, EMA
    assert memory.tree_bytes(real.params) == 4 * params and memory.tree_bytes(real) >= 4 * params * copies


def test_fit_rule_and_message():
    memory.check(89, 100, "x", "advice")  # 90% of what is free may be used
    with pytest.raises(ValueError, match=r"^the thing needs 1\.5 GiB but cpu memory has 1\.0 GiB free; shrink it$"):
        memory.check(int(1.5 * 2**30), 2**30, "the thing", "shrink it")
    memory.check(10**15, None, "x", "unknown memory: no check")
    assert memory.members_that_fit(10, 0, 100, 64) == 9 and memory.members_that_fit(10, 0, 5, 64) == 1
    assert memory.members_that_fit(10, 0, None, 64) == 64


def test_available_bytes_is_known_on_this_machine():
    have = memory.available_bytes()
    assert have is None or have > 0


def test_gradcheck_bytes_counts_four_copies_of_the_parameters_and_two_of_the_activations():
    """Against the count written out here: 784-300-100-10 has 784·300+300 + 300·100+100 + 100·10+10
    parameters, 8 bytes each in float64, held 4 times; a batch of 16 keeps 16·(784+300+100+10)
    activations twice."""
    config = MLPConfig(sizes=(784, 300, 100, 10))
    n_params = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert memory.gradcheck_bytes(config, 16, "float64") == 4 * 8 * n_params + 2 * 16 * 1194 * 8
    assert memory.gradcheck_bytes(config, 16, "float32") * 2 == memory.gradcheck_bytes(config, 16, "float64")


def test_the_headroom_is_a_tenth_of_the_free_memory():
    memory.check(900, 1000, "x", "y")  # exactly the usable 90%
    with pytest.raises(ValueError, match="x needs 0 MiB but .* memory has 0 MiB free; y"):
        memory.check(901, 1000, "x", "y")
