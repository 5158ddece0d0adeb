"""Test fixtures (helpers live in helpers.py): the float64 switch and a small learnable dataset."""

import os

import jax
import pytest

from jaxmlp import data

from helpers import make_idx_dataset

# No test reads or writes the user's layout cache (~/.cache/jaxmlp); the CLI's child processes inherit it.
# Tests of the cache give their own file.
os.environ["JAXMLP_LAYOUT_CACHE"] = "off"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small learnable problem (module-scoped): 16 features, 10 classes, 800 train / 200 dev / 200 test."""
    folder = make_idx_dataset(tmp_path_factory.mktemp("idx"), n_train=1000, n_test=200)
    return data.load_dataset("mnist", folder, dev_size=200, seed=0)


@pytest.fixture(autouse=True)
def _x64_restored():
    """Every test leaves jax_enable_x64 as it found it, even one that calls ``main(["gradcheck", ...])``
    (the command turns float64 on for its process): a leak makes later float32 tests fail far away."""
    old = jax.config.jax_enable_x64
    yield
    if jax.config.jax_enable_x64 != old:
        jax.config.update("jax_enable_x64", old)


@pytest.fixture
def x64():
    """float64 for this test only (jax_enable_x64 is global state: restore it afterwards)."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)
