"""Shared plumbing for the experiment scripts (data slices, tables, figures). No model code here."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jaxmlp as jm
from jaxmlp import report

REPO = Path(__file__).resolve().parents[1]
MNIST_T10K = Path(os.environ.get("JAXMLP_MNIST_T10K", REPO.parent / "shared" / "data" / "mnist-t10k"))


@functools.lru_cache(maxsize=4)
def _fashion(dev_size: int, seed: int) -> jm.Dataset:
    return jm.load_dataset("fashion-mnist", dev_size=dev_size, seed=seed)  # read once per process


def fashion(quick: bool, seed: int = 0, dev_size: int = 10_000) -> jm.Dataset:
    """Fashion-MNIST 50k/10k/10k; quick: the first 2000 train, 500 dev and 500 test examples."""
    ds = _fashion(dev_size, seed)
    return jm.data.subset(ds, 2000, 500, 500) if quick else ds


def mnist_digits(quick: bool, seed: int = 0) -> jm.Dataset:
    """Real MNIST digits available offline: the t10k set split 8000 train / 2000 test (seeded);
    quick: 1000 train / 500 test."""
    ds = jm.data.load_test_split("mnist", MNIST_T10K, train_size=8000, seed=seed)
    return jm.data.subset(ds, 1000, 0, 500) if quick else ds


def fit(ds, tc, hyper):
    return jm.fit(ds, tc, hyper, progress=False, log=lambda s: None)


def table(headers, rows) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def pct(x) -> str:
    return "—" if x is None or x != x else f"{100 * x:.2f}%"


def savefig(fig, out: Path, name: str) -> str:
    report.save_figure(fig, Path(out) / name)
    return name


plt = report.pyplot  # matplotlib.pyplot on the Agg backend
