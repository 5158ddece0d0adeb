"""The run loop: ``fit`` trains epoch after epoch with early stopping, checkpoints and resume.

Contract::

    result = fit(ds, tc, hyper, out_dir="runs/x")          # FitResult(state, best_params, ...)
    result = fit(ds, tc, hyper, out_dir="runs/x", resume=True)
    tc, hyper, params, bn_state, normalizer, meta = load_model("runs/x/checkpoint.npz")

Each epoch is one compiled program (``step.epoch_program``, or ``parallel.data_parallel_epoch`` with
``data_parallel=True``); after it, the dev set is evaluated with ``step.eval_params`` and the best
parameters so far are kept. ``out_dir`` receives ``checkpoint.npz`` after every epoch (the training
state and the best parameters, with the configuration, ``Hyper``, normalizer and history in its
metadata) and, at the end, ``metrics.csv``, ``summary.json`` and ``curves.png`` (``jaxmlp.report``).

Resume (``resume=True``) restores the state of the last finished epoch; the structure (model,
optimizer, schedule, batch size, seed, and which optional ops ``Hyper`` turns on) must match the
checkpoint's. A cosine horizon that was the saved run's length follows the new ``epochs``
(``extend_cosine_horizon``). Checkpoints of format 1 (jaxmlp 0.1.0) are read through
``_from_format_1``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import checkpoint, parallel, report, schedules
from jaxmlp.data import Dataset, Normalizer, check_batch_size
from jaxmlp.hyper import OPTIONAL, Hyper, validate
from jaxmlp.mlp import init
from jaxmlp.step import TrainConfig, TrainState, epoch_program, eval_params, evaluate, init_state, with_cosine_horizon


class TrainingDiverged(RuntimeError):
    """The loss became non-finite; the message names the epoch and step."""


@dataclass
class FitResult:
    state: TrainState
    best_params: object
    best_bn_state: object
    history: list
    summary: dict


def first_nonfinite(losses) -> np.ndarray:
    """Per row of ``losses`` (..., steps): the 0-based index of the first non-finite value, −1 if none."""
    bad = ~np.isfinite(np.asarray(losses))
    return np.where(bad.any(axis=-1), np.argmax(bad, axis=-1), -1)


def save_run(path, ts: TrainState, best: dict, meta: dict) -> None:
    """The checkpoint ``fit`` writes: the training state and the best parameters {"params", "bn_state"}."""
    checkpoint.save(path, {"train": ts, "best": best}, meta)


def _from_format_1(meta: dict) -> dict:
    """A jaxmlp 0.1.0 checkpoint's metadata in today's terms: its static switches (``model.dropout``,
    ``model.input_dropout``, ``config.ema``) become ``None`` in the matching ``Hyper`` field when off."""
    config = dict(meta["config"])
    model = dict(config["model"])
    hyper = dict(meta["hyper"])
    for switch, field in (("dropout", "dropout_rate"), ("input_dropout", "input_dropout_rate")):
        if not model.pop(switch, False):
            hyper[field] = None
    if not config.pop("ema", False):
        hyper["ema_decay"] = None
    return {**meta, "config": {**config, "model": model}, "hyper": hyper}


def _read_meta(path, meta: dict):
    """(TrainConfig, Hyper) of a checkpoint's metadata, any format version; CheckpointError if invalid."""
    try:
        if meta.get("format_version") == 1:
            meta = _from_format_1(meta)
        return TrainConfig.from_dict(meta["config"]), Hyper.from_dict(meta["hyper"])
    except (KeyError, TypeError, ValueError) as e:
        version = meta.get("jaxmlp_version", "0.1.0" if meta.get("format_version") == 1 else "unknown")
        raise checkpoint.CheckpointError(
            f"{path}: metadata incomplete or invalid for this jaxmlp (written by jaxmlp {version}: {e})"
        ) from None


def load_model(path):
    """(config, hyper, params, bn_state, normalizer, meta) of the best model in a checkpoint file."""
    meta, arrays = checkpoint.load(path)
    tc, hyper = _read_meta(path, meta)
    try:
        norm = Normalizer(**meta["normalizer"])
    except (KeyError, TypeError) as e:
        raise checkpoint.CheckpointError(f"{path}: metadata incomplete or invalid ({e})") from None
    params, bn_state = init(jax.random.PRNGKey(0), tc.model, scale=hyper.init_scale)
    best = checkpoint.restore({"params": params, "bn_state": bn_state}, arrays, "best", source=str(path))
    return tc, hyper, best["params"], best["bn_state"], norm, meta


def extend_cosine_horizon(hyper: Hyper, tc: TrainConfig, saved_epochs, steps_per_epoch: int) -> Hyper:
    """On resume: a cosine horizon that was the saved run's length follows the run's new length.

    A run of E epochs extended to E' (``--epochs E' --resume``) trains its remaining epochs on the
    schedule of an E'-epoch run: the learning rate at step t is the cosine's value at t / (E' · steps
    per epoch), so it rises from the decayed end of the E-epoch schedule to where the E'-epoch
    schedule stands at step t. A horizon the user set explicitly (``total_steps``) is kept.
    """
    if (
        tc.schedule == "cosine"
        and saved_epochs is not None
        and float(hyper.total_steps) == float(saved_epochs * steps_per_epoch)
    ):
        return hyper._replace(total_steps=float(tc.epochs * steps_per_epoch))
    return hyper


def _structure(tc: TrainConfig, hyper: Hyper) -> dict:
    """What a resumed run must share with its checkpoint: everything that shapes the state."""
    d = tc.to_dict()
    same = {k: d[k] for k in ("model", "optimizer", "schedule", "batch_size", "seed")}
    return {**same, **{f"{name} is None": getattr(hyper, name) is None for name in OPTIONAL}}


def fit(
    ds: Dataset,
    tc: TrainConfig,
    hyper: Hyper,
    *,
    out_dir=None,
    resume: bool = False,
    progress: bool = True,
    log=print,
    data_parallel: bool = False,
) -> FitResult:
    """Train with early stopping on dev accuracy; write checkpoint/metrics/curves/summary to out_dir.

    ``data_parallel=True`` shards every batch over all devices (``jaxmlp.parallel``).
    Raises ``TrainingDiverged`` when the loss turns non-finite (the last good checkpoint stays).
    """
    validate(hyper)
    n_train = ds.x_train.shape[0]
    check_batch_size(tc.batch_size, n_train)
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
    best = jax.tree_util.tree_map(jnp.copy, {"params": eval_params(ts), "bn_state": ts.bn_state})
    history, start_epoch, best_acc, best_epoch, bad_epochs = [], 1, -1.0, 0, 0
    if resume:
        if ckpt_path is None or not ckpt_path.is_file():
            raise checkpoint.CheckpointError(f"--resume: no checkpoint at {ckpt_path}")
        meta, arrays = checkpoint.load(ckpt_path)
        saved_tc, saved_hyper = _read_meta(ckpt_path, meta)
        if _structure(saved_tc, saved_hyper) != _structure(tc, hyper):
            raise checkpoint.CheckpointError(
                f"{ckpt_path}: was written with a different configuration; resume with the same options"
            )
        ts = checkpoint.restore(ts, arrays, "train", source=str(ckpt_path))
        best = checkpoint.restore(best, arrays, "best", source=str(ckpt_path))
        history = meta["history"]
        start_epoch = meta["epoch"] + 1
        best_acc, best_epoch, bad_epochs = meta["best_dev_accuracy"], meta["best_epoch"], meta["bad_epochs"]
        hyper = extend_cosine_horizon(saved_hyper, tc, saved_tc.epochs, steps_per_epoch)
        hyper_arr = hyper.as_arrays()

    x_train, y_train = jax.device_put(ds.x_train), jax.device_put(ds.y_train)
    t0 = time.perf_counter()
    if data_parallel and jax.device_count() > 1:
        epoch_fn = parallel.data_parallel_epoch(tc, parallel.mesh("data"))
    else:
        epoch_fn = epoch_program(tc)
    epoch_fn = epoch_fn.lower(ts, hyper_arr, x_train, y_train).compile()
    compile_seconds = time.perf_counter() - t0

    def meta_now(epoch):
        return {
            "config": tc.to_dict(),
            "hyper": hyper.to_dict(),
            "normalizer": ds.normalizer._asdict(),
            "dataset": ds.name,
            "dev_size": int(ds.x_dev.shape[0]),
            "epoch": epoch,
            "history": history,
            "best_dev_accuracy": best_acc,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
        }

    bar = report.progress(range(start_epoch, tc.epochs + 1), progress)
    train_seconds = sum(r["seconds"] for r in history)
    stopped_early = False
    for epoch in bar:
        t = time.perf_counter()
        ts, metrics = epoch_fn(ts, hyper_arr, x_train, y_train)
        losses = np.asarray(metrics["loss"])  # blocks until the epoch is done
        seconds = time.perf_counter() - t
        i = int(first_nonfinite(losses))
        if i >= 0:
            step = (epoch - 1) * steps_per_epoch + i + 1
            kept = f"; the last good checkpoint is {ckpt_path}" if ckpt_path and ckpt_path.exists() else ""
            raise TrainingDiverged(
                f"loss became non-finite at epoch {epoch}, step {step} (step {i + 1} of the epoch); "
                f"lower the learning rate (now {float(hyper.learning_rate):g}){kept}"
            )
        train_seconds += seconds
        params_eval = eval_params(ts)
        dev_acc, dev_loss = evaluate(params_eval, ts.bn_state, ds.x_dev, ds.y_dev, config=tc.model)
        row = {
            "epoch": epoch,
            "train_loss": float(losses.mean()),
            "train_accuracy": float(np.asarray(metrics["correct"]).sum()) / (len(losses) * tc.batch_size),
            "dev_loss": dev_loss,
            "dev_accuracy": dev_acc,
            "seconds": seconds,
            # the rate the epoch's last step trained with
            "learning_rate": float(schedules.learning_rate_at(tc.schedule, ts.step - 1, hyper_arr)),
        }
        history.append(row)
        if dev_acc > best_acc or math.isnan(dev_acc):
            best_acc, best_epoch, bad_epochs = dev_acc, epoch, 0
            best = {"params": params_eval, "bn_state": ts.bn_state}
            best = jax.tree_util.tree_map(jnp.copy, best)  # ts is donated to the next epoch
        else:
            bad_epochs += 1
        line = f"epoch {epoch:3d}  train loss {row['train_loss']:.4f}  dev acc {dev_acc:.4f}  {seconds:.2f}s"
        report.say(bar, line, log)
        if ckpt_path is not None:
            save_run(ckpt_path, ts, best, meta_now(epoch))
        if tc.patience and bad_epochs >= tc.patience:
            stopped_early = True
            report.say(
                bar,
                f"early stop: no better dev accuracy for {tc.patience} epochs "
                f"(best {best_acc:.4f} at epoch {best_epoch})",
                log,
            )
            break

    test_acc, test_loss = evaluate(best["params"], best["bn_state"], ds.x_test, ds.y_test, config=tc.model)
    examples = len(history) * steps_per_epoch * tc.batch_size
    summary = {
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "dev_accuracy": best_acc,
        "best_epoch": best_epoch,
        "epochs": len(history),
        "stopped_early": stopped_early,
        "seconds": train_seconds,
        "compile_seconds": compile_seconds,
        "examples_per_second": examples / train_seconds if train_seconds > 0 else float("nan"),
        "dataset": ds.name,
        "train_size": n_train,
        "dev_size": int(ds.x_dev.shape[0]),
        "config": tc.to_dict(),
        "hyper": hyper.to_dict(),
        "backend": jax.default_backend(),
        "devices": jax.device_count() if data_parallel else 1,
    }
    log(f"test accuracy {test_acc:.4f} (best dev {best_acc:.4f} at epoch {best_epoch})")
    if out is not None:
        report.write_csv(out / "metrics.csv", history)
        report.write_json(out / "summary.json", summary)
        report.plot_curves(history, out / "curves.png")
    return FitResult(ts, best["params"], best["bn_state"], history, summary)
