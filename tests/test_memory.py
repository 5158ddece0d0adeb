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
