"""Mutation testing: does the suite notice a one-line bug? ``make mutants`` (not part of ``make test``).

    python tests/mutants.py [--only SUBSTRING] [--keep]

Each mutant below replaces one exact fragment of one file with a plausible mistake (a wrong term, an
off-by-one in a formula, the old instead of the new value). For each, the tree is copied to a temp
folder, the mutant applied there — the checkout itself is never touched — and the tests that should
notice it run there (``pytest -x -m "not slow"``, with the copy first on PYTHONPATH). A mutant is
killed when they fail, and survives when they pass. Prints a line per mutant and the score; exits 1
when any mutant survives or no longer applies (its fragment is gone: update the list with the code).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OPS = ["tests/test_ops.py"]
NET = ["tests/test_mlp.py"]

# (what the mistake is, file, exact fragment, its replacement, the tests that must catch it)
MUTANTS = [
    ("sigmoid' without (1 − y)", "jaxmlp/ops/activations.py", "return dy * y * (1 - y)", "return dy * y", OPS),
    ("tanh' as 1 − y", "jaxmlp/ops/activations.py", "return dy * (1 - y * y)", "return dy * (1 - y)", OPS),
    ("ReLU' at 0 is 1", "jaxmlp/ops/activations.py", "jnp.where(y > 0, dy,", "jnp.where(y >= 0, dy,", OPS + NET),
    ("dropout backward without its mask", "jaxmlp/ops/dropout.py", "return dy * cache", "return dy", OPS),
    (
        "cross-entropy backward over m + 1",
        "jaxmlp/ops/losses.py",
        "(jnp.asarray(dloss, p.dtype) / m)",
        "(jnp.asarray(dloss, p.dtype) / (m + 1))",
        OPS,
    ),
    ("L2 gradient halved", "jaxmlp/ops/losses.py", "return (l2 / m) * W", "return (l2 / (2 * m)) * W", OPS + NET),
    ("batch norm backward without γ", "jaxmlp/ops/batchnorm.py", "g = dy * gamma  # dL/dx̂", "g = dy  # dL/dx̂", NET),
    (
        "evaluation batch norm's var gradient with s² for s³",
        "jaxmlp/ops/batchnorm.py",
        "-0.5 * inv_std**3",
        "-0.5 * inv_std**2",
        OPS,
    ),
    (
        "running variance left biased",
        "jaxmlp/ops/batchnorm.py",
        "unbiased = batch_var * (batch_size / max(batch_size - 1, 1))",
        "unbiased = batch_var",
        OPS,
    ),
    (
        "the transposed weight gradient off by 0.1%",
        "jaxmlp/ops/linear.py",
        "return jax.lax.optimization_barrier(_mm(dy.T, x, out_dtype)).T",
        "return jax.lax.optimization_barrier(_mm(dy.T, x, out_dtype)).T * 1.001",
        NET,
    ),
    (
        "the input gradient without Wᵀ",
        "jaxmlp/ops/linear.py",
        "dx = _mm(dy.astype(x.dtype), W.T, dy.dtype)",
        "dx = dy.astype(x.dtype) @ jnp.ones_like(W.T)",
        OPS,
    ),
    ("width masks left out of the backward", "jaxmlp/mlp.py", "dh = dh * masks[i]", "dh = dh", ["tests/test_sweep.py"]),
    (
        "Adam's v from g instead of g²",
        "jaxmlp/optim.py",
        "b2 * v + (1 - b2) * g * g",
        "b2 * v + (1 - b2) * g",
        ["tests/test_optim.py"],
    ),
    (
        "Adam's ε not rescaled",
        "jaxmlp/optim.py",
        "eps_hat = lr * jnp.sqrt(c2) / c1, eps * jnp.sqrt(c2)",
        "eps_hat = lr * jnp.sqrt(c2) / c1, eps",
        ["tests/test_optim.py"],
    ),
    (
        "momentum as an EMA of g",
        "jaxmlp/optim.py",
        "mu * v + g, state.velocity",
        "mu * v + (1 - mu) * g, state.velocity",
        ["tests/test_optim.py"],
    ),
    (
        "cosine over half a period",
        "jaxmlp/schedules.py",
        "jnp.cos(jnp.pi * progress)",
        "jnp.cos(jnp.pi * progress / 2)",
        ["tests/test_optim.py"],
    ),
    (
        "the step at the base learning rate, not the scheduled one",
        "jaxmlp/step.py",
        "learning_rate=schedules.learning_rate_at(tc.schedule, ts.step, hyper)",
        "learning_rate=hyper.learning_rate",
        ["tests/test_step.py"],
    ),
    (
        "the EMA of the old parameters",
        "jaxmlp/step.py",
        "optim.ema_update(ts.ema, params, hyper.ema_decay, ts.step + 1, tc.ema_schedule)",
        "optim.ema_update(ts.ema, ts.params, hyper.ema_decay, ts.step + 1, tc.ema_schedule)",
        ["tests/test_step.py"],
    ),
    (
        "the normalizer fitted on train + dev",
        "jaxmlp/data/prepare.py",
        "norm = fit_normalizer(xtr)",
        "norm = fit_normalizer(np.concatenate([xtr, xdev]))",
        ["tests/test_data_prepare.py"],
    ),
    (
        "one round of the permutation's sorts",
        "jaxmlp/data/batching.py",
        "perm = order if perm is None else perm[order]",
        "perm = order",
        ["tests/test_data_batching.py"],
    ),
]


def copy_tree(dest: Path) -> None:
    """The files git tracks (and untracked, unignored ones), as they are in the working tree."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def run(mutant, python: str) -> str:
    """'killed', 'survived' or 'does not apply'."""
    _, path, fragment, replacement, tests = mutant
    with tempfile.TemporaryDirectory(prefix="jaxmlp-mutant-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        text = (tree / path).read_text()
        if text.count(fragment) != 1:
            return "does not apply"
        (tree / path).write_text(text.replace(fragment, replacement))
        env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{tree / 'tests'}", JAX_PLATFORMS="cpu")
        r = subprocess.run(
            [python, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider", *tests],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
        )
        return "killed" if r.returncode == 1 else "survived" if r.returncode == 0 else f"error (pytest {r.returncode})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="run the mutants whose description contains this")
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if args.only is None or args.only in m[0]]
    results = []
    for m in chosen:
        t = time.perf_counter()
        outcome = run(m, sys.executable)
        results.append(outcome)
        print(f"{outcome:>15}  {m[0]}  ({m[1]}; {time.perf_counter() - t:.0f} s)", flush=True)
    killed = results.count("killed")
    print(
        f"{killed} of {len(results)} mutants killed"
        + (
            ""
            if killed == len(results)
            else f"; {len(results) - killed} not: {', '.join(m[0] for m, r in zip(chosen, results) if r != 'killed')}"
        )
    )
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
