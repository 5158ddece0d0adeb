"""Search over a sweep's member axis: successive halving and population-based training (PBT).

Contract::

    halving_rungs(9, 3)                       # (1, 3, 9): the epochs at which members are compared
    ends = check(27, 9, halving=3)            # the same, after checking the options (ValueError)
    keep = promote(dev_accuracy, eta=3)       # indices of the members that go on from a rung
    src, values = pbt_plan(dev_accuracy, {"learning_rate": lrs}, rng, prior)   # who copies whom, new values
    ts, masks, hyper = exploit(ts, masks, hyper, src, values, axes=("learning_rate",))   # on device

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
width masks and hyperparameters of a member drawn uniformly from the top quarter, then explore: each
swept hyperparameter is multiplied by 0.8 or 1.2 (drawn independently), clipped to ``PERTURB_BOUNDS``.
A copy must differ from its source, or it would train as its bit-identical twin: where a value does not
move (0 × 0.8 is 0; a value clipped at its bound), the other factor is tried, and where neither moves
it (0), the value is resampled from the axis's starting values (``prior``) other than its own —
Jaderberg et al.'s "resample" exploration. A copy all of whose axes cannot move is impossible when one
axis has two starting values, which a swept axis has.

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
            every = "every epoch" if pbt == 1 else f"every {pbt} epochs"
            raise ValueError(f"PBT {every} over {epochs} never steps (give an interval < --epochs)")
        return tuple(range(pbt, epochs, pbt)) + (epochs,)
    return (epochs,)


def member_epochs(members: int, ends, halving: int | None = None) -> int:
    """Member-epochs a search of ``members`` over ``segment_ends`` trains: every member up to the first
    end, then (halving) the ⌊n/η⌋ survivors of each rung, at least 1."""
    total, n, previous = 0, members, 0
    for end in ends:
        total += n * (end - previous)
        previous = end
        if halving is not None:
            n = max(1, n // halving)
    return total


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


def explore(value: np.float32, axis: str, rng: np.random.Generator, prior=()) -> np.float32:
    """A copy's new value of ``axis`` from its source's ``value`` (float32): × 0.8 or × 1.2 (drawn),
    clipped to ``PERTURB_BOUNDS``; the other factor where that does not move it; else one of the
    ``prior`` values other than ``value`` (drawn); else ``value`` (nothing can move it)."""
    lo, hi = PERTURB_BOUNDS[axis]
    first = rng.integers(len(PERTURB_FACTORS))
    for f in (PERTURB_FACTORS[first], PERTURB_FACTORS[1 - first]):
        new = np.float32(np.clip(np.float32(value) * np.float32(f), lo, hi))
        if new != value:
            return new
    others = [np.float32(v) for v in prior if np.float32(v) != value]
    return others[rng.integers(len(others))] if others else np.float32(value)


def pbt_plan(dev_accuracy, values: dict, rng: np.random.Generator, prior: dict | None = None):
    """(src, new): member i continues from member ``src[i]`` (itself unless it is in the bottom quarter)
    with ``new[a][i]`` as its value of swept axis ``a`` — its own value unless copied, else ``explore``'s
    move from its source's. ``values``: per axis, every member's current value; ``prior``: per axis, its
    starting values (what a value at 0 is resampled from)."""
    n = len(dev_accuracy)
    order, q = _ranking(dev_accuracy), quarter(n)
    top, bottom = order[:q], order[n - q :] if q else order[:0]
    src = np.arange(n)
    new = {a: np.asarray(v, np.float32)[:n].copy() for a, v in values.items()}
    for dst in np.sort(bottom):
        src[dst] = rng.choice(top)
        for a in values:
            new[a][dst] = explore(np.float32(values[a][src[dst]]), a, rng, (prior or {}).get(a, ()))
    return src, new


def exploit(ts, masks, hyper, src, values: dict, axes: tuple):
    """Member i of the result is member ``src[i]`` (state, masks, hyperparameters); a copy (``src[i] ≠
    i``) takes ``values[a][i]`` as its swept hyperparameter ``a`` (``pbt_plan``'s exploration), a member
    that is not copied keeps its own values bit for bit. Pure; jit it with ``axes`` static."""
    copied = src != jnp.arange(src.shape[0])
    ts, masks, hyper = jax.tree_util.tree_map(lambda a: a[src], (ts, masks, hyper))
    changed = {a: jnp.where(copied, jnp.asarray(values[a], getattr(hyper, a).dtype), getattr(hyper, a)) for a in axes}
    return ts, masks, hyper._replace(**changed)
