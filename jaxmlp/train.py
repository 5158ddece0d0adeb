"""Training: a jitted step built from the hand-written backward, epochs as one ``lax.scan``, and ``fit``.

Contract::

    tc = TrainConfig(model=MLPConfig(sizes=(784, 512, 512, 10)), optimizer="adam", epochs=20)
    hyper = Hyper(learning_rate=1e-3).as_arrays()
    ts = init_state(jax.random.PRNGKey(0), tc, hyper)
    ts, metrics = train_step(ts, hyper, (xb, yb), tc=tc)           # one step, pure
    ts, metrics = jit_train_step(ts, hyper, (xb, yb), tc=tc)       # the same, compiled, ts donated
    ts, metrics = train_epoch(ts, hyper, x_train, y_train, tc=tc)  # one lax.scan over the epoch
    epoch = jax.jit(partial(train_epoch, tc=tc), compiler_options=compiler.epoch_options())  # as fit compiles it
    acc, loss = evaluate(eval_params(ts, tc), ts.bn_state, x, y, config=tc.model)
    result = fit(dataset, tc, hyper, out_dir="runs/x")             # the whole loop, with files

The step: hand-derived ``loss_and_grads`` → optimizer update (learning rate from the schedule at this
step) → parameter EMA (when enabled). ``jax.grad`` is not used. The epoch draws a fresh permutation
(``data.batch_indices``; the remainder is left out) and scans the step over its rows, gathering each
batch from the device-resident training arrays. Keys: the state's key is split once per epoch into
the next state key, the permutation key, and a base from which step i's dropout key is ``fold_in(base,
i)``; resuming from a checkpoint therefore replays exactly the same randomness.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import checkpoint, compiler, data, optim, schedules
from jaxmlp.hyper import Hyper, validate
from jaxmlp.mlp import MLPConfig, forward, init, loss_and_grads


@dataclass(frozen=True)
class TrainConfig:
    """Static structure of a run (anything that changes the compiled program)."""

    model: MLPConfig = field(default_factory=MLPConfig)
    optimizer: str = "adam"
    schedule: str = "constant"
    ema: bool = False  # evaluate with the exponential moving average of the parameters
    batch_size: int = 128
    epochs: int = 20
    patience: int = 0  # early stopping: epochs without a better dev accuracy (0: never stop early)
    seed: int = 0
    scan_unroll: int = 1  # steps per iteration of the epoch's loop (GPU: less per-step loop overhead)

    def __post_init__(self):
        optim.get(self.optimizer)
        schedules.check(self.schedule)
        if self.batch_size <= 0:
            raise ValueError(f"batch size must be ≥ 1, got {self.batch_size}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be ≥ 1, got {self.epochs}")
        if self.patience < 0:
            raise ValueError(f"patience must be ≥ 0, got {self.patience}")
        if self.scan_unroll < 1:
            raise ValueError(f"scan unroll must be ≥ 1, got {self.scan_unroll}")

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("optimizer", "schedule", "ema", "batch_size", "epochs",
                                            "patience", "seed", "scan_unroll")}
        return {"model": self.model.to_dict(), **d}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(model=MLPConfig.from_dict(d["model"]), **{k: v for k, v in d.items() if k != "model"})


class TrainState(NamedTuple):
    params: tuple
    bn_state: tuple
    opt_state: object
    ema: object  # a copy of params' structure, or None when EMA is off
    step: jax.Array  # int32, optimizer steps taken
    key: jax.Array  # PRNGKey for everything random from here on


class TrainingDiverged(RuntimeError):
    """The loss became non-finite; the message names the epoch and step."""


def init_state(key, tc: TrainConfig, hyper: Hyper) -> TrainState:
    init_key, key = jax.random.split(key)
    params, bn_state = init(init_key, tc.model, scale=hyper.init_scale)
    opt_state = optim.get(tc.optimizer).init(params)
    ema = optim.ema_init(params) if tc.ema else None
    return TrainState(params, bn_state, opt_state, ema, jnp.zeros((), jnp.int32), key)


def eval_params(ts: TrainState, tc: TrainConfig):
    return ts.ema if tc.ema else ts.params


def train_step(ts: TrainState, hyper: Hyper, batch, *, tc: TrainConfig, key=None,
               grad_fn=loss_and_grads, masks=None):
    """One optimizer step on ``batch`` = (x (b, d_in), y (b,)). ``key``: this step's dropout key.

    ``grad_fn`` is the hand-written ``mlp.loss_and_grads``; benchmarks pass
    ``mlp.autodiff_loss_and_grads`` to time the same step with jax.grad's gradients.
    """
    if key is None:
        key = jax.random.fold_in(ts.key, ts.step)
    cost, grads, bn_state, aux = grad_fn(ts.params, ts.bn_state, batch, hyper, key,
                                         config=tc.model, masks=masks)
    step_hyper = hyper._replace(learning_rate=schedules.learning_rate_at(tc.schedule, ts.step, hyper))
    updates, opt_state = optim.get(tc.optimizer).update(grads, ts.opt_state, ts.params, step_hyper)
    params = optim.apply_updates(ts.params, updates)
    ema = optim.ema_update(ts.ema, params, hyper.ema_decay) if tc.ema else None
    new = TrainState(params, bn_state, opt_state, ema, ts.step + 1, ts.key)
    return new, {"loss": cost, "correct": aux["correct"]}


# The step compiled for users' own loops: the incoming state's buffers are donated (reused for the
# new state), so do not touch ``ts`` after passing it in.
jit_train_step = jax.jit(train_step, static_argnames=("tc", "grad_fn"), donate_argnums=0)


def train_epoch(ts: TrainState, hyper: Hyper, x, y, *, tc: TrainConfig, idx=None, masks=None,
                grad_fn=loss_and_grads):
    """One epoch as a single ``lax.scan``. x: (n, d_in) float, y: (n,) int, both on the device.

    ``idx`` (num_batches, batch_size): the epoch's batch rows; by default drawn from the state's key
    (sweeps pass one shared ``idx`` to give every member the same data order).
    Returns the new state and per-step metrics {"loss": (num_batches,), "correct": (num_batches,)}.
    """
    key, perm_key, step_base = jax.random.split(ts.key, 3)
    if idx is None:
        idx = data.batch_indices(perm_key, x.shape[0], tc.batch_size)  # (num_batches, batch_size)

    def body(ts, inp):
        i, rows = inp
        batch = (jnp.take(x, rows, axis=0), jnp.take(y, rows, axis=0))
        return train_step(ts, hyper, batch, tc=tc, key=jax.random.fold_in(step_base, i), grad_fn=grad_fn,
                          masks=masks)

    steps = jnp.arange(idx.shape[0])
    ts, metrics = jax.lax.scan(body, ts, (steps, idx), unroll=tc.scan_unroll)
    return ts._replace(key=key), metrics


def evaluate(params, bn_state, x, y, *, config: MLPConfig, chunk: int = 10_000):
    """Evaluation-mode (accuracy, mean cross-entropy) over (x, y), in chunks of ``chunk`` rows."""
    n = x.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    correct, loss_sum = 0, 0.0
    for s in range(0, n, chunk):
        c, l = _eval_chunk(params, bn_state, x[s:s + chunk], y[s:s + chunk], config=config)
        correct += int(c)
        loss_sum += float(l)
    return correct / n, loss_sum / n


@partial(jax.jit, static_argnames=("config",))
def _eval_chunk(params, bn_state, x, y, *, config):
    logits, _, _ = forward(params, bn_state, x, config=config, train=False)
    logp = jax.nn.log_softmax(logits)
    loss_sum = -jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=-1))
    return jnp.sum(jnp.argmax(logits, axis=-1) == y), loss_sum


# ---------------------------------------------------------------------------------------------
# The whole run


@dataclass
class FitResult:
    state: TrainState
    best_params: object
    best_bn_state: object
    history: list
    summary: dict


def _ckpt_trees(ts, best):
    return {"train": ts, "best": best}


def save_run(path, ts, best, meta):
    checkpoint.save(path, _ckpt_trees(ts, best), meta)


def load_model(path):
    """(config, params, bn_state, normalizer, meta) of the best model in a checkpoint file."""
    meta, arrays = checkpoint.load(path)
    try:
        tc = TrainConfig.from_dict(meta["config"])
        hyper = Hyper.from_dict(meta["hyper"])
        norm = data.Normalizer(**meta["normalizer"])
    except (KeyError, TypeError, ValueError) as e:
        raise checkpoint.CheckpointError(f"{path}: metadata incomplete or invalid ({e})") from None
    params, bn_state = init(jax.random.PRNGKey(0), tc.model, scale=hyper.init_scale)
    best = checkpoint.restore({"params": params, "bn_state": bn_state}, arrays, "best", source=str(path))
    return tc, best["params"], best["bn_state"], norm, meta


def with_cosine_horizon(hyper: Hyper, tc: TrainConfig, steps_per_epoch: int) -> Hyper:
    """For the cosine schedule, set total_steps to the run's length unless the user set it."""
    if tc.schedule == "cosine" and float(hyper.total_steps) <= 1:
        return hyper._replace(total_steps=float(tc.epochs * steps_per_epoch))
    return hyper


def extend_cosine_horizon(hyper: Hyper, tc: TrainConfig, saved_epochs, steps_per_epoch: int) -> Hyper:
    """On resume: a cosine horizon that was the saved run's length follows the run's new length.

    A run of E epochs extended to E' (``--epochs E' --resume``) trains its remaining epochs on the
    schedule of an E'-epoch run: the learning rate at step t is the cosine's value at t / (E' · steps
    per epoch), so it rises from the decayed end of the E-epoch schedule to where the E'-epoch
    schedule stands at step t. A horizon the user set explicitly (``total_steps``) is kept.
    """
    if tc.schedule == "cosine" and saved_epochs is not None and \
            float(hyper.total_steps) == float(saved_epochs * steps_per_epoch):
        return hyper._replace(total_steps=float(tc.epochs * steps_per_epoch))
    return hyper


def fit(ds: data.Dataset, tc: TrainConfig, hyper: Hyper, *, out_dir=None, resume: bool = False,
        progress: bool = True, log=print, data_parallel: bool = False) -> FitResult:
    """Train with early stopping on dev accuracy; write checkpoint/metrics/curves/summary to out_dir.

    ``data_parallel=True`` shards every batch over all devices (``jaxmlp.parallel``).
    Raises ``TrainingDiverged`` when the loss turns non-finite (the last good checkpoint stays).
    """
    validate(hyper)
    n_train = ds.x_train.shape[0]
    if tc.batch_size > n_train:
        raise ValueError(f"batch size {tc.batch_size} is larger than the {n_train} training examples")
    if ds.x_train.shape[1] != tc.model.sizes[0] or tc.model.sizes[-1] != ds.num_classes:
        raise ValueError(
            f"network {tc.model.sizes[0]}→…→{tc.model.sizes[-1]} does not fit data with "
            f"{ds.x_train.shape[1]} features and {ds.num_classes} classes"
        )
    steps_per_epoch = n_train // tc.batch_size
    hyper = with_cosine_horizon(hyper, tc, steps_per_epoch)
    hyper_arr = hyper.as_arrays()
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "checkpoint.npz" if out is not None else None

    if ckpt_path is not None:  # temp files of writes killed half-way (the checkpoint itself is whole)
        for stale in ckpt_path.parent.glob(ckpt_path.name + ".*.tmp"):
            stale.unlink()
    ts = init_state(jax.random.PRNGKey(tc.seed), tc, hyper_arr)
    best = jax.tree_util.tree_map(jnp.copy, {"params": eval_params(ts, tc), "bn_state": ts.bn_state})
    history, start_epoch, best_acc, best_epoch, bad_epochs = [], 1, -1.0, 0, 0
    if resume:
        if ckpt_path is None or not ckpt_path.is_file():
            raise checkpoint.CheckpointError(f"--resume: no checkpoint at {ckpt_path}")
        meta, arrays = checkpoint.load(ckpt_path)
        same = ("model", "optimizer", "schedule", "ema", "batch_size", "seed")
        try:  # through from_dict, so fields added since the checkpoint was written take their defaults
            saved = TrainConfig.from_dict(meta["config"]).to_dict()
        except (KeyError, TypeError, ValueError):
            saved = {}
        if {k: saved.get(k) for k in same} != {k: tc.to_dict()[k] for k in same}:
            raise checkpoint.CheckpointError(
                f"{ckpt_path}: was written with a different configuration; resume with the same options"
            )
        ts = checkpoint.restore(ts, arrays, "train", source=str(ckpt_path))
        best = checkpoint.restore(best, arrays, "best", source=str(ckpt_path))
        history = meta["history"]
        start_epoch = meta["epoch"] + 1
        best_acc, best_epoch, bad_epochs = meta["best_dev_accuracy"], meta["best_epoch"], meta["bad_epochs"]
        hyper = extend_cosine_horizon(Hyper.from_dict(meta["hyper"]), tc, meta["config"].get("epochs"),
                                      steps_per_epoch)
        hyper_arr = hyper.as_arrays()

    x_train, y_train = jax.device_put(ds.x_train), jax.device_put(ds.y_train)
    t0 = time.perf_counter()
    if data_parallel and jax.device_count() > 1:
        from jaxmlp import parallel

        epoch_fn = parallel.data_parallel_epoch(tc, parallel.data_mesh())
    else:
        epoch_fn = jax.jit(partial(train_epoch, tc=tc), donate_argnums=0, compiler_options=compiler.epoch_options())
    epoch_fn = epoch_fn.lower(ts, hyper_arr, x_train, y_train).compile()
    compile_seconds = time.perf_counter() - t0

    def meta_now(epoch):
        return {"config": tc.to_dict(), "hyper": hyper.to_dict(), "normalizer": ds.normalizer._asdict(),
                "dataset": ds.name, "dev_size": int(ds.x_dev.shape[0]), "epoch": epoch, "history": history,
                "best_dev_accuracy": best_acc, "best_epoch": best_epoch, "bad_epochs": bad_epochs}

    bar = _progress(range(start_epoch, tc.epochs + 1), progress)
    train_seconds = sum(r["seconds"] for r in history)
    stopped_early = False
    for epoch in bar:
        t = time.perf_counter()
        ts, metrics = epoch_fn(ts, hyper_arr, x_train, y_train)
        losses = np.asarray(metrics["loss"])  # blocks until the epoch is done
        seconds = time.perf_counter() - t
        bad = ~np.isfinite(losses)
        if bad.any():
            i = int(np.argmax(bad))
            step = (epoch - 1) * steps_per_epoch + i + 1
            kept = f"; the last good checkpoint is {ckpt_path}" if ckpt_path and ckpt_path.exists() else ""
            raise TrainingDiverged(
                f"loss became non-finite at epoch {epoch}, step {step} (step {i + 1} of the epoch); "
                f"lower the learning rate (now {float(hyper.learning_rate):g}){kept}"
            )
        train_seconds += seconds
        params_eval = eval_params(ts, tc)
        dev_acc, dev_loss = evaluate(params_eval, ts.bn_state, ds.x_dev, ds.y_dev, config=tc.model)
        row = {"epoch": epoch, "train_loss": float(losses.mean()),
               "train_accuracy": float(np.asarray(metrics["correct"]).sum()) / (len(losses) * tc.batch_size),
               "dev_loss": dev_loss, "dev_accuracy": dev_acc, "seconds": seconds,
               # the rate the epoch's last step trained with
               "learning_rate": float(schedules.learning_rate_at(tc.schedule, ts.step - 1, hyper_arr))}
        history.append(row)
        if dev_acc > best_acc or math.isnan(dev_acc):
            best_acc, best_epoch, bad_epochs = dev_acc, epoch, 0
            best = {"params": params_eval, "bn_state": ts.bn_state}
            best = jax.tree_util.tree_map(jnp.copy, best)  # ts is donated to the next epoch
        else:
            bad_epochs += 1
        line = (f"epoch {epoch:3d}  train loss {row['train_loss']:.4f}  dev acc {dev_acc:.4f}  "
                f"{seconds:.2f}s")
        _write(bar, line, log)
        if ckpt_path is not None:
            save_run(ckpt_path, ts, best, meta_now(epoch))
        if tc.patience and bad_epochs >= tc.patience:
            stopped_early = True
            _write(bar, f"early stop: no better dev accuracy for {tc.patience} epochs "
                        f"(best {best_acc:.4f} at epoch {best_epoch})", log)
            break

    test_acc, test_loss = evaluate(best["params"], best["bn_state"], ds.x_test, ds.y_test, config=tc.model)
    examples = len(history) * steps_per_epoch * tc.batch_size
    summary = {
        "test_accuracy": test_acc, "test_loss": test_loss, "dev_accuracy": best_acc,
        "best_epoch": best_epoch, "epochs": len(history), "stopped_early": stopped_early,
        "seconds": train_seconds, "compile_seconds": compile_seconds,
        "examples_per_second": examples / train_seconds if train_seconds > 0 else float("nan"),
        "dataset": ds.name, "train_size": n_train, "dev_size": int(ds.x_dev.shape[0]),
        "config": tc.to_dict(), "hyper": hyper.to_dict(), "backend": jax.default_backend(),
        "devices": jax.device_count() if data_parallel else 1,
    }
    log(f"test accuracy {test_acc:.4f} (best dev {best_acc:.4f} at epoch {best_epoch})")
    if out is not None:
        write_outputs(out, history, summary)
    return FitResult(ts, best["params"], best["bn_state"], history, summary)


def _progress(it, enabled):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc="training", unit="epoch", leave=False)


def _write(bar, line, log):
    if hasattr(bar, "write") and log is print:
        bar.write(line)
    else:
        log(line)


def write_outputs(out: Path, history: list, summary: dict) -> None:
    """metrics.csv, summary.json and curves.png, each written to a temp name and renamed."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "metrics.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]) if history else ["epoch"])
        w.writeheader()
        w.writerows(history)
    tmp.replace(out / "metrics.csv")
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(out / "summary.json")
    plot_curves(history, out / "curves.png")


def plot_curves(history: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [r["train_loss"] for r in history], label="train (cost during the epoch)")
    a.plot(ep, [r["dev_loss"] for r in history], label="dev")
    a.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    a.legend()
    b.plot(ep, [r["train_accuracy"] for r in history], label="train (during the epoch)")
    b.plot(ep, [r["dev_accuracy"] for r in history], label="dev")
    b.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    b.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
