"""XLA compiler options for the training programs (the scanned epoch, sweeps, data-parallel epochs).

Contract::

    fn = jax.jit(train_epoch_fn, compiler_options=compiler.epoch_options())

``epoch_options()`` returns a dict of XLA ``DebugOptions`` for ``jax.jit(..., compiler_options=...)``:
empty unless the default backend is the CPU and this jaxlib knows every option (checked once, by
compiling a one-line program), so a jaxlib that drops an option runs with XLA's defaults instead of
failing.

Why: a training step updates each weight matrix in place inside the epoch's ``lax.scan``. XLA:CPU's
default copy-removal analysis cannot prove that every reader of the old weights (the forward product,
the input-gradient product, the L2 penalty) runs before the in-place update, so it keeps a copy of
each weight matrix at the top of every iteration. Its region-based live-range analysis
(``xla_cpu_copy_insertion_use_region_analysis``) proves the copies unnecessary and drops them. The
options change where buffers live, not the arithmetic: the same parameters come out, bit for bit
(tests/test_compiler.py). What the copies cost is measured in benchmarks/RESULTS.md ("Where the
step's time goes").
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

CPU_EPOCH_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}


@functools.cache
def _supported(backend: str) -> bool:
    try:
        jax.jit(lambda v: v + 1, compiler_options=CPU_EPOCH_OPTIONS).lower(jnp.float32(0)).compile()
    except (jax.errors.JaxRuntimeError, ValueError, TypeError):  # option unknown to this jaxlib
        return False
    return True


def epoch_options() -> dict:
    """Compiler options for the training programs on the default backend (a fresh dict)."""
    backend = jax.default_backend()
    if backend != "cpu" or not _supported(backend):
        return {}
    return dict(CPU_EPOCH_OPTIONS)
