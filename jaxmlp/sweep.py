"""Sweeps: K hyperparameter settings (× seeds, × hidden widths) trained as ONE ``jit(vmap(...))`` program.

Contract::

    tc = TrainConfig(model=MLPConfig(sizes=(784, 100, 10)), epochs=5)
    members = grid(Hyper(), {"learning_rate": [1e-3, 1e-2], "l2": [0, 1e-4]}, seeds=2, hidden=[(100,)])
    result = run_sweep(ds, tc, members, chunk_size=None, axes=["learning_rate", "l2"],
                       out_dir="runs/sweep1")          # halving=3 or pbt=2: a search (jaxmlp.search)
    result.rows        # one dict per member: its hyperparameters, train_loss, dev/test accuracy, diverged

    # the pieces run_sweep is made of, for a sweep loop of one's own:
    wide_tc = padded_config(tc, members)
    ts, masks, hyper = stack_members(members, tc, wide_tc)   # leading member axis on every leaf
    epoch = make_epoch(wide_tc, shared_order=True)
    ts, metrics = epoch(ts, hyper, x, y, idx, masks)          # idx: batch_indices(...), shared

How it works:
  - Every member shares ``tc`` (structure: optimizer, schedule, activation, depth); its numbers are a
    ``Hyper`` with a leading member axis, so one compiled step serves them all and nothing recompiles.
    Members with and without an optional op (dropout, input dropout, EMA) share one program: those
    without it get its neutral value 0 (``hyper.align``; the best member's checkpoint records those
    aligned values, which match the state it holds).
  - Hidden widths are swept by masking: every member is padded to the widest layer; the padded
    weights start at exactly 0 and the padded units' activations are multiplied by a 0 mask, so their
    gradients, L2 terms and optimizer updates are exactly 0 forever and the member computes what its
    narrow model would (up to float summation order). With dropout, a padded member draws its masks at
    the padded shape, so it matches its narrow twin in distribution, not bit for bit.
  - Data order is SHARED by default: each epoch draws one permutation for all members (it differs
    only in the data key), so members differ only in their hyperparameters and seeds. Pass
    ``shared_order=False`` for per-member shuffles (each member's own key).
  - A member whose loss turns non-finite is reported ``diverged`` with its first bad step; lanes of a
    vmap never mix, so it cannot poison the others.
  - ``chunk_size``: members run in chunks of this size, one after the other (same compiled program);
    on several devices (of one or several processes) the member axis is sharded over a
    ``jax.sharding.Mesh`` with ``NamedSharding``. A chunk of one member runs the single-run program at
    the member's own widths (``make_member_epoch``), not a vmap of one. Without ``chunk_size`` a sweep
    with enough work times a few steps of each candidate (``layout_candidates``, ``probe_layouts``)
    and takes the fastest, never more members at a time than fit in memory.
  - ``halving=η`` / ``pbt=INTERVAL`` (``jaxmlp.search``): training stops at the rungs or PBT steps; the
    population is then gathered on the device (survivors re-stacked into a smaller member axis, or
    PBT's copies in place) and training goes on. A plain sweep is the one-segment case.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import chunks, compiler, memory, parallel, report, search
from jaxmlp.data import Dataset, batch_indices, check_batch_size
from jaxmlp.hyper import Hyper, align, validate
from jaxmlp.hyper import stack as stack_hypers
from jaxmlp.mlp import MLPConfig, _loss_and_grads, forward, loss_and_grads
from jaxmlp.run import OutputFolder, first_nonfinite, save_run
from jaxmlp.step import TrainConfig, _epoch, eval_params, init_state, with_cosine_horizon

SWEEPABLE = (
    "learning_rate",
    "l2",
    "dropout_rate",
    "input_dropout_rate",
    "momentum",
    "b1",
    "b2",
    "eps",
    "rho",
    "weight_decay",
    "ema_decay",
    "bn_momentum",
    "init_scale",
    "decay_rate",
    "warmup_steps",
    "final_lr_fraction",
)


@dataclass(frozen=True)
class Member:
    hyper: Hyper
    seed: int
    hidden: tuple  # this member's hidden widths (≤ the sweep's padded widths)

    def label(self, axes) -> dict:
        d = {name: float(getattr(self.hyper, name)) for name in axes}
        return {**d, "seed": self.seed, "hidden": ",".join(map(str, self.hidden))}


def parse_axis(text: str) -> tuple:
    """'1e-4:1e-1:log:8' (8 log-spaced), '0:0.5:lin:6' (6 evenly spaced) or '0,1e-4,1e-3' (a list)."""
    parts = text.split(":")
    try:
        if len(parts) == 4:
            lo, hi, scale, n = float(parts[0]), float(parts[1]), parts[2], int(parts[3])
            if n < 1 or scale not in ("log", "lin"):
                raise ValueError
            if scale == "log":
                if lo <= 0 or hi <= 0:
                    raise ValueError
                return tuple(float(v) for v in np.geomspace(lo, hi, n))
            return tuple(float(v) for v in np.linspace(lo, hi, n))
        if len(parts) == 1:
            return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        pass
    raise ValueError(
        f"cannot read sweep values {text!r}: use a list like 0,1e-4,1e-3 or a range like "
        f"1e-4:1e-1:log:8 (log needs positive ends) or 0:0.5:lin:6"
    )


def grid(base: Hyper, axes: dict, *, seeds: int = 1, hidden=((),), first_seed: int = 0) -> list:
    """Every combination of ``axes`` values × hidden options × ``seeds`` seeds."""
    for name in axes:
        if name not in SWEEPABLE:
            raise ValueError(f"cannot sweep {name!r}; sweepable: {', '.join(SWEEPABLE)}")
    names = list(axes)
    members = []
    for h in hidden:
        for values in itertools.product(*(axes[n] for n in names)):
            hyper = base._replace(**dict(zip(names, values)))
            validate(hyper)
            for s in range(seeds):
                members.append(Member(hyper, first_seed + s, tuple(h)))
    return members


def random_sample(base: Hyper, axes: dict, n: int, *, seeds: int = 1, hidden=((),), seed: int = 0, log_axes=()) -> list:
    """``n`` random points: each axis drawn between its min and max (log-uniform for ``log_axes``)."""
    rng = np.random.default_rng(seed)
    members = []
    for _ in range(n):
        point = {}
        for name, values in axes.items():
            lo, hi = min(values), max(values)
            if name in log_axes:
                point[name] = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            else:
                point[name] = float(rng.uniform(lo, hi))
        h = hidden[rng.integers(len(hidden))]
        hyper = base._replace(**point)
        validate(hyper)
        members.extend(Member(hyper, s, tuple(h)) for s in range(seeds))
    return members


# ---------------------------------------------------------------------------------------------
# Padding narrow members to the widest layer


def padded_config(tc: TrainConfig, members) -> TrainConfig:
    depth = {len(m.hidden) for m in members}
    if len(depth) != 1:
        raise ValueError(f"members of one sweep must have the same number of hidden layers, got {sorted(depth)}")
    widths = tuple(max(m.hidden[i] for m in members) for i in range(depth.pop()))
    sizes = (tc.model.sizes[0], *widths, tc.model.sizes[-1])
    # the vmapped program computes members' weight gradients as one product: plain layout (linear.weight_grad)
    return replace(tc, model=replace(tc.model, sizes=sizes, weight_grad_layout="plain"))


def narrow_config(tc: TrainConfig, member: Member) -> TrainConfig:
    """``tc`` with the member's own hidden widths."""
    return _with_hidden(tc, member.hidden)


def _with_hidden(tc: TrainConfig, hidden) -> TrainConfig:
    return replace(tc, model=replace(tc.model, sizes=(tc.model.sizes[0], *hidden, tc.model.sizes[-1])))


def member_state(member: Member, tc: TrainConfig, wide_tc: TrainConfig):
    """(TrainState padded to wide_tc, masks): exactly the state ``step.init_state`` gives the narrow
    member, with zeros (γ = 1, var = 1) in the padding."""
    hyper = member.hyper.as_arrays()
    narrow = init_state(jax.random.PRNGKey(member.seed), narrow_config(tc, member), hyper)
    wide = init_state(jax.random.PRNGKey(member.seed), wide_tc, hyper._replace(init_scale=jnp.float32(0)))

    ts = repad(wide, narrow)
    masks = tuple((jnp.arange(W) < w).astype(jnp.float32) for W, w in zip(wide_tc.model.sizes[1:-1], member.hidden))
    return ts, masks


def unpad(tree_wide, tree_narrow_template):
    """The narrow member's part of a padded tree (the leading corner of every leaf)."""
    return jax.tree_util.tree_map(lambda w, n: w[tuple(slice(0, s) for s in n.shape)], tree_wide, tree_narrow_template)


def repad(tree_wide, tree_narrow):
    """``tree_wide`` with its leading corners replaced by ``tree_narrow`` (the inverse of ``unpad``)."""
    return jax.tree_util.tree_map(lambda w, n: w.at[tuple(slice(0, s) for s in n.shape)].set(n), tree_wide, tree_narrow)


def _filled(part: list, size: int) -> list:
    """``part`` padded to ``size`` members with copies of its last (a fixed shape: one program)."""
    return part + [part[-1]] * (size - len(part))


def stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def stack_members(members, tc: TrainConfig, wide_tc: TrainConfig):
    """(ts, masks, hyper) of ``members`` padded to ``wide_tc``, each with a leading member axis.

    The members' ``Hyper`` values are ``align``ed first, so members with and without an optional op
    share one state structure."""
    members = [replace(m, hyper=h) for m, h in zip(members, align(m.hyper for m in members))]
    states, masks = zip(*(member_state(m, tc, wide_tc) for m in members))
    return stack(states), stack(masks), stack_hypers([m.hyper for m in members])


# ---------------------------------------------------------------------------------------------
# The compiled programs


def member_bytes(tc: TrainConfig, wide_tc: TrainConfig, members, shared_order: bool, n_train: int) -> tuple:
    """(bytes each member adds, bytes shared by all) of the sweep's compiled epoch on this backend, by
    XLA's buffer assignment of the programs for one and for two members, compiled from shapes alone
    (nothing is allocated). Where the backend reports no memory analysis: an estimate of three states
    per member (state, gradients, the step's temporaries) and the training data shared."""
    steps = n_train // tc.batch_size

    def program(k):
        ts, masks, hyper = jax.eval_shape(lambda: stack_members(members[:1] * k, tc, wide_tc))
        x = jax.ShapeDtypeStruct((n_train, wide_tc.model.sizes[0]), jnp.float32)
        y = jax.ShapeDtypeStruct((n_train,), jnp.int32)
        idx = jax.ShapeDtypeStruct((steps, tc.batch_size), jnp.int32)
        return memory.program_bytes(make_epoch(wide_tc, shared_order).lower(ts, hyper, x, y, idx, masks).compile())

    one, two = program(1), program(2)
    if one is None or two is None:
        per = 3 * memory.state_bytes(wide_tc, members[0].hyper.as_arrays())
        return per, n_train * (wide_tc.model.sizes[0] + 1) * 4
    return two - one, max(one - (two - one), 0)


def make_epoch(wide_tc: TrainConfig, shared_order: bool, donate: bool = True):
    """jit(vmap(epoch)) over the member axis: ``epoch(ts, hyper, x, y, idx, masks) -> (ts, metrics)``.

    x, y and ``idx`` (the shared batch order, used when ``shared_order``) are not batched; each member's
    gradients come from the width-masked hand-written backward. ``donate=False`` keeps the incoming
    state's buffers (benchmarks time one state repeatedly)."""

    def one(ts, h, x, y, idx, masks):  # without a shared order, each member draws its own from its key
        def grad_fn(params, state, batch, hyper, key):
            return _loss_and_grads(params, state, batch, hyper, key, wide_tc.model, masks)

        return _epoch(ts, h, x, y, wide_tc, idx if shared_order else None, grad_fn)

    fn = jax.vmap(one, in_axes=(0, 0, None, None, None, 0))
    return jax.jit(fn, donate_argnums=0 if donate else (), compiler_options=compiler.epoch_options())


def make_member_epoch(tc: TrainConfig, hidden, shared_order: bool, donate: bool = True):
    """One member trained by the single-run program (no vmap, its own ``hidden`` widths, the single
    run's weight-gradient layout), behind ``make_epoch``'s signature over a member axis of 1:
    ``epoch(ts, hyper, x, y, idx, masks) -> (ts, metrics)``. The padded state is cut to the member's
    widths before the epoch and put back after it (padding stays 0); ``masks`` are not needed. This is
    the sweep's layout of one member per program: exactly a single run's work."""
    narrow = _with_hidden(tc, hidden)
    grad_fn = partial(loss_and_grads, config=narrow.model)

    def one(ts, hyper, x, y, idx, masks):
        ts, hyper = jax.tree_util.tree_map(lambda a: a[0], (ts, hyper))
        shapes = jax.eval_shape(lambda h: init_state(jax.random.PRNGKey(0), narrow, h), hyper)
        small = unpad(ts, shapes)
        small, metrics = _epoch(small, hyper, x, y, narrow, idx if shared_order else None, grad_fn)
        ts = repad(ts, small)
        return jax.tree_util.tree_map(lambda a: a[None], (ts, metrics))

    return jax.jit(one, donate_argnums=0 if donate else (), compiler_options=compiler.epoch_options())


PROBE_MEMBER_STEPS = 64  # member-steps in one timed run of a layout probe


def layout_candidates(k: int, n_dev: int, fit: int) -> list:
    """Members per program worth timing: 1 (the single-run program; one device), n_dev × 4^i, and as
    many as fit in memory (at most the members there are)."""
    top = max(n_dev, min(fit, _padded(k, n_dev)))
    found = {top} | ({1} if n_dev == 1 else set())
    c = n_dev * (4 if n_dev == 1 else 1)
    while c < top:
        found.add(c)
        c *= 4
    return sorted(found)


def probe_layouts(candidates, members, tc: TrainConfig, wide_tc: TrainConfig, x, y, sharding=None, repeats: int = 3):
    """{members per program: seconds per member-step}, timed (median of ``repeats`` runs after a warm-up)
    on a few steps of each candidate's program, with the first members of the sweep (one member: the
    widest, the slowest alone) and the data it trains on. The candidate with the fewest seconds per
    member-step is the sweep's fastest layout here."""
    steps = x.shape[0] // tc.batch_size
    rates = {}
    for c in candidates:
        if c == 1:  # the single-run program at the widest member's widths: its slowest member
            part = [max(members, key=lambda m: sum(m.hidden))]
        else:
            part = _filled(members[:c], c)
        ts, masks, hyper = parallel.global_put(stack_members(part, tc, wide_tc), sharding)
        n = min(steps, max(2, math.ceil(PROBE_MEMBER_STEPS / c)))
        idx = batch_indices(jax.random.PRNGKey(0), x.shape[0], tc.batch_size)[:n]
        fn = make_member_epoch(tc, part[0].hidden, True, donate=False) if c == 1 else make_epoch(wide_tc, True, False)
        fn = fn.lower(ts, hyper, x, y, idx, masks).compile()
        jax.block_until_ready(fn(ts, hyper, x, y, idx, masks))
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(fn(ts, hyper, x, y, idx, masks))
            times.append(time.perf_counter() - t)
        rates[c] = float(np.median(times)) / (c * n)
    return rates


def choose_layout(
    candidates, members, tc, wide_tc, x, y, sharding=None, *, work: int, shared_order=True, probe=None, log=print
):
    """(members per program, {candidate: seconds per member-step}, probe seconds, how it was chosen) for a
    sweep of ``work`` member-steps. ``probe=None``: what an earlier sweep measured for this machine and
    shape (``chunks.cached``: "cache"), else the cost model's pick where timing the candidates would cost
    more than ``chunks.PROBE_SHARE`` of the training ("cost model"), else a probe ("probe"): the model's
    pick first, then the other candidates, stopping where the next one would take the probe past that
    share of the training its measured rates predict. ``True``: every candidate is timed; ``False``:
    the model's pick. Measured rates are kept (``chunks.remember``). Several processes take process 0's
    cache, decisions and pick."""
    n_train, n_dev = x.shape[0], 1 if sharding is None else sharding.mesh.size
    key = chunks.cache_key(wide_tc, candidates, n_dev, shared_order, n_train)
    prior = chunks.prior_pick(wide_tc, candidates)

    def per(c):
        return f"{c} member{'s' if c > 1 else ''} per program"

    if probe is None:
        rates = parallel.share(chunks.cached(key) if jax.process_index() == 0 else None)
        if rates:
            rates = {int(c): s for c, s in rates.items()}
            pick = min(rates, key=rates.get)
            log(f"layout: {per(pick)}, as measured before on this machine for this network ({chunks.cache_path()})")
            return pick, rates, 0.0, "cache"
        if not chunks.probe_pays(wide_tc, work, len(candidates)):
            log(
                f"layout: {per(prior)}, by the cost model (timing {len(candidates)} layouts would cost more than "
                f"{chunks.PROBE_SHARE:.0%} of this sweep)"
            )
            return prior, {}, 0.0, "cost model"
    elif probe is False:
        log(f"layout: {per(prior)}, by the cost model")
        return prior, {}, 0.0, "cost model"
    extremes = (min(candidates), max(candidates))  # the model's pick, the other extreme, the middle ones
    order = [prior, *sorted((c for c in candidates if c != prior), key=lambda c: (c not in extremes, -c))]
    rates, t0 = {}, time.perf_counter()
    for c in order:
        spent = time.perf_counter() - t0
        if rates and probe is None:
            next_cost, predicted = spent / len(rates), min(rates.values()) * work
            if parallel.agree(int(spent + next_cost > chunks.PROBE_SHARE * predicted)):
                break
        rates.update(probe_layouts([c], members, tc, wide_tc, x, y, sharding))
    spent = time.perf_counter() - t0
    pick = parallel.agree(min(rates, key=rates.get))  # process 0's
    if jax.process_index() == 0:
        chunks.remember(key, rates)
    log(f"layout: {per(pick)}, the fastest of {', '.join(map(str, rates))} in a {spent:.1f}s probe")
    return pick, rates, spent, "probe"


def make_eval(config: MLPConfig):
    """jit(vmap) of evaluation-mode accuracy: ``accuracy(params, bn_state, x, y) -> (K,)`` float64 NumPy,
    each member's correct predictions counted on the device and divided by the count on the host (so
    0.8053 is 0.8053, not float32's 0.80529999)."""

    def one(params, bn_state, x, y):
        logits, _ = forward(params, bn_state, x, config=config)
        return jnp.sum(jnp.argmax(logits, axis=-1) == y)

    count = jax.jit(jax.vmap(one, in_axes=(0, 0, None, None)))

    def accuracy(params, bn_state, x, y):
        correct = parallel.to_host(count(params, bn_state, x, y))
        return correct / x.shape[0] if x.shape[0] else np.full(correct.shape, np.nan)

    return accuracy


# ---------------------------------------------------------------------------------------------
# Running a sweep


@dataclass
class SweepResult:
    rows: list
    summary: dict
    history: list = field(default_factory=list)  # per epoch: (K,) train_loss and dev_accuracy (NaN: not trained)
    # the last chunk's padded TrainState, leading member axis (global arrays on several processes)
    final_state: object = None
    pbt_schedule: list = field(default_factory=list)  # PBT: per member, its hyperparameters after each step


PROGRESS_FILE = "sweep_progress.json"  # a plain sweep's record of its finished chunks, while it runs
PROGRESS_VERSION = 1


class SweepInterrupted(KeyboardInterrupt):
    """``run_sweep`` was interrupted (Ctrl-C, or SIGTERM turned into a KeyboardInterrupt with a
    ``signal_name`` attribute): the chunk in flight was abandoned. ``members_done`` of ``members`` had
    finished; with ``resumable``, their rows (``results.csv``), the best so far (``best_checkpoint.npz``)
    and ``PROGRESS_FILE`` are in ``out_dir``, and ``run_sweep(..., resume=True)`` trains the rest."""

    def __init__(self, members_done: int, members: int, out_dir, signal_name="SIGINT", resumable=True, search=False):
        super().__init__(f"sweep interrupted ({signal_name}) after {members_done} of {members} members")
        self.members_done, self.members, self.out_dir, self.signal_name = members_done, members, out_dir, signal_name
        self.resumable, self.search = resumable, search  # search: halving or PBT, which keep nothing until the end


def sweep_progress(out_dir) -> dict | None:
    """What an unfinished plain sweep in ``out_dir`` kept (``PROGRESS_FILE``): ``members_done``,
    ``members``, ``chunk_size``, …; None when there is none (no sweep, or a finished one)."""
    path = Path(out_dir) / PROGRESS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path} ({e}); start the sweep again with overwrite") from None


def _fingerprint(ds: Dataset, tc: TrainConfig, members, shared_order: bool, data_seed: int, axes) -> dict:
    """Everything that decides a plain sweep's results: a resumed sweep must share it with the one it
    continues (JSON-normalized, as it is stored)."""
    fp = {
        "dataset": ds.name,
        "examples": [int(ds.x_train.shape[0]), int(ds.x_dev.shape[0]), int(ds.x_test.shape[0])],
        "config": tc.to_dict(),
        "shared_order": shared_order,
        "data_seed": data_seed,
        "axes": list(axes),
        "devices": [jax.device_count(), jax.process_count()],
        "members": [{"seed": m.seed, "hidden": list(m.hidden), "hyper": m.hyper.to_dict()} for m in members],
    }
    return json.loads(json.dumps(fp))


def _difference(key: str, then, now) -> str:
    """One fingerprint entry that changed, in words: 'epochs 2, now 3' for a field of the config."""
    if isinstance(then, dict) and isinstance(now, dict):
        fields = [k for k in sorted(set(then) | set(now)) if then.get(k) != now.get(k)]
        flat = [f for f in fields if not isinstance(now.get(f), dict)]
        nested = [_difference(f, then.get(f), now.get(f)) for f in fields if isinstance(now.get(f), dict)]
        return "; ".join([*(f"{f} {then.get(f)}, now {now.get(f)}" for f in flat), *nested])
    if key == "members":
        return f"the members ({len(then or [])}, now {len(now)}, or their values)"
    return f"{key} {then}, now {now}"


def _restored(out_dir, fp: dict) -> dict:
    """The progress of the sweep to resume in ``out_dir``; ValueError (one line) when there is none or it
    was started with other settings than ``fp``."""
    kept = sweep_progress(out_dir)
    if kept is None:
        raise ValueError(
            f"{out_dir} holds no unfinished sweep ({PROGRESS_FILE}) to resume: it finished, or none started there"
        )
    if kept.get("version") != PROGRESS_VERSION:
        raise ValueError(
            f"{out_dir}/{PROGRESS_FILE} is of version {kept.get('version')}, this jaxmlp reads {PROGRESS_VERSION}: "
            "start the sweep again with overwrite"
        )
    then = kept.get("fingerprint", {})
    differ = [_difference(key, then.get(key), fp[key]) for key in fp if then.get(key) != fp[key]]
    if differ:
        raise ValueError(
            f"the sweep in {out_dir} was started with other settings ({'; '.join(differ)}): resume it with the same "
            "data and options, or start it again with overwrite"
        )
    return kept


def run_sweep(
    ds: Dataset,
    tc: TrainConfig,
    members: list,
    *,
    chunk_size: int | None = None,
    shared_order: bool = True,
    halving: int | None = None,
    pbt: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    probe: bool | None = None,
    progress: bool = False,
    data_seed: int = 0,
    n_devices: int | None = None,
    axes=(),
    out_dir=None,
    log=print,
) -> SweepResult:
    """Train ``members`` for ``tc.epochs`` epochs as one compiled program (in chunks of ``chunk_size``);
    evaluate each on dev and test; write ``results.csv``, ``summary.json``, the plot and the best
    member's checkpoint to ``out_dir``. ``axes``: the swept ``Hyper`` fields (columns and plot).
    ``out_dir`` is checked before training: a folder holding a sweep is refused unless ``overwrite``.

    A plain sweep keeps every finished chunk: after each, ``results.csv`` holds the finished members'
    rows, ``best_checkpoint.npz`` the best of them and ``PROGRESS_FILE`` what a resume needs (it goes
    when the sweep ends). ``resume=True`` continues such a sweep with the same arguments: the finished
    chunks are read back, the others trained as they would have been (same chunks, same programs), so
    the results equal those of a sweep run in one go. An interrupt raises ``SweepInterrupted``.

    Without ``chunk_size``, the members per program come from ``choose_layout``: ``probe=None`` times
    the candidates only where that costs at most ``chunks.PROBE_SHARE`` of the training (and reuses what
    an earlier sweep of this shape measured on this machine); ``True`` always times them, ``False``
    never (the cost model's pick). ``progress``: a bar over each chunk's epochs where stderr is a terminal.

    ``halving=η``: successive halving over the member axis (``jaxmlp.search``): at each rung only the
    best ⌊n/η⌋ members go on, re-stacked into a smaller member axis (one compile per distinct size).
    ``pbt=INTERVAL``: population-based training, every INTERVAL epochs the bottom quarter copies a
    top-quarter member and perturbs ``axes`` (a gather over the member axis; no recompiles); its random
    draws come from ``numpy.random.default_rng(data_seed)``. A search's members depend on each other
    until its last decision: it writes its files when it ends, and cannot be resumed."""
    if not members:
        raise ValueError("a sweep needs at least one member")
    if ds.x_dev.shape[0] == 0:
        raise ValueError("a sweep ranks its members by dev accuracy: give the data a dev split (dev_size > 0)")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk size must be ≥ 1, got {chunk_size}")
    search.check(len(members), tc.epochs, halving, pbt, axes)  # the search's own mistakes, before the folder
    if resume and (halving is not None or pbt is not None):
        raise ValueError("resume continues a plain sweep; a search (halving, pbt) keeps nothing until it ends")
    if resume and out_dir is None:
        raise ValueError("resume needs out_dir, the folder of the sweep to continue")
    writes = out_dir is not None and jax.process_index() == 0  # several processes: process 0 writes
    folder = OutputFolder.claim(out_dir, resume=resume, overwrite=overwrite) if writes else None
    fp = _fingerprint(ds, tc, members, shared_order, data_seed, axes)
    restored = None
    if resume:  # process 0 reads what was kept; every process continues from it (or learns the refusal)
        kept = None
        if writes:
            try:
                kept = {"progress": _restored(folder.path, fp)}
            except ValueError as e:
                kept = {"refused": str(e)}
        kept = parallel.share(kept)
        if "refused" in kept:
            raise ValueError(kept["refused"])
        restored = kept["progress"]
        if chunk_size is not None and chunk_size != restored["chunk_size"]:
            raise ValueError(
                f"the sweep in {out_dir} runs in chunks of {restored['chunk_size']}: resume it with that chunk size "
                f"(or none), not {chunk_size}"
            )
    done = [0 if restored is None else len(restored["done"])]

    def keep(progress, rows, best):
        """After each finished chunk of a plain sweep: its rows, the best so far, what a resume needs."""
        folder.start()  # --overwrite: the earlier run's files go now, just before the new ones are written
        if best is not None:
            write_best(folder.path, ds, tc, best)
        report.write_csv(folder.path / "results.csv", rows)
        report.write_json(folder.path / PROGRESS_FILE, {"version": PROGRESS_VERSION, "fingerprint": fp, **progress})
        done[0] = len(progress["done"])

    try:
        result, best = _sweep(
            ds,
            tc,
            members,
            chunk_size,
            shared_order,
            (halving, pbt),
            data_seed,
            n_devices,
            axes,
            log,
            restored=restored,
            keep=keep if writes else None,
            probe_mode=probe,
            progress=progress,
        )
        if folder is not None:
            folder.start()
            write_outputs(folder.path, result, ds, tc, best)
            (folder.path / PROGRESS_FILE).unlink(missing_ok=True)  # the sweep is whole: nothing to resume
    except KeyboardInterrupt as e:  # while training, or while the last files were written (a resume rewrites them)
        # an --overwrite that had not written yet leaves the earlier sweep's progress: not this one's
        kept = folder is not None and not folder.replaced and (folder.path / PROGRESS_FILE).is_file()
        if folder is not None and not kept:
            folder.abandon()
        name = getattr(e, "signal_name", "SIGINT")
        raise SweepInterrupted(
            done[0], len(members), out_dir, name, resumable=kept, search=halving is not None or pbt is not None
        ) from None
    except BaseException:
        if folder is not None:
            folder.abandon()  # a sweep that fails before writing anything leaves no folder behind
        raise
    return result


def _padded(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def _sweep(
    ds,
    tc,
    members,
    chunk_size,
    shared_order,
    how,
    data_seed,
    n_devices,
    axes,
    log,
    *,
    restored,
    keep,
    probe_mode,
    progress,
):
    """run_sweep's training and evaluation: (SweepResult, the best member or None; its state None when
    ``keep`` has written it already).

    ``restored``: a resumed plain sweep's progress (the same on every process): its finished chunks are
    skipped, their members' histories and the best of them taken as they were. ``keep(progress,
    rows, best)``: called after each finished chunk of a plain sweep (``best``: the new best member, or
    None when it did not change).

    The members still training sit in slots of a population split into chunks of one size. Each segment
    (the epochs up to the next halving rung or PBT step, or all of them) trains every chunk; between
    segments the population is gathered on the device: the survivors of a rung (re-stacked, a smaller
    member axis) or PBT's copies. A plain sweep has one segment and stacks each chunk only when it runs."""
    halving, pbt = how
    ends = search.segment_ends(tc.epochs, halving, pbt)
    n_train = ds.x_train.shape[0]
    check_batch_size(tc.batch_size, n_train)
    wide_tc = padded_config(tc, members)
    steps = n_train // tc.batch_size
    members = [replace(m, hyper=with_cosine_horizon(m.hyper, tc, steps)) for m in members]
    members = [replace(m, hyper=h) for m, h in zip(members, align(m.hyper for m in members))]
    k = len(members)
    sharding, replicated = parallel.member_shardings(n_devices)
    n_dev = 1 if sharding is None else sharding.mesh.size
    have = memory.available_bytes()
    if jax.process_count() > 1 and have is not None:  # one verdict everywhere: the tightest process's memory
        have = parallel.smallest(have // 2**20) * 2**20
    narrower = "use narrower or fewer --hidden layers"  # what helps when one member does not fit
    data = sum(a.nbytes for a in (ds.x_train, ds.y_train, ds.x_dev, ds.y_dev, ds.x_test, ds.y_test))
    one_state = memory.state_bytes(wide_tc, members[0].hyper.as_arrays())
    sizes = "-".join(map(str, wide_tc.model.sizes))
    # before anything compiles (member_bytes compiles two programs): lower bounds, from shapes alone
    memory.check(one_state + data, have, f"one member of this sweep ({sizes}: its state and the data)", narrower)
    if chunk_size is not None and chunk_size > 1:
        c = _padded(chunk_size, n_dev) // n_dev
        memory.check(c * one_state + data, have, f"a chunk of {chunk_size} members", "use a smaller --chunk-size")
    per_member, shared = member_bytes(tc, wide_tc, members, shared_order, n_train)
    shared += sum(a.nbytes for a in (ds.x_dev, ds.y_dev, ds.x_test, ds.y_test))
    memory.check(per_member + shared, have, f"one member of this sweep's compiled epoch ({sizes})", narrower)
    if len(ends) > 1:  # a search keeps every member's state between its decisions
        shared += _padded(k, n_dev) * memory.state_bytes(wide_tc, members[0].hyper.as_arrays())
    if restored is not None:  # the chunks of the sweep it continues: the same programs, the same numbers
        chunk = restored["chunk_size"]
        memory.check(per_member * (chunk // n_dev) + shared, have, f"a chunk of {chunk} members", "resume elsewhere")
    elif chunk_size is None:  # per device: its share of the members, and the replicated data
        chunk = memory.members_that_fit(per_member, shared, have, math.ceil(k / n_dev)) * n_dev
        if chunk < k:
            log(
                f"memory: {chunk} of {k} members fit at a time ({memory.gigabytes(per_member)} each, "
                f"{memory.gigabytes(have)} free); running them in chunks"
            )
    else:
        chunk = _padded(chunk_size, n_dev)  # the member axis must split evenly over devices
        memory.check(
            per_member * (chunk // n_dev) + shared, have, f"a chunk of {chunk} members", "use a smaller --chunk-size"
        )
    if restored is None:  # several processes: one chunk size, the one that fits on every one
        chunk = parallel.smallest(chunk)
    x_train, y_train = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    x_dev, y_dev = jnp.asarray(ds.x_dev), jnp.asarray(ds.y_dev)
    x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
    if replicated is not None:  # the same values on every device of every process
        x_train, y_train, x_dev, y_dev, x_test, y_test = parallel.global_put(
            (ds.x_train, ds.y_train, ds.x_dev, ds.y_dev, ds.x_test, ds.y_test), replicated
        )
    probe, probe_s = {}, 0.0
    chosen_by = "chunk_size" if chunk_size is not None else "resumed" if restored is not None else "one member"
    if chunk_size is None and restored is None and k > 1:
        work = search.member_epochs(k, ends, halving) * steps
        candidates = layout_candidates(k, n_dev, chunk)
        chunk, probe, probe_s, chosen_by = choose_layout(
            candidates,
            members,
            tc,
            wide_tc,
            x_train,
            y_train,
            sharding,
            work=work,
            shared_order=shared_order,
            probe=probe_mode,
            log=log,
        )
    epoch_fn = make_epoch(wide_tc, shared_order)
    eval_fn = make_eval(wide_tc.model)
    data_key = jax.random.PRNGKey(data_seed)
    on_members = {} if sharding is None else {"out_shardings": sharding}

    def take(tree, pos):
        return jax.tree_util.tree_map(lambda a: a[pos], tree)

    gather = jax.jit(take, **on_members)
    concat = jax.jit(lambda trees: jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *trees), **on_members)
    exploit_fn = jax.jit(partial(search.exploit, axes=tuple(axes)), **on_members)
    pick = jax.jit(take, **({} if replicated is None else {"out_shardings": replicated}))
    rng = np.random.default_rng(data_seed)
    prior = {a: sorted({float(np.float32(getattr(m.hyper, a))) for m in members}) for a in axes}  # PBT's resample

    # what each member did, on the host: NaN where it did not train
    dev_hist = np.full((tc.epochs, k), np.nan)
    loss_hist = np.full((tc.epochs, k), np.nan)
    first_bad = np.full(k, -1)
    test = np.full(k, np.nan)
    trained = np.zeros(k, dtype=int)
    hidden_now = [m.hidden for m in members]
    lineage = [[] for _ in range(k)]
    schedule = [[{"epoch": 0, **{a: float(np.float32(getattr(m.hyper, a))) for a in axes}}] for m in members]
    final_hyper = [m.hyper for m in members]
    programs, compile_s, train_s = {}, 0.0, 0.0
    member_epochs, population = 0, []
    best, ts = None, None
    skip = 0 if restored is None else restored["chunks_done"]
    if restored is not None:  # the finished members, as they were
        ids = restored["done"]
        dev_hist[:, ids] = np.array(restored["dev_accuracy"], dtype=float).T
        loss_hist[:, ids] = np.array(restored["train_loss"], dtype=float).T
        test[ids], first_bad[ids], trained[ids] = restored["test_accuracy"], restored["first_bad"], tc.epochs
        compile_s, train_s = restored["compile_seconds"], restored["train_seconds"]
        member_epochs = len(ids) * tc.epochs
        for m, values in zip(ids, restored["final_hyper"]):
            final_hyper[m] = final_hyper[m]._replace(**dict(zip(axes, values)))
        if restored["best"] is not None:  # its checkpoint is on disk already
            best = (restored["best"]["dev_accuracy"], restored["best"]["member"], None)
    finished = [] if restored is None else list(restored["done"])
    if restored is not None:
        rest = f"the rest train in chunks of {chunk}" if len(finished) < k else "writing the sweep's files"
        log(f"resuming: {len(finished)} of {k} members had finished; {rest}")

    def program(tree, hidden):
        """The compiled epoch for a chunk of this many members: vmapped, or for one member on one device
        the single-run program at its own widths."""
        nonlocal compile_s
        ts_, masks_, hyper_ = tree
        size = jax.tree_util.tree_leaves(ts_.params)[0].shape[0]
        key = (size, hidden if size == 1 and n_dev == 1 else None)
        if key not in programs:
            fn = make_member_epoch(tc, hidden, shared_order) if key[1] is not None else epoch_fn
            idx0 = batch_indices(jax.random.fold_in(data_key, 0), n_train, tc.batch_size)
            t = time.perf_counter()
            programs[key] = fn.lower(ts_, hyper_, x_train, y_train, idx0, masks_).compile()
            compile_s += time.perf_counter() - t
            memory.check(
                memory.program_bytes(programs[key]) or 0,
                have,
                f"the compiled epoch of {size} member{'s' if size > 1 else ''} at a time",
                "give a smaller --chunk-size, or use narrower --hidden layers" if size > 1 else narrower,
            )
        return programs[key]

    def row(m: int) -> dict:
        """Member ``m``'s line of results.csv, from what it did (its last trained epoch)."""
        member, diverged, e = members[m], bool(first_bad[m] >= 0), trained[m] - 1
        out = {
            "member": m,
            **member.label(axes),
            "train_loss": float(loss_hist[e, m]) if not diverged else float("nan"),
            "dev_accuracy": float(dev_hist[e, m]) if not diverged else float("nan"),
            "test_accuracy": float(test[m]) if not diverged else float("nan"),
            "diverged": diverged,
            "diverged_at_step": int(first_bad[m]) if diverged else None,
        }
        if halving is not None:
            out["rung"] = ends.index(trained[m])
            out["epochs_trained"] = int(trained[m])
            out.update({f"dev_accuracy_epoch_{r}": float(dev_hist[r - 1, m]) for r in ends})
        if pbt is not None:
            out["lineage"] = " ".join(lineage[m])
            out.update({f"final_{a}": float(getattr(final_hyper[m], a)) for a in axes})
            if hidden_now[m] != member.hidden:
                out["final_hidden"] = ",".join(map(str, hidden_now[m]))
        return out

    def best_member(m: int) -> Member:
        """Member ``m`` as its checkpoint records it: the values and widths it ended with."""
        return replace(members[m], hyper=final_hyper[m], hidden=hidden_now[m])

    slots, pop, start = list(range(k)), None, 0  # pop: the chunks' (ts, masks, hyper), kept between segments
    for end in ends:
        last = end == tc.epochs
        size = min(chunk, _padded(len(slots), n_dev))
        population.append(len(slots))
        trees = []
        for ci, c0 in enumerate(range(0, len(slots), size)):
            ids = slots[c0 : c0 + size]
            if ci < skip:  # resumed: this chunk finished before
                continue
            if pop is None:
                part = [members[i] for i in ids]
                tree = parallel.global_put(stack_members(_filled(part, size), tc, wide_tc), sharding)
            else:
                tree = pop[ci]
            ts, masks, hyper = tree
            fn = program(tree, hidden_now[ids[0]])
            which = f"members {ids[0]}–{ids[-1]}" if len(ids) > 1 else f"member {ids[0]}"
            for e in report.progress(range(start, end), progress, desc=which):
                idx = batch_indices(jax.random.fold_in(data_key, e), n_train, tc.batch_size)
                t = time.perf_counter()
                ts, metrics = fn(ts, hyper, x_train, y_train, idx, masks)
                losses = parallel.to_host(metrics["loss"])[: len(ids)]  # (members, steps); blocks
                train_s += time.perf_counter() - t
                bad_now = first_nonfinite(losses)
                for j, m in enumerate(ids):
                    if first_bad[m] < 0 and bad_now[j] >= 0:
                        first_bad[m] = e * steps + bad_now[j] + 1
                loss_hist[e, ids] = losses.mean(axis=1)
                dev = eval_fn(eval_params(ts), ts.bn_state, x_dev, y_dev)[: len(ids)]
                dev_hist[e, ids] = np.where(first_bad[ids] >= 0, np.nan, dev)  # a diverged member ranks last
            trained[ids] = end
            member_epochs += len(ids) * (end - start)
            if last or halving is not None:  # a member's test accuracy is the one at its last epoch
                test[ids] = eval_fn(eval_params(ts), ts.bn_state, x_test, y_test)[: len(ids)]
            if last:
                hyper_host = parallel.to_host(hyper)
                before = best
                for j, m in enumerate(ids):
                    final_hyper[m] = final_hyper[m]._replace(**{a: float(getattr(hyper_host, a)[j]) for a in axes})
                    if first_bad[m] < 0 and (best is None or dev_hist[end - 1, m] > best[0]):
                        best = (dev_hist[end - 1, m], m, jax.tree_util.tree_map(np.asarray, pick(ts, j)))
                finished += ids
                if keep is not None and len(ends) == 1:  # a plain sweep: this chunk's results are on disk
                    keep(
                        {
                            "members": k,
                            "chunk_size": chunk,
                            "chunks_done": ci + 1,
                            "done": finished,
                            "dev_accuracy": dev_hist[:, finished].T.tolist(),
                            "train_loss": loss_hist[:, finished].T.tolist(),
                            "test_accuracy": test[finished].tolist(),
                            "first_bad": first_bad[finished].tolist(),
                            "final_hyper": [[float(getattr(final_hyper[m], a)) for a in axes] for m in finished],
                            "best": None if best is None else {"member": int(best[1]), "dev_accuracy": float(best[0])},
                            "train_seconds": train_s,
                            "compile_seconds": compile_s,
                        },
                        [row(m) for m in sorted(finished)],
                        None if best is before else (row(best[1]), best_member(best[1]), best[2]),
                    )
                    if best is not before:
                        best = (best[0], best[1], None)  # written: the host copy can go
                log(f"{which}: best dev accuracy so far {float('nan') if best is None else best[0]:.4f}")
            else:
                trees.append((ts, masks, hyper))
        if last:
            break
        acc = dev_hist[end - 1, slots]
        full = trees[0] if len(trees) == 1 else concat(trees)
        n_slots = len(trees) * size
        if halving is not None:
            survivors = search.promote(acc, halving)
            log(
                f"rung at epoch {end}: {len(survivors)} of {len(slots)} members go on "
                f"(best dev accuracy {np.nanmax(acc) if np.isfinite(acc).any() else float('nan'):.4f})"
            )
            slots = [slots[i] for i in survivors]
            size = min(chunk, _padded(len(slots), n_dev))
            pos = np.concatenate([survivors, np.full(_padded(len(survivors), size) - len(survivors), survivors[-1])])
            full = gather(full, jnp.asarray(pos))
        else:
            now = parallel.to_host(full[2])  # every slot's current values of the swept axes
            src, new = search.pbt_plan(acc, {a: getattr(now, a) for a in axes}, rng, prior)
            pos = np.concatenate([src, np.arange(len(src), n_slots)])  # padding slots keep themselves
            v = {a: jnp.asarray(np.concatenate([new[a], np.asarray(getattr(now, a))[len(src) :]])) for a in axes}
            full = exploit_fn(*full, jnp.asarray(pos), v)
            values = parallel.to_host(full[2])
            copied = [(int(d), int(s)) for d, s in enumerate(src) if d != s]
            for d, s in copied:  # slot d now holds a copy of slot s: slots are members here (no re-stacking)
                lineage[d].append(f"{s}@{end}")
                first_bad[d] = first_bad[s]
                hidden_now[d] = hidden_now[s]
            for m in slots:
                schedule[m].append(
                    {
                        "epoch": end,
                        "source": int(src[m]),
                        **{a: float(getattr(values, a)[m]) for a in axes},
                    }
                )
            log(f"PBT at epoch {end}: {len(copied)} of {len(slots)} members copy a top-quarter member")
        n_new = _padded(len(slots), size)
        pop = [full] if n_new == size else [gather(full, jnp.arange(c0, c0 + size)) for c0 in range(0, n_new, size)]
        start = end

    rows = [row(m) for m in range(k)]
    if best is not None:
        best = (rows[best[1]], best_member(best[1]), best[2])
    hist = [{"train_loss": loss_hist[e].tolist(), "dev_accuracy": dev_hist[e].tolist()} for e in range(tc.epochs)]
    examples = member_epochs * steps * tc.batch_size
    summary = {
        "members": k,
        "epochs": tc.epochs,
        "search": (
            {"method": "halving", "eta": halving, "rungs": list(ends)}
            if halving is not None
            else {"method": "pbt", "interval": pbt, "steps": list(ends[:-1])}
            if pbt is not None
            else {"method": "grid" if not axes else "given members"}
        ),
        "member_epochs": int(member_epochs),
        "population": population,
        "compiled_member_counts": sorted({size for size, _ in programs}),
        "seconds": train_s,
        "compile_seconds": compile_s,
        "examples_per_second": examples / train_s if train_s > 0 else float("nan"),
        "diverged": sum(r["diverged"] for r in rows),
        "shared_data_order": shared_order,
        "chunk_size": chunk,
        "layout": chosen_by,  # how chunk_size was chosen: probe, cache, cost model, chunk_size, …
        "layout_probe": {str(c): 1 / sec for c, sec in probe.items()},  # member-steps per second
        "probe_seconds": probe_s,
        "devices": n_dev,
        "processes": jax.process_count(),
        "backend": jax.default_backend(),
        "config": tc.to_dict(),
        "padded_sizes": list(wide_tc.model.sizes),
        "axes": list(axes),
        "resumed_chunks": skip,
        "best": None if best is None else {**best[0], "hyper": best[1].hyper.to_dict()},
    }
    return SweepResult(rows, summary, hist, ts, schedule if pbt is not None else []), best


def write_outputs(out: Path, result: SweepResult, ds: Dataset, tc: TrainConfig, best) -> None:
    """results.csv, summary.json, the plot (``report.plot_sweep``; for halving and PBT
    ``report.plot_search``'s search.png, and pbt_schedule.json) and best_checkpoint.npz (the best member
    cut back to its own widths, loadable like any run's checkpoint)."""
    report.write_csv(out / "results.csv", result.rows)
    report.write_json(out / "summary.json", result.summary)
    if best is not None and best[2] is not None:  # None: written already, after its chunk
        write_best(out, ds, tc, best)
    how, won = result.summary["search"], None if best is None else best[0]["member"]
    if how["method"] not in ("halving", "pbt"):  # a search's members end at other epochs or values
        report.plot_sweep(result.rows, result.history, result.summary["axes"], out)
    elif how["method"] == "halving":  # the decisions: every rung but the last (the end)
        title = f"successive halving, η = {how['eta']}"
        report.plot_search(result.history, how["rungs"][:-1], title, out / "search.png", best=won)
    elif how["method"] == "pbt":
        report.write_json(out / "pbt_schedule.json", result.pbt_schedule)
        every = "every epoch" if how["interval"] == 1 else f"every {how['interval']} epochs"
        report.plot_search(result.history, how["steps"], f"PBT {every}", out / "search.png", best=won)


def write_best(out: Path, ds: Dataset, tc: TrainConfig, best) -> None:
    """best_checkpoint.npz: ``best`` = (its row, its Member, its padded state) cut back to the member's
    own widths, loadable like any run's checkpoint."""
    row, member, ts_wide = best
    narrow_tc = narrow_config(tc, member)
    template = init_state(jax.random.PRNGKey(member.seed), narrow_tc, member.hyper.as_arrays())
    ts = unpad(ts_wide, template)
    best_tree = {"params": eval_params(ts), "bn_state": ts.bn_state}
    meta = {
        "config": narrow_tc.to_dict(),
        "hyper": member.hyper.to_dict(),
        "normalizer": ds.normalizer._asdict(),
        "dataset": ds.name,
        "dev_size": int(ds.x_dev.shape[0]),
        "epoch": tc.epochs,
        "history": [],
        "best_dev_accuracy": row["dev_accuracy"],
        "best_epoch": tc.epochs,
        "bad_epochs": 0,
        "sweep_member": row["member"],
    }
    save_run(out / "best_checkpoint.npz", ts, best_tree, meta)
