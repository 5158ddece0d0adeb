"""How many members a sweep runs per compiled program: a cost model, and a cache of what was measured.

Contract::

    seconds = train_seconds(wide_tc, member_steps)       # the cost model's guess of a sweep's training
    pick = prior_pick(wide_tc, candidates)               # its layout, where nothing was measured
    probe_pays(wide_tc, member_steps, n_candidates)      # whether timing every candidate fits PROBE_SHARE
    key = cache_key(wide_tc, candidates, n_dev, shared_order, n_train)
    rates = cached(key)                                  # {members per program: seconds per member-step} or None
    remember(key, rates)                                 # after a probe

``jaxmlp.sweep`` times the candidates (``probe_layouts``) only where that can pay: where it would take
more than ``PROBE_SHARE`` of the sweep's training by the cost model (a compile per candidate against
the sweep's floating-point work at a backend's rough rate) the model's pick is taken instead. What a
probe measured is kept per machine and network shape in a small JSON file (``cache_path``:
``$JAXMLP_LAYOUT_CACHE``, else ``$XDG_CACHE_HOME/jaxmlp/layouts.json``, else
``~/.cache/jaxmlp/layouts.json``; ``JAXMLP_LAYOUT_CACHE=off`` turns it off), so the next sweep of that
shape on that machine starts at once with the measured pick. The cache is only ever a speed-up: a file
that cannot be read or written is ignored.

The model's constants are rough on purpose (measured on this project's machines, benchmarks/RESULTS.md
"Sweep layout"): they only decide whether a probe is worth its compiles and what to run without one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax

from jaxmlp.files import atomic_write

PROBE_SHARE = 0.1  # the most of a sweep's training time its layout probe may cost
FLOPS = {"cpu": 1e11, "gpu": 1e13, "tpu": 5e13}  # flop/s a training step sustains on a backend (rough)
COMPILE_SECONDS = {"cpu": 2.5, "gpu": 5.0, "tpu": 10.0}  # one probed program: compile, warm-up, timing
CPU_SINGLE_FLOPS = 1e8  # CPU: member-steps of at least this many flops run fastest one member per program
CACHE_ENV = "JAXMLP_LAYOUT_CACHE"


def step_flops(wide_tc) -> float:
    """Floating-point operations of one member's training step: 6 per weight per example (forward 2,
    backward 4), the dense layers' count."""
    sizes = wide_tc.model.sizes
    return 6.0 * wide_tc.batch_size * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def _backend() -> str:
    return jax.default_backend()


def train_seconds(wide_tc, member_steps: int) -> float:
    """The cost model's training time of ``member_steps`` member-steps on this backend."""
    return member_steps * step_flops(wide_tc) / FLOPS.get(_backend(), FLOPS["gpu"])


def probe_pays(wide_tc, member_steps: int, n_candidates: int) -> bool:
    """Whether timing ``n_candidates`` layouts costs at most ``PROBE_SHARE`` of the training, by the model."""
    cost = n_candidates * COMPILE_SECONDS.get(_backend(), COMPILE_SECONDS["gpu"])
    return cost <= PROBE_SHARE * train_seconds(wide_tc, member_steps)


def prior_pick(wide_tc, candidates) -> int:
    """The layout without a measurement: on a CPU, one member per program (the single-run program) for
    matmul-bound steps of ≥ ``CPU_SINGLE_FLOPS``, where a vmapped program is slower than its members
    alone; otherwise (small nets; GPUs and TPUs, where the vmap fills the device) as many as fit."""
    if _backend() == "cpu" and 1 in candidates and step_flops(wide_tc) >= CPU_SINGLE_FLOPS:
        return 1
    return max(candidates)


def cache_path() -> Path | None:
    """The cache file, or None when ``JAXMLP_LAYOUT_CACHE=off``."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return None if given.lower() == "off" else Path(given)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "jaxmlp" / "layouts.json"


def cache_key(wide_tc, candidates, n_dev: int, shared_order: bool, n_train: int) -> str:
    """What a measurement depends on: this machine's devices and JAX, the program's structure and shapes
    (not the epochs, the seed or the members' numbers)."""
    device = jax.devices()[0]
    config = wide_tc.to_dict()
    for name in ("epochs", "seed", "patience"):
        config.pop(name, None)
    parts = {
        "jax": jax.__version__,
        "device": f"{device.platform}:{device.device_kind}",
        "cores": os.cpu_count(),
        "devices": n_dev,
        "processes": jax.process_count(),
        "config": config,
        "shared_order": shared_order,
        "examples": n_train,
        "candidates": list(candidates),
    }
    return json.dumps(parts, sort_keys=True)


def _read(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def cached(key: str) -> dict | None:
    """{members per program: seconds per member-step} measured before for ``key``, or None."""
    path = cache_path()
    rates = _read(path).get(key) if path is not None else None
    try:
        return {int(c): float(s) for c, s in rates.items()} if isinstance(rates, dict) and rates else None
    except (TypeError, ValueError):
        return None


def remember(key: str, rates: dict) -> None:
    """Keep ``rates`` for ``key`` (atomically; nothing happens where the file cannot be written)."""
    path = cache_path()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        found = _read(path)
        found[key] = {str(c): s for c, s in rates.items()}
        with atomic_write(path) as f:
            f.write(json.dumps(found, indent=1) + "\n")
    except OSError:
        pass
