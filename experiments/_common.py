"""Shared plumbing for the experiment scripts (data slices, tables, figures). No model code here."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from jaxmlp import data, train

REPO = Path(__file__).resolve().parents[1]
MNIST_T10K = Path(os.environ.get("JAXMLP_MNIST_T10K", REPO.parent / "shared" / "data" / "mnist-t10k"))


@functools.lru_cache(maxsize=4)
def _fashion(dev_size: int, seed: int) -> data.Dataset:
    return data.load_dataset("fashion-mnist", dev_size=dev_size, seed=seed)  # read once per process


def fashion(quick: bool, seed: int = 0, dev_size: int = 10_000) -> data.Dataset:
    """Fashion-MNIST 50k/10k/10k; quick: the first 2000 train, 500 dev and 500 test examples."""
    ds = _fashion(dev_size, seed)
    return data.subset(ds, 2000, 500, 500) if quick else ds


def mnist_digits(quick: bool, seed: int = 0) -> data.Dataset:
    """Real MNIST digits available offline: the t10k set split 8000 train / 2000 test (seeded);
    quick: 1000 train / 500 test."""
    ds = data.load_test_split("mnist", MNIST_T10K, train_size=8000, seed=seed)
    return data.subset(ds, 1000, 0, 500) if quick else ds


def fit(ds, tc, hyper):
    return train.fit(ds, tc, hyper, progress=False, log=lambda s: None)


def table(headers, rows) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def pct(x) -> str:
    return "—" if x is None or x != x else f"{100 * x:.2f}%"


def savefig(fig, out: Path, name: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    plt().close(fig)
    return name


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot
