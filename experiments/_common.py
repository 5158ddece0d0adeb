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


def mnist_t10k_folder() -> Path:
    """A folder holding the real MNIST t10k files: ``MNIST_T10K`` (../shared/data/mnist-t10k, or
    $JAXMLP_MNIST_T10K) when it has them, else jaxmlp's own search (``--data-dir``-less: $JAXMLP_DATA,
    the cache, then the SHA-256-checked download). DatasetError when none of them can."""
    found = jm.data.find_in(MNIST_T10K) if MNIST_T10K.is_dir() else None
    if found and {"test_images", "test_labels"} <= set(found):
        return MNIST_T10K
    return jm.data.find_files("mnist")["test_images"].parent


def mnist_digits(quick: bool, seed: int = 0) -> jm.Dataset:
    """Real MNIST digits: the t10k set split 8000 train / 2000 test (seeded); quick: 1000 train / 500
    test. Where no MNIST can be reached, quick runs use Fashion-MNIST in their place (said on stdout)
    and full runs raise DatasetError saying what is needed."""
    try:
        folder = mnist_t10k_folder()
    except jm.DatasetError as e:
        if not quick:
            raise jm.DatasetError(
                f"the MNIST digits are not here ({MNIST_T10K} holds no t10k files, and {e}); set "
                "JAXMLP_MNIST_T10K to a folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz"
            ) from None
        print("note: no MNIST digits reachable; this --quick run uses Fashion-MNIST in their place", flush=True)
        return fashion(quick, seed)._replace(name="fashion-mnist (in place of the MNIST digits)")
    ds = jm.data.load_test_split("mnist", folder, train_size=8000, seed=seed)
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
