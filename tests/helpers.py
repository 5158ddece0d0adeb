"""Helpers shared by the tests (fixtures live in conftest.py)."""

import jax
import numpy as np

from jaxmlp import step
from jaxmlp.mlp import MLPConfig


def small_tc(**kw):
    model = kw.pop("model", MLPConfig(sizes=(16, 32, 10)))
    return step.TrainConfig(model=model, batch_size=kw.pop("batch_size", 50), **kw)


def leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))
