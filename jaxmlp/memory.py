"""Memory: what a run needs against what the device has, checked before anything large is allocated.

Contract::

    have = available_bytes()                          # free memory of the default device (bytes)
    need = state_bytes(tc, hyper)                     # the TrainState, from jax.eval_shape (nothing allocated)
    check(need, have, "this run", "use narrower --hidden layers")  # ValueError, one line, both numbers
    need = program_bytes(compiled)                    # XLA's own buffer assignment of a compiled program
    k = members_that_fit(per_member, fixed, have, k)  # the largest sweep chunk that fits

A run is checked twice: before anything is allocated, with the exact size of its state
(``jax.eval_shape`` of ``step.init_state``) and of the training data it puts on the device; then, once
compiled, with XLA's own ``memory_analysis`` of the epoch program (arguments + outputs − donated
aliases + temporaries), which is what the program will hold at its peak. "Available" is the device's
free memory as its allocator reports it (GPUs, TPUs), or for the CPU the host's ``MemAvailable``, or the
room left under the process's cgroup memory limit where that is less.
``HEADROOM`` of it is left for what neither count sees (the evaluation chunks, the runtime itself).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np

from jaxmlp.step import TrainConfig, init_state

HEADROOM = 0.1  # fraction of the available memory kept free


def available_bytes(device=None) -> int | None:
    """Free memory of ``device`` (default: the first device) in bytes, or None when unknown."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # not every backend implements it
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    if device.platform != "cpu":
        return None
    host = _meminfo_available()
    limit = _cgroup_room()  # a container's memory limit, where the host's free memory would overstate it
    known = [v for v in (host, limit) if v is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """The cgroup (v2, else v1) memory limit minus what the group uses, or None where there is none."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 2**60:
                return None
            return int(limit) - int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
    return None


def tree_bytes(tree) -> int:
    """Bytes of every array (or ShapeDtypeStruct) leaf of ``tree``."""
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(tree))


def state_bytes(tc: TrainConfig, hyper) -> int:
    """Bytes of the TrainState ``init_state(key, tc, hyper)`` would allocate (computed abstractly)."""
    return tree_bytes(jax.eval_shape(lambda key: init_state(key, tc, hyper), jax.random.PRNGKey(0)))


GRADCHECK_COPIES = 4  # a gradient check holds the parameters, two gradients and autodiff's residuals


def gradcheck_bytes(config, batch_size: int, dtype) -> int:
    """A lower bound on what ``gradcheck.check_gradients`` allocates for ``config`` at ``dtype``: the
    parameters ``GRADCHECK_COPIES`` times over and the batch's activations twice (forward, backward)."""
    from jaxmlp.mlp import init

    params = jax.eval_shape(lambda key: init(key, config), jax.random.PRNGKey(0))
    elements = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))  # at any dtype, x64 or not
    return (GRADCHECK_COPIES * elements + 2 * batch_size * sum(config.sizes)) * np.dtype(dtype).itemsize


def gigabytes(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**27 else f"{n / 2**20:.0f} MiB"


def check(need: int, have: int | None, what: str, advice: str) -> None:
    """ValueError (one line) when ``need`` bytes exceed the usable part of ``have``; no check when the
    available memory is unknown."""
    if have is not None and need > (1 - HEADROOM) * have:
        raise ValueError(
            f"{what} needs {gigabytes(need)} but {jax.devices()[0].platform} memory has {gigabytes(have)} free; "
            f"{advice}"
        )


def program_bytes(compiled) -> int | None:
    """Peak bytes of a compiled program by XLA's buffer assignment, or None when not reported."""
    try:
        m = compiled.memory_analysis()
    except (AttributeError, NotImplementedError, jax.errors.JaxRuntimeError):
        return None
    if m is None:
        return None
    peak = getattr(m, "peak_memory_in_bytes", 0)
    if peak:
        return int(peak)
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


def members_that_fit(per_member: int, fixed: int, have: int | None, k: int) -> int:
    """The largest number of members (≤ k, ≥ 1) whose ``per_member`` bytes fit beside ``fixed``."""
    if have is None or per_member <= 0:
        return k
    return int(max(1, min(k, ((1 - HEADROOM) * have - fixed) // per_member)))
