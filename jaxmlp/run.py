"""The run loop: ``fit`` trains epoch after epoch with early stopping, checkpoints and resume.

Contract::

    result = fit(ds, tc, hyper, out_dir="runs/x")          # FitResult(state, best_params, ...)
    result = fit(ds, tc, hyper, out_dir="runs/x", resume=True)
    tc, hyper, params, bn_state, normalizer, meta = load_model("runs/x/checkpoint.npz")

Each epoch runs as segments of one compiled program (``step.segment_program``, ``step.segment_steps``
steps each, about a second of work: an interrupt is answered between two, and the unfinished epoch is
dropped), or as one program with ``data_parallel=True`` (``parallel.data_parallel_epoch``); after
it, the dev set is evaluated with ``step.eval_params`` and the best
parameters so far are kept. ``out_dir`` is checked before training (``OutputFolder.claim``) and, after
every epoch, holds ``checkpoint.npz`` (the training state and the best parameters, with the
configuration, ``Hyper``, normalizer and history in its metadata), ``metrics.csv`` and a partial
``summary.json``; ``curves.png`` and the test accuracy come at the end, or when the run diverges or
is interrupted (``jaxmlp.report`` writes every file atomically).

Resume (``resume=True``) restores the state of the last finished epoch. The structure (model,
optimizer, schedule, batch size, seed, and which optional ops ``Hyper`` turns on) must match the
checkpoint's; changed numbers are applied and recorded. The cosine horizon follows ``tc.epochs``, so
a resumed run with more epochs trains its remaining epochs on the longer run's schedule.
Checkpoints of format 1 (jaxmlp 0.1.0) are read through ``_from_format_1``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmlp import checkpoint, memory, parallel, report, schedules
from jaxmlp.data import Dataset, Normalizer, check_batch_size, normalizer_from_dict
from jaxmlp.hyper import Hyper, validate
from jaxmlp.mlp import init
from jaxmlp.step import (
    TrainConfig,
    TrainState,
    epoch_order,
    eval_params,
    evaluate,
    init_state,
    segment_program,
    segment_steps,
    with_cosine_horizon,
)


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


class LoadedModel(NamedTuple):
    """The best model of a checkpoint: its TrainConfig, Hyper, evaluation parameters (the EMA when the
    run had one) and batch-norm state, the data transform (``normalizer(raw_pixels)``) and the metadata."""

    config: TrainConfig
    hyper: Hyper
    params: tuple
    bn_state: tuple
    normalizer: Normalizer  # or a Standardizer: a model trained on your own features
    meta: dict


def load_model(path) -> LoadedModel:
    """The best model in a checkpoint file (a run's checkpoint.npz or a sweep's best_checkpoint.npz)."""
    meta, arrays = checkpoint.load(path)
    tc, hyper = _read_meta(path, meta)
    try:
        norm = normalizer_from_dict(meta["normalizer"])
    except (KeyError, TypeError) as e:
        raise checkpoint.CheckpointError(f"{path}: metadata incomplete or invalid ({e})") from None
    params, bn_state = init(jax.random.PRNGKey(0), tc.model, scale=hyper.init_scale)
    best = checkpoint.restore({"params": params, "bn_state": bn_state}, arrays, "best", source=str(path))
    return LoadedModel(tc, hyper, best["params"], best["bn_state"], norm, meta)


RUN_FILES = ("checkpoint.npz", "metrics.csv", "summary.json", "curves.png")  # what fit writes into out_dir
SWEEP_FILES = (  # run_sweep's
    "results.csv",
    "summary.json",
    "heatmap.png",
    "curves.png",
    "best_checkpoint.npz",
    "search.png",
    "pbt_schedule.json",
    "sweep_progress.json",  # sweep.PROGRESS_FILE
)
OUTPUT_FILES = tuple(dict.fromkeys(RUN_FILES + SWEEP_FILES))


class _Stopped(KeyboardInterrupt):
    """``fit``'s ``stop`` asked for the end: an interrupt by the signal it names."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


class RunInterrupted(KeyboardInterrupt):
    """``fit`` was interrupted (Ctrl-C, or SIGTERM turned into a KeyboardInterrupt with a ``signal_name``
    attribute): the epoch in flight was abandoned; the checkpoint and the outputs of every finished
    epoch are on disk. ``resumable``: a checkpoint is there to resume from (False when the run stopped
    before its first epoch finished: then nothing of it was written)."""

    def __init__(self, epochs_done: int, epochs: int, out_dir, signal_name: str = "SIGINT", resumable: bool = True):
        super().__init__(f"interrupted ({signal_name}) after {epochs_done} of {epochs} epochs")
        self.epochs_done, self.epochs, self.out_dir, self.signal_name = epochs_done, epochs, out_dir, signal_name
        self.resumable = resumable


@dataclass
class OutputFolder:
    """A run's claim on its output folder (``claim``), checked before any training.

    ``created``: the topmost folder the claim had to make (None if it existed); ``abandon`` removes it
    again while it holds no file, for a run that fails before writing anything. ``replaced``: an
    earlier run's files that ``--overwrite`` replaces; ``start`` deletes them, right before the new
    run's first file is written, so a run that fails before that leaves the old one as it was."""

    path: Path
    created: Path | None
    replaced: list

    @classmethod
    def claim(cls, out, *, resume: bool, overwrite: bool) -> OutputFolder:
        """ValueError (one line naming the folder) unless ``out`` can be created and written, is not a
        file, and holds no earlier run's files (``OUTPUT_FILES``) — or ``resume`` (continue it) or
        ``overwrite`` (replace them). Removes the temp files of jaxmlp's own writes killed half-way."""
        out = Path(out)
        found = cls.check_free(out, resume=resume, overwrite=overwrite)
        created = next((q for q in reversed([out, *out.parents]) if not q.exists()), None)
        probe = out / ".jaxmlp-write-test"
        try:
            out.mkdir(parents=True, exist_ok=True)
            with report.atomic_write(probe) as f:
                f.write("")
            probe.unlink()
        except OSError as e:
            raise ValueError(f"cannot write to output folder {out} ({e.strerror or e}); choose another --out") from None
        folder = cls(out, created, [] if resume else [out / name for name in found])
        folder.remove_temp_files()
        return folder

    def remove_temp_files(self) -> None:
        """Only jaxmlp's own: <output file>.<random>.tmp, left by a write that a kill or an interrupt cut
        short (an interrupt can land between creating the temp file and the writer's cleanup)."""
        for name in OUTPUT_FILES:
            for stale in self.path.glob(f"{name}.*.tmp"):
                stale.unlink(missing_ok=True)

    @staticmethod
    def check_free(out, *, resume: bool, overwrite: bool) -> list:
        """The part of ``claim`` that changes nothing (callers may ask first, before loading data):
        ValueError unless ``out`` is not a file and holds no earlier run's files, or ``resume`` /
        ``overwrite``; returns the run files found. ``resume`` and ``overwrite`` together contradict each
        other (continue the run, or replace it?) and are refused."""
        out = Path(out)
        if resume and overwrite:
            raise ValueError(
                f"--resume continues the run in {out} and --overwrite replaces it: give one of them, not both"
            )
        if out.exists() and not out.is_dir():
            raise ValueError(f"output folder {out} is a file; choose another --out")
        found = [name for name in OUTPUT_FILES if (out / name).exists()]
        if found and not resume and not overwrite:
            resumable = (out / "checkpoint.npz").exists() or (out / "sweep_progress.json").exists()
            again = "pass --resume to continue it, " if resumable else "pass "
            raise ValueError(
                f"{out} already holds a run ({', '.join(found)}); {again}--overwrite to replace it, or choose "
                "another --out"
            )
        return found

    def start(self) -> None:
        for path in self.replaced:
            path.unlink(missing_ok=True)
        self.replaced = []

    def abandon(self) -> None:
        if self.created is not None and self.created.is_dir() and not any(q.is_file() for q in self.created.rglob("*")):
            shutil.rmtree(self.created)


_OPTION_NAMES = {"dropout_rate": "--dropout", "input_dropout_rate": "--input-dropout", "ema_decay": "--ema"}


def _structure(tc: TrainConfig, hyper: Hyper, data: tuple) -> dict:
    """What a resumed run must share with its checkpoint (everything that shapes the state, the
    program or the data split), keyed by the command-line option that sets it."""
    m = tc.model
    out = {
        "--dataset": data[0],
        "--dev-size": data[1],
        "inputs and classes": (m.sizes[0], m.sizes[-1]),
        "--hidden": ",".join(map(str, m.sizes[1:-1])) or "none",
        "--activation": m.activation,
        "--batchnorm": m.batchnorm,
        "--init": m.init,
        "--init-scale": float(hyper.init_scale),
        "--matmul-dtype": m.matmul_dtype,
        "weight_grad_layout": m.weight_grad_layout,
        "--optimizer": tc.optimizer,
        "--schedule": tc.schedule,
        "--batch-size": tc.batch_size,
        "--seed": tc.seed,
        "--ema-schedule": tc.ema_schedule,
    }
    for name, option in _OPTION_NAMES.items():
        out[f"{option} (on/off)"] = "off" if getattr(hyper, name) is None else "on"
    return out


def _check_resume(path, then, now, log) -> list:
    """``then`` / ``now``: (TrainConfig, Hyper, (dataset name, dev size)) of the checkpoint and of this
    run. Refuse a structural difference (one line naming each option and both values); return the
    numbers that differ as [{"field", "from", "to"}] — they are applied from here on, and logged."""
    saved_hyper, hyper = then[1], now[1]
    a, b = _structure(*then), _structure(*now)
    diff = [f"{k} {a[k]} (checkpoint) vs {b[k]} (now)" for k in a if a[k] != b[k]]
    if diff:
        raise checkpoint.CheckpointError(
            f"{path}: cannot resume with a different structure: {'; '.join(diff)}; resume with the checkpoint's "
            "values or start a new run with another --out"
        )
    if then[0].epochs != now[0].epochs:
        log(
            f"resume: the run now ends at epoch {now[0].epochs} (was {then[0].epochs}); a cosine schedule spans "
            "the new length"
        )
    changes = []
    for field, old in saved_hyper.to_dict().items():
        new = getattr(hyper, field)
        if field == "total_steps" and then[0].epochs != now[0].epochs:
            continue  # the schedule's horizon following the run's length, said above
        if old is not None and new is not None and float(new) != old and field != "init_scale":
            changes.append({"field": field, "from": old, "to": float(new)})
            log(f"resume: {field} {old:g} → {float(new):g}")
    return changes


def _resume_point(path, ds: Dataset, tc: TrainConfig, hyper: Hyper, log):
    """What resuming the checkpoint at ``path`` with (``ds``, ``tc``, ``hyper``) continues from:
    (arrays, first epoch to train, history, (best dev accuracy, best epoch, bad epochs), hyper changes);
    CheckpointError / ValueError, each one line, when it cannot be resumed so."""
    meta, arrays = checkpoint.load(path)
    saved_tc, saved_hyper = _read_meta(path, meta)
    try:
        start_epoch = int(meta["epoch"]) + 1
        history = list(meta["history"])
        best = meta["best_dev_accuracy"], meta["best_epoch"], meta["bad_epochs"]
    except (KeyError, TypeError, ValueError) as e:
        raise checkpoint.CheckpointError(f"{path}: not the checkpoint of a run to resume ({e!r})") from None
    if tc.epochs < start_epoch - 1:
        raise ValueError(
            f"{path} already holds {start_epoch - 1} epochs; resuming with {tc.epochs} would not continue "
            f"it (give --epochs ≥ {start_epoch - 1})"
        )
    data_now = (ds.name, int(ds.x_dev.shape[0]))
    data_then = (meta.get("dataset", ds.name), int(meta.get("dev_size", ds.x_dev.shape[0])))
    changes = meta.get("hyper_changes", []) + [
        {"epoch": start_epoch, **c}
        for c in _check_resume(path, (saved_tc, saved_hyper, data_then), (tc, hyper, data_now), log)
    ]
    return arrays, start_epoch, history, best, changes


def check_resume(out_dir, ds: Dataset, tc: TrainConfig, hyper: Hyper) -> None:
    """Raise what ``fit(ds, tc, hyper, out_dir=out_dir, resume=True)`` would raise about the checkpoint
    in ``out_dir`` (missing, unreadable, another structure, fewer epochs), without training or logging:
    for a caller that wants to refuse before it prints or loads anything else."""
    path = Path(out_dir) / "checkpoint.npz"
    if not path.is_file():
        raise checkpoint.CheckpointError(f"--resume: no checkpoint at {path}")
    _resume_point(path, ds, tc, hyper, log=lambda line: None)


def fit(
    ds: Dataset,
    tc: TrainConfig,
    hyper: Hyper,
    *,
    out_dir=None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log=print,
    data_parallel: bool = False,
    stop=None,
) -> FitResult:
    """Train with early stopping on dev accuracy; write checkpoint/metrics/curves/summary to out_dir.

    ``out_dir`` (optional) is checked before training (``OutputFolder.claim``): a folder holding a run
    is refused unless ``resume`` or ``overwrite`` (the old run's files go when the new run writes its
    first checkpoint). After every epoch it holds ``checkpoint.npz``,
    ``metrics.csv`` and ``summary.json`` (``"status": "running"``); at the end ``curves.png`` too and
    the status ``"finished"`` (with test accuracy). ``resume=True`` continues the checkpoint's run up to
    ``tc.epochs``: its structure must match (``CheckpointError`` naming each differing option); numbers of
    ``hyper`` that differ from the checkpoint's are applied from the next epoch on, logged, and listed in
    ``summary["hyper_changes"]``. The cosine horizon is ``tc.epochs`` long unless ``hyper.total_steps``
    was set, so a longer ``epochs`` extends the schedule.

    ``data_parallel=True`` shards every batch over all devices, those of every process after
    ``parallel.initialize`` (``jaxmlp.parallel``); then only process 0 writes ``out_dir`` (a resumed run
    reads its checkpoint on every process: ``out_dir`` must be on a file system they share).
    ``stop`` (optional): a callable asked after every epoch (and between its segments); when it returns a
    signal's name ("SIGINT", "SIGTERM") the run stops as if that signal had interrupted it. The command
    line passes the signals it received, so that one whose KeyboardInterrupt Python swallowed (raised
    while a garbage-collection callback ran: "Exception ignored in …") still stops the run.
    Raises ``TrainingDiverged`` when the loss turns non-finite and ``RunInterrupted`` on a
    KeyboardInterrupt; in both cases the checkpoint of the last finished epoch and the outputs of every
    finished epoch (status ``"diverged"`` / ``"interrupted"``; ``"process lost"`` when another process of a
    data-parallel run is gone, its error re-raised) stay on disk.
    """
    validate(hyper)
    n_train = ds.x_train.shape[0]
    check_batch_size(tc.batch_size, n_train)
    has_dev = ds.x_dev.shape[0] > 0
    if tc.patience and not has_dev:
        raise ValueError("early stopping (patience) needs a dev split to watch: give the data one, or patience 0")
    if ds.x_train.shape[1] != tc.model.sizes[0] or tc.model.sizes[-1] != ds.num_classes:
        raise ValueError(
            f"network {tc.model.sizes[0]}→…→{tc.model.sizes[-1]} does not fit data with "
            f"{ds.x_train.shape[1]} features and {ds.num_classes} classes"
        )
    steps_per_epoch = n_train // tc.batch_size
    hyper = with_cosine_horizon(hyper, tc, steps_per_epoch)
    writes = jax.process_index() == 0  # several processes: process 0 writes the outputs
    out = Path(out_dir) if out_dir is not None and writes else None
    ckpt_path = out / "checkpoint.npz" if out is not None else None
    resume_from = Path(out_dir) / "checkpoint.npz" if out_dir is not None else None
    if resume and (resume_from is None or not resume_from.is_file()):
        raise checkpoint.CheckpointError(f"--resume: no checkpoint at {resume_from}")
    hyper_arr = hyper.as_arrays()
    history, changes, start_epoch, best_acc, best_epoch, bad_epochs = [], [], 1, -1.0, 0, 0
    if resume:  # everything the checkpoint must agree with is checked before anything is compiled
        point = _resume_point(resume_from, ds, tc, hyper, log)
        arrays, start_epoch, history, (best_acc, best_epoch, bad_epochs), changes = point
    # memory, before anything large is allocated: the state and the data, then the compiled program
    have = memory.available_bytes()
    ts_shape = jax.eval_shape(lambda key: init_state(key, tc, hyper_arr), jax.random.PRNGKey(tc.seed))
    memory.check(
        memory.tree_bytes(ts_shape) + ds.x_train.nbytes + ds.y_train.nbytes,
        have,
        "this run's parameters, optimizer state and training data",
        "use narrower or fewer --hidden layers",
    )
    folder = OutputFolder.claim(out, resume=resume, overwrite=overwrite) if out is not None else None
    try:
        data_shape = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (ds.x_train, ds.y_train)]
        t0 = time.perf_counter()
        replicated = None
        if data_parallel and jax.device_count() > 1:
            data_mesh = parallel.mesh("data")
            epoch_fn = parallel.data_parallel_epoch(tc, data_mesh)
            replicated = NamedSharding(data_mesh, P())
            epoch_fn = epoch_fn.lower(ts_shape, hyper_arr, *data_shape).compile()
            segment = None
        else:  # the epoch in segments: an interrupt is answered within one (step.segment_steps)
            segment = segment_steps(tc, steps_per_epoch)
            order_fn = jax.jit(partial(epoch_order, n=n_train, tc=tc))
            idx_shape, start_shape = jax.eval_shape(order_fn, ts_shape.key), jax.ShapeDtypeStruct((), jnp.int32)
            order_fn = order_fn.lower(ts_shape.key).compile()
            epoch_fn = segment_program(tc, segment)
            epoch_fn = epoch_fn.lower(ts_shape, hyper_arr, *data_shape, idx_shape, start_shape).compile()
        compile_seconds = time.perf_counter() - t0
        memory.check(
            memory.program_bytes(epoch_fn) or 0,
            have,
            "the compiled training epoch",
            "use a smaller --batch-size or narrower --hidden layers",
        )
        ts = init_state(jax.random.PRNGKey(tc.seed), tc, hyper_arr)
        best = jax.tree_util.tree_map(jnp.copy, {"params": eval_params(ts), "bn_state": ts.bn_state})
        if resume:
            ts = checkpoint.restore(ts, arrays, "train", source=str(resume_from))
            best = checkpoint.restore(best, arrays, "best", source=str(resume_from))
            if start_epoch > tc.epochs:
                log(f"the checkpoint holds all {tc.epochs} epochs: nothing to train (ask for more epochs to continue)")
            elif tc.patience and bad_epochs >= tc.patience:
                log(
                    f"the run stopped early (no better dev accuracy for {bad_epochs} epochs): nothing to train "
                    "(raise --patience to continue it)"
                )
                start_epoch = tc.epochs + 1
    except BaseException:
        if folder is not None:
            folder.abandon()  # a run that fails before its first epoch leaves no folder behind
        raise
    x_train, y_train = jax.device_put(ds.x_train), jax.device_put(ds.y_train)
    if replicated is not None:  # the same values on every device of every process
        ts, x_train, y_train = parallel.global_put((ts, ds.x_train, ds.y_train), replicated)
    train_seconds = sum(r["seconds"] for r in history)

    def summary(status, test=(None, None)):
        examples = len(history) * steps_per_epoch * tc.batch_size
        return {
            "status": status,
            "test_accuracy": test[0],
            "test_loss": test[1],
            "dev_accuracy": best_acc if has_dev else None,
            "best_epoch": best_epoch,
            "selected_by": "best dev accuracy" if has_dev else "last epoch (no dev split)",
            "epochs": len(history),
            "stopped_early": status == "finished" and len(history) < tc.epochs,
            "seconds": train_seconds,
            "compile_seconds": compile_seconds,
            "examples_per_second": examples / train_seconds if train_seconds > 0 else float("nan"),
            "dataset": ds.name,
            "train_size": n_train,
            "dev_size": int(ds.x_dev.shape[0]),
            "config": tc.to_dict(),
            "hyper": hyper.to_dict(),
            "hyper_changes": changes,
            "backend": jax.default_backend(),
            "devices": jax.device_count() if replicated is not None else 1,
            "processes": jax.process_count() if replicated is not None else 1,
        }

    def write(status, curves=False, test=(None, None)):
        """The run's files; nothing while no checkpoint of this run exists (an epoch-1 failure leaves
        the folder as it was: empty, or the earlier run that --overwrite would have replaced)."""
        if out is not None and ckpt_path.exists() and not folder.replaced:
            report.write_csv(out / "metrics.csv", history)
            report.write_json(out / "summary.json", summary(status, test))
            if curves and history:
                report.plot_curves(history, out / "curves.png")

    def run_segments(ts):
        """One epoch, segment by segment, waiting for each: a signal's handler runs (and ``stop`` is
        asked) between two; an interrupted epoch is dropped whole (the checkpoint holds the last
        finished one, so a resume replays it exactly)."""
        idx, parts = order_fn(ts.key), []
        for start in range(0, steps_per_epoch, segment):
            ts, m = epoch_fn(ts, hyper_arr, x_train, y_train, idx, np.int32(start))
            parts.append(jax.block_until_ready(m))
            if stop is not None and start + segment < steps_per_epoch and (name := stop()):
                raise _Stopped(name)  # (after the last segment it is asked once the epoch is saved)
        return ts, {k: np.concatenate([np.asarray(p[k]) for p in parts])[:steps_per_epoch] for k in parts[0]}

    bar = report.progress(range(start_epoch, tc.epochs + 1), progress)
    # several processes: a peer found gone or hung by the watcher ends this process from its thread
    forget = parallel.when_leaving(lambda: write("process lost", curves=True))
    try:
        for epoch in bar:
            t = time.perf_counter()
            if segment is None:
                ts, metrics = epoch_fn(ts, hyper_arr, x_train, y_train)
            else:
                ts, metrics = run_segments(ts)
            losses = np.asarray(metrics["loss"])  # blocks until the epoch is done
            seconds = time.perf_counter() - t
            i = int(first_nonfinite(losses))
            if i >= 0:
                write("diverged", curves=True)
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
            if not has_dev or dev_acc > best_acc:  # no dev split: the last epoch is the one kept
                best_acc, best_epoch, bad_epochs = dev_acc, epoch, 0
                best = {"params": params_eval, "bn_state": ts.bn_state}
                best = jax.tree_util.tree_map(jnp.copy, best)  # ts is donated to the next epoch
            else:
                bad_epochs += 1
            dev_text = f"dev acc {dev_acc:.4f}" if has_dev else "no dev split"
            report.say(bar, f"epoch {epoch:3d}  train loss {row['train_loss']:.4f}  {dev_text}  {seconds:.2f}s", log)
            if ckpt_path is not None:
                meta = {
                    "config": tc.to_dict(),
                    "hyper": hyper.to_dict(),
                    "hyper_changes": changes,
                    "normalizer": ds.normalizer._asdict(),
                    "dataset": ds.name,
                    "dev_size": int(ds.x_dev.shape[0]),
                    "epoch": epoch,
                    "history": history + [row],
                    "best_dev_accuracy": best_acc,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                }
                folder.start()  # --overwrite: the old run's files go now that the new run has an epoch
                save_run(ckpt_path, ts, best, meta)
            # after the checkpoint: the files never claim an epoch the checkpoint does not hold
            history.append(row)
            write("running")
            if stop is not None and (name := stop()):
                raise _Stopped(name)
            if tc.patience and bad_epochs >= tc.patience:
                report.say(
                    bar,
                    f"early stop: no better dev accuracy for {tc.patience} epochs "
                    f"(best {best_acc:.4f} at epoch {best_epoch})",
                    log,
                )
                break
    except KeyboardInterrupt as e:
        if isinstance(e, RunInterrupted):
            raise
        write("interrupted", curves=True)
        if folder is not None:
            folder.remove_temp_files()
        resumable = ckpt_path is not None and ckpt_path.exists()
        if folder is not None and not resumable:
            folder.abandon()
        raise RunInterrupted(
            len(history), tc.epochs, out, getattr(e, "signal_name", "SIGINT"), resumable=resumable
        ) from None
    except TrainingDiverged:
        if folder is not None and not ckpt_path.exists():
            folder.abandon()
        raise
    except (RuntimeError, ValueError) as e:  # another process of the run gone: its files say so
        if parallel.lost_contact(e) and parallel.claim_ending():  # else the watcher writes them, leaving
            write("process lost", curves=True)
            if folder is not None:
                folder.remove_temp_files()
        raise
    finally:
        forget()

    test = evaluate(best["params"], best["bn_state"], ds.x_test, ds.y_test, config=tc.model)
    chosen = f"best dev {best_acc:.4f} at epoch {best_epoch}" if has_dev else f"no dev split: epoch {best_epoch}"
    log(f"test accuracy {test[0]:.4f} ({chosen})")
    write("finished", curves=True, test=test)
    return FitResult(ts, best["params"], best["bn_state"], history, summary("finished", test))
