"""Run the experiments: ``python -m experiments [NAME ...] [--quick] [--out DIR]``.

Full runs write figures and ``experiments/RESULTS.md`` (each table with the command, date and
machine). ``--quick`` runs each on a small slice in seconds, into ``--out`` (a temp folder by
default), so ``make test`` keeps the scripts from rotting without touching the committed results.
"""

import argparse
import datetime
import importlib
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jax

import jaxmlp as jm
from jaxmlp import report

NAMES = [
    "seed_reproduction",
    "activations",
    "optimizers",
    "ema_default",
    "regularization",
    "sweep_lr_l2",
    "search_budget",
    "best_mlp",
    "push_fashion",
]
HERE = Path(__file__).resolve().parent


def machine() -> str:
    return (
        f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
        f"{jax.default_backend()}, jax {jax.__version__}, Python {platform.python_version()}"
    ).replace("  ", " ")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=NAMES, help=f"any of {', '.join(NAMES)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="a small slice of each, in seconds")
    ap.add_argument(
        "--out",
        default=None,
        help="folder for figures and sections (default: experiments/ for full runs, a temp folder for --quick)",
    )
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        print(
            f"experiments: error: unknown experiment {', '.join(unknown)}; choose from {', '.join(NAMES)}",
            file=sys.stderr,
        )
        return 2
    temporary = args.quick and not args.out
    out = Path(tempfile.mkdtemp(prefix="jaxmlp-exp-")) if temporary else Path(args.out or HERE / "figures")
    sections_dir = out / "sections"
    failed = True
    try:
        sections_dir.mkdir(parents=True, exist_ok=True)
        for name in args.names:
            run_one(name, args.quick, out, sections_dir)
        failed = False
    except (jm.DatasetError, ValueError, OSError) as e:
        print(f"experiments: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("experiments: interrupted", file=sys.stderr)
        return 130
    finally:
        if temporary and failed:  # a failed --quick run leaves no temp folder behind
            shutil.rmtree(out, ignore_errors=True)
    if not args.quick and args.out is None:
        write_results(sections_dir)
    return 0


def run_one(name: str, quick: bool, out: Path, sections_dir: Path) -> None:
    """Run one experiment and write its section (its figures go to ``out``)."""
    t = time.perf_counter()
    module = importlib.import_module(f"experiments.{name}")
    body = module.run(quick, out)
    seconds = time.perf_counter() - t
    cmd = f"python -m experiments {name}" + (" --quick" if quick else "")
    head = (
        f"## {name}\n\n{(module.__doc__ or '').strip()}\n\n"
        f"Command: `{cmd}` — {datetime.date.today().isoformat()}, {machine()}, {seconds:.0f} s.\n\n"
    )
    with report.atomic_write(sections_dir / f"{name}.md") as f:
        f.write(head + body)
    print(f"{name}: done in {seconds:.1f} s → {out}", flush=True)


def write_results(sections_dir: Path) -> None:
    """experiments/RESULTS.md from every section present (figures live in experiments/figures/)."""
    parts = [
        "# Experiment results\n\nWhat each item of the seed notebook's to-do list does, reproducibly. "
        "Regenerate everything with `make experiments` (or one with `python -m experiments NAME`); "
        "figures are in `figures/`.\n"
    ]
    for name in NAMES:
        f = sections_dir / f"{name}.md"
        if f.exists():
            text = f.read_text()
            parts.append(text.replace("](", "](figures/").replace("](figures/http", "](http"))
    with report.atomic_write(HERE / "RESULTS.md") as f:
        f.write("\n".join(parts))


if __name__ == "__main__":
    sys.exit(main())
