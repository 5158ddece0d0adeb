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
        cells = [[[r for r in rows if r[a] == x and r[b] == y] for y in vb] for x in va]
        if all(cell for line in cells for cell in line):
            _plot_grid(cells, a, b, va, vb, out / "heatmap.png")
        else:  # random draws: most pairs of values were never drawn, which is not what diverged means
            _plot_draws(rows, a, b, va, vb, out / "heatmap.png")
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


def _plot_grid(cells, a: str, b: str, va: list, vb: list, path: Path) -> None:
    """A grid's heatmap: each cell the mean dev accuracy of its members (over seeds) that did not
    diverge; a cell whose members all diverged is grey and says so, one where some did counts them."""
    plt = pyplot()
    acc = np.array(
        [[np.nanmean([r["dev_accuracy"] for r in c if not r["diverged"]] or [np.nan]) for c in ln] for ln in cells]
    )
    fig, ax = plt.subplots(figsize=(max(6.5, 1.2 * len(vb) + 3), 0.6 * len(va) + 2.5))
    ax.set_facecolor("0.8")  # NaN cells are not drawn by imshow: the diverged ones show this grey
    im = ax.imshow(acc, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(vb)), [_fmt(v) for v in vb])
    ax.set_yticks(range(len(va)), [_fmt(v) for v in va])
    ax.set(xlabel=b, ylabel=a, title="dev accuracy (mean over seeds; grey = every member diverged)")
    for i, line in enumerate(cells):
        for j, cell in enumerate(line):
            bad = sum(r["diverged"] for r in cell)
            if bad == len(cell):
                ax.text(j, i, "diverged", ha="center", va="center", fontsize=8, color="k")
                continue
            light = im.norm(acc[i, j]) > 0.6  # dark text on the bright end of viridis
            text = f"{acc[i, j]:.3f}" + (f"\n({bad}/{len(cell)} diverged)" if bad else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="k" if light else "w")
    fig.colorbar(im, ax=ax, label="dev accuracy")
    save_figure(fig, path)


def _plot_draws(rows: list, a: str, b: str, va: list, vb: list, path: Path) -> None:
    """Random draws over two axes: one point per member at its values, coloured by its dev accuracy;
    diverged members as red crosses, the best as a star. Pairs of values never drawn stay empty."""
    plt = pyplot()

    def position(values):
        numeric = all(isinstance(v, (int, float)) for v in values)
        return (lambda v: v) if numeric else (lambda v: values.index(v)), numeric

    (pa, na), (pb, nb) = position(va), position(vb)
    fine = [r for r in rows if not r["diverged"]]
    bad = [r for r in rows if r["diverged"]]
    fig, ax = plt.subplots(figsize=(7, 5))
    if fine:
        pts = ax.scatter(
            [pb(r[b]) for r in fine],
            [pa(r[a]) for r in fine],
            c=[r["dev_accuracy"] for r in fine],
            cmap="viridis",
            s=40,
            edgecolors="k",
            linewidths=0.3,
            label="member (colour: dev accuracy)",
        )
        fig.colorbar(pts, ax=ax, label="dev accuracy")
        top = max(fine, key=lambda r: r["dev_accuracy"])
        ax.scatter(
            [pb(top[b])],
            [pa(top[a])],
            marker="*",
            s=300,
            facecolors="none",
            edgecolors="tab:red",
            lw=1.5,
            label=f"best: dev {top['dev_accuracy']:.4f}",
        )
    if bad:
        ax.scatter(
            [pb(r[b]) for r in bad], [pa(r[a]) for r in bad], marker="x", color="tab:red", s=40, label="diverged"
        )
    for values, numeric, scale, ticks in (
        (vb, nb, ax.set_xscale, ax.set_xticks),
        (va, na, ax.set_yscale, ax.set_yticks),
    ):
        if not numeric:
            ticks(range(len(values)), [str(v) for v in values])
        elif min(values) > 0 and max(values) / min(values) > 50:
            scale("log")
    ax.set(xlabel=b, ylabel=a, title=f"dev accuracy of the {len(rows)} drawn members")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_search(history: list, decisions, title: str, path: Path, best: int | None = None) -> None:
    """Every member's dev accuracy by epoch (a line ends where the member stopped), with a dashed line
    at each decision — the epochs after which members were compared (halving's rungs before the end, PBT's
    steps) — and the winner ``best`` (a member index) drawn on top and named in the legend."""
    plt = pyplot()
    dev = np.array([ep["dev_accuracy"] for ep in history], dtype=float)  # (epochs, members)
    epochs = np.arange(1, len(history) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    style = _curve_style(len(history))
    for m in range(dev.shape[1]):
        label = "members" if m == 0 else None
        ax.plot(epochs, dev[:, m], style, color="0.55", lw=0.8, ms=2.5, alpha=0.6, label=label)
    for i, e in enumerate(decisions):
        ax.axvline(e, color="tab:blue", ls="--", lw=0.9, label="decision (members compared)" if i == 0 else None)
    if best is not None:
        last = np.flatnonzero(np.isfinite(dev[:, best]))
        at = f", dev {dev[last[-1], best]:.4f}" if last.size else ""
        ax.plot(epochs, dev[:, best], style, color="tab:red", lw=2, ms=4, label=f"best: member {best}{at}")
        if last.size:
            ax.plot(epochs[last[-1]], dev[last[-1], best], "*", color="tab:red", ms=14)
    ax.set(xlabel="epoch", ylabel="dev accuracy", title=title)
    _integer_ticks(ax)
    ax.legend(fontsize=7, loc="lower right")
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
