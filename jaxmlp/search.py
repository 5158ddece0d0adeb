"""Search over a sweep's member axis: successive halving and population-based training (PBT).

Contract::

    halving_rungs(9, 3)                       # (1, 3, 9): the epochs at which members are compared
    ends = check(27, 9, halving=3)            # the same, after checking the options (ValueError)
    keep = promote(dev_accuracy, eta=3)       # indices of the members that go on from a rung
    src, factors = pbt_plan(dev_accuracy, ["learning_rate"], rng)   # who copies whom, and the ×0.8/×1.2
    ts, masks, hyper = exploit(ts, masks, hyper, src, factors, axes=("learning_rate",))   # on device

The rules are plain functions of the members' dev accuracies (host NumPy, a ``numpy.random.Generator``
for PBT's draws); ``exploit`` is the one device function, a gather over the member axis that
``jaxmlp.sweep`` compiles once, so a PBT step never recompiles the training program.

Successive halving (Jamieson & Talwalkar 2016, "Non-stochastic best arm identification and
hyperparameter optimization"; the rung rule of ASHA, Li et al. 2020): with E epochs and rate η the rungs
are the epochs round(E/ηᵏ), k = 0, 1, … while E/ηᵏ ≥ 1; at every rung but the last the top ⌊n/η⌋ of
the n members still training (at least 1) by dev accuracy go on and the others stop.

PBT (Jaderberg et al. 2017, "Population based training of neural networks"), truncation selection:
every interval the bottom quarter by dev accuracy (⌊n/4⌋ members, at least 1 when n ≥ 2) each copy the
whole training state (parameters, optimizer state, batch-norm statistics, EMA, RNG key, step count),
width masks and hyperparameters of a member drawn uniformly from the top quarter, then multiply each
swept hyperparameter by 0.8 or 1.2 (drawn independently), clipped to ``PERTURB_BOUNDS``.

Diverged members (dev accuracy NaN) rank below every finite accuracy; ties go to the lower index.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

PERTURB_FACTORS = (0.8, 1.2)

# The closed ranges PBT clips a perturbed value to: inside what ``hyper.validate`` accepts, with the
# open ends of probabilities and decays kept away from 1.
PERTURB_BOUNDS = {
    "learning_rate": (0.0, math.inf),  # × 0.8 never reaches 0
    "l2": (0.0, math.inf),
    "weight_decay": (0.0, math.inf),
    "eps": (0.0, math.inf),
    "init_scale": (0.0, math.inf),
    "warmup_steps": (0.0, math.inf),
    "decay_rate": (0.0, math.inf),
    "dropout_rate": (0.0, 0.95),
    "input_dropout_rate": (0.0, 0.95),
    "momentum": (0.0, 0.9999),
    "b1": (0.0, 0.9999),
    "b2": (0.0, 0.9999),
    "rho": (0.0, 0.9999),
    "ema_decay": (0.0, 0.9999),
    "bn_momentum": (0.0, 0.9999),
    "final_lr_fraction": (0.0, 1.0),
}


def halving_rungs(epochs: int, eta: int) -> tuple:
    """The epochs at which successive halving compares members, ascending; the last is ``epochs``."""
    if int(eta) != eta or eta < 2:
        raise ValueError(f"the halving rate η must be an integer ≥ 2, got {eta}")
    rungs, k = set(), 0
    while epochs / eta**k >= 1:
        rungs.add(max(1, round(epochs / eta**k)))
        k += 1
    return tuple(sorted(rungs))


def segment_ends(epochs: int, halving: int | None = None, pbt: int | None = None) -> tuple:
    """The epochs after which a sweep stops to decide (halving rungs, PBT intervals), ending at ``epochs``.
    ValueError for a search that would decide nothing (no rung or PBT step before the end)."""
    if halving is not None and pbt is not None:
        raise ValueError("successive halving and PBT are two searches: give --halving or --pbt, not both")
    if halving is not None:
        rungs = halving_rungs(epochs, halving)
        if len(rungs) == 1:
            raise ValueError(
                f"successive halving with η = {halving} over {epochs} epochs has no rung before the end "
                f"(give --epochs ≥ {halving})"
            )
        return rungs
    if pbt is not None:
        if int(pbt) != pbt or pbt < 1:
            raise ValueError(f"the PBT interval must be a whole number of epochs ≥ 1, got {pbt}")
        if pbt >= epochs:
            raise ValueError(f"PBT every {pbt} epochs of {epochs} never steps (give an interval < --epochs)")
        return tuple(range(pbt, epochs, pbt)) + (epochs,)
    return (epochs,)


def check(members: int, epochs: int, halving: int | None = None, pbt: int | None = None, axes=()) -> tuple:
    """``segment_ends`` of a search over ``members`` members sweeping ``axes``, after every check a
    user's options can fail (one-line ValueError): callers check before loading anything."""
    ends = segment_ends(epochs, halving, pbt)
    if halving is not None and members < 2:
        raise ValueError("successive halving compares members: give at least 2")
    if pbt is not None and not axes:
        raise ValueError("PBT perturbs the swept hyperparameters: sweep at least one (give an axis several values)")
    return ends


def _ranking(dev_accuracy) -> np.ndarray:
    """Member indices, best dev accuracy first; NaN last; ties by index."""
    acc = np.asarray(dev_accuracy, dtype=np.float64)
    return np.lexsort((np.arange(len(acc)), -np.nan_to_num(acc, nan=-np.inf)))


def promote(dev_accuracy, eta: int) -> np.ndarray:
    """Ascending indices of the ⌊n/η⌋ best members (at least 1): those that go on from a rung."""
    n = len(dev_accuracy)
    return np.sort(_ranking(dev_accuracy)[: max(1, n // eta)])


def quarter(n: int) -> int:
    """How many members PBT replaces (and draws sources from): ⌊n/4⌋, at least 1 when n ≥ 2."""
    return n // 4 if n >= 4 else min(n - 1, 1)


def pbt_plan(dev_accuracy, axes, rng: np.random.Generator):
    """(src, factors): member i continues from member ``src[i]`` (itself unless it is in the bottom
    quarter), and its swept hyperparameter ``a`` is multiplied by ``factors[a][i]`` (1 unless copied)."""
    n = len(dev_accuracy)
    order, q = _ranking(dev_accuracy), quarter(n)
    top, bottom = order[:q], order[n - q :] if q else order[:0]
    src = np.arange(n)
    factors = {a: np.ones(n, np.float32) for a in axes}
    for dst in np.sort(bottom):
        src[dst] = rng.choice(top)
        for a in axes:
            factors[a][dst] = rng.choice(PERTURB_FACTORS)
    return src, factors


def exploit(ts, masks, hyper, src, factors: dict, axes: tuple):
    """Member i of the result is member ``src[i]`` (state, masks, hyperparameters), its swept
    hyperparameters multiplied by ``factors`` and clipped to ``PERTURB_BOUNDS`` where the factor is not
    1 (a member that is not perturbed keeps its values bit for bit). Pure; jit it with ``axes`` static."""
    ts, masks, hyper = jax.tree_util.tree_map(lambda a: a[src], (ts, masks, hyper))
    changed = {}
    for a in axes:
        lo, hi = PERTURB_BOUNDS[a]
        v, f = getattr(hyper, a), factors[a]
        changed[a] = jnp.where(f != 1, jnp.clip(v * f, lo, hi), v)
    return ts, masks, hyper._replace(**changed)
