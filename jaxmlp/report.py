"""Outputs shared by ``fit``, sweeps, checkpoints, downloads and experiments: the one atomic writer,
metrics CSV, summary JSON, the matplotlib set-up, the plots and the progress bar.

Contract::

    with atomic_write(path, "wb") as f: f.write(data)   # temp file beside path, fsync, rename
    write_csv(path, rows)                                # rows: list of dicts with the same keys
    write_json(path, obj)
    plt = pyplot()                                       # matplotlib's pyplot on the Agg backend
    save_figure(fig, path)                               # atomically, then closes the figure
    plot_curves(history, path)                           # fit's loss / accuracy curves
    plot_sweep(rows, history, axes, out_dir)             # a sweep's heatmap.png or curves.png
    plot_search(history, decisions, title, path)         # members' dev accuracy with halving/PBT steps
    bar = progress(iterable, enabled, desc="training"); say(bar, line, log)

Every file goes through ``files.atomic_write`` (re-exported here): the old file or the new one, never
half of either. matplotlib and tqdm are imported when first used.
"""

from __future__ import annotations

import csv
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from jaxmlp.files import atomic_write

__all__ = [
    "atomic_write",
    "write_csv",
    "write_json",
    "pyplot",
    "save_figure",
    "progress",
    "say",
    "plot_curves",
    "plot_sweep",
]


def write_csv(path, rows: list) -> None:
    """``rows`` (dicts sharing their keys, in order) as a CSV file with a header line."""
    with atomic_write(path, newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["epoch"])
        w.writeheader()
        w.writerows(rows)


def write_json(path, obj) -> None:
    with atomic_write(path) as f:
        f.write(json.dumps(obj, indent=2) + "\n")


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 100) -> None:
    """Lay out ``fig``, write it to ``path`` (format from the suffix) atomically, close it."""
    path = Path(path)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    pyplot().close(fig)


def progress(iterable, enabled: bool, desc: str = "training", unit: str = "epoch"):
    """A tqdm bar over ``iterable`` when enabled and standard error is a terminal, else the iterable
    itself: a bar redrawn into a log file or a pipe is noise, and the lines said per epoch (``say``)
    already give a non-terminal its periodic plain progress."""
    if not enabled or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit=unit, leave=False)


def say(bar, line: str, log) -> None:
    """Print ``line`` above a progress bar (tqdm.write) when ``log`` is print, else ``log(line)``."""
    if hasattr(bar, "write") and log is print:
        bar.write(line)
    else:
        log(line)


def plot_curves(history: list, path) -> None:
    """Loss and accuracy per epoch (train during the epoch, dev after it), two panels."""
    plt = pyplot()
    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    style = _curve_style(len(ep))
    a.plot(ep, [r["train_loss"] for r in history], style, label="train (cost during the epoch)")
    a.plot(ep, [r["dev_loss"] for r in history], style, label="dev")
    a.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    a.legend()
    b.plot(ep, [r["train_accuracy"] for r in history], style, label="train (during the epoch)")
    b.plot(ep, [r["dev_accuracy"] for r in history], style, label="dev")
    b.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    _integer_ticks(a, b)
    b.legend()
    save_figure(fig, path)


def plot_sweep(rows: list, history: list, axes: list, out: Path) -> None:
    """A sweep's picture: ``heatmap.png`` of dev accuracy over two axes, or ``curves.png`` (dev accuracy
    against one axis, and each value's learning curve); nothing for more axes. ``rows``: one dict per
    member; ``history``: per epoch, {"dev_accuracy": list over members} (NaN: the member did not train
    that epoch, as after a halving rung)."""
    with warnings.catch_warnings():  # a mean over only NaN (members that stopped) is NaN, and no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        _plot_sweep(rows, history, axes, out)


def _plot_sweep(rows: list, history: list, axes: list, out: Path) -> None:
    plt = pyplot()
    axes = list(axes)
    if len({r["hidden"] for r in rows}) > 1:
        axes = axes + ["hidden"]
    if len(axes) == 2:
        a, b = axes
        va, vb = sorted({r[a] for r in rows}, key=_key), sorted({r[b] for r in rows}, key=_key)
        grid_ = np.full((len(va), len(vb)), np.nan)
        for i, x in enumerate(va):
            for j, y in enumerate(vb):
                accs = [r["dev_accuracy"] for r in rows if r[a] == x and r[b] == y]
                grid_[i, j] = np.nanmean(accs) if not all(np.isnan(accs)) else np.nan
        fig, ax = plt.subplots(figsize=(1.2 * len(vb) + 3, 0.6 * len(va) + 2.5))
        im = ax.imshow(grid_, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(vb)), [_fmt(v) for v in vb])
        ax.set_yticks(range(len(va)), [_fmt(v) for v in va])
        ax.set(xlabel=b, ylabel=a, title="dev accuracy (mean over seeds; blank = diverged)")
        for i in range(len(va)):
            for j in range(len(vb)):
                if np.isfinite(grid_[i, j]):
                    light = im.norm(grid_[i, j]) > 0.6  # dark text on the bright end of viridis
                    ax.text(
                        j, i, f"{grid_[i, j]:.3f}", ha="center", va="center", fontsize=8, color="k" if light else "w"
                    )
        fig.colorbar(im, ax=ax, label="dev accuracy")
        save_figure(fig, out / "heatmap.png")
    elif len(axes) == 1:
        (a,) = axes
        vals = sorted({r[a] for r in rows}, key=_key)
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        means = [np.nanmean([r["dev_accuracy"] for r in rows if r[a] == v] or [np.nan]) for v in vals]
        xs = list(range(len(vals))) if a == "hidden" else vals
        left.plot(xs, means, "o-")
        if a != "hidden" and min(vals) > 0 and max(vals) / min(vals) > 50:
            left.set_xscale("log")
        if a == "hidden":
            left.set_xticks(xs, vals)
        left.set(xlabel=a, ylabel="final dev accuracy (mean over seeds)", title=f"dev accuracy vs {a}")
        epochs = range(1, len(history) + 1)
        for v in vals:
            members = [r["member"] for r in rows if r[a] == v]
            curve = [np.nanmean([ep["dev_accuracy"][m] for m in members]) for ep in history]
            right.plot(epochs, curve, _curve_style(len(history)), label=f"{a}={_fmt(v)}")
        right.set(xlabel="epoch", ylabel="dev accuracy", title="learning curves")
        _integer_ticks(right)
        right.legend(fontsize=7)
        save_figure(fig, out / "curves.png")


def plot_search(history: list, decisions, title: str, path: Path) -> None:
    """Every member's dev accuracy by epoch (a line ends where the member stopped), with a dashed line
    at each decision: the rungs of successive halving, the steps of PBT."""
    plt = pyplot()
    dev = np.array([ep["dev_accuracy"] for ep in history], dtype=float)  # (epochs, members)
    epochs = np.arange(1, len(history) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in range(dev.shape[1]):
        ax.plot(epochs, dev[:, m], _curve_style(len(history)), lw=0.8, ms=2.5, alpha=0.7)
    for i, e in enumerate(decisions):
        ax.axvline(e, color="0.5", ls="--", lw=0.8, label="decision" if i == 0 else None)
    ax.set(xlabel="epoch", ylabel="dev accuracy", title=title)
    _integer_ticks(ax)
    if len(decisions):
        ax.legend(fontsize=7)
    save_figure(fig, path)


def _curve_style(points: int) -> str:
    """Lines with markers while there are few points (a one-epoch curve is a single visible dot)."""
    return "o-" if points <= 30 else "-"


def _integer_ticks(*axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers


def _key(v):
    return (0, v) if isinstance(v, (int, float)) else (1, [int(s) for s in str(v).split(",") if s])


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
