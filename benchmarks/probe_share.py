"""What a sweep's layout choice costs: the probe's seconds against the sweep's training, per case.

Each case is one ``jm.run_sweep`` on Fashion-MNIST (50k/10k/10k, the CLI's data), run three ways in a row:
  - ``auto, first``: ``probe=None`` with an empty layout cache: the cost model decides whether a probe pays
    (``jaxmlp.chunks``), and a probe that runs stops at its 10% share;
  - ``auto, again``: the same sweep once more: the cache holds what the first run measured, if it did;
  - ``always``: ``probe=True``, every candidate layout timed (what 0.3.0 did for any sweep of enough work):
    the fastest layout, and what finding it costs.
Reported from each run's ``summary.json`` fields: training seconds, compile seconds, probe seconds, the
probe's share of training + compile + probe, the chosen members per program and how it was chosen.
Wall seconds include loading, plotting and writing (the sweeps write to a temporary folder).

    python benchmarks/probe_share.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import jaxmlp as jm

CASES = {  # name: (hidden, members, epochs, halving)
    "784-256-10, 27 lr, halving 3, 9 epochs (#26)": ((256,), 27, 9, 3),
    "784-100-10, 16 lr, 3 epochs": ((100,), 16, 3, None),
    "784-512-512-10, 8 lr, 2 epochs": ((512, 512), 8, 2, None),
}


def one(ds, hidden, k, epochs, halving, probe, out):
    tc = jm.TrainConfig(model=jm.MLPConfig(sizes=(784, *hidden, 10)), optimizer="adam", batch_size=128, epochs=epochs)
    members = jm.grid(jm.Hyper(), {"learning_rate": list(np.geomspace(1e-4, 1e-1, k))}, hidden=[hidden])
    t = time.perf_counter()
    res = jm.run_sweep(
        ds, tc, members, halving=halving, probe=probe, axes=["learning_rate"], out_dir=out, overwrite=True, log=print
    )
    s = res.summary
    total = s["seconds"] + s["compile_seconds"] + s["probe_seconds"]
    return {
        "wall_s": time.perf_counter() - t,
        "train_s": s["seconds"],
        "compile_s": s["compile_seconds"],
        "probe_s": s["probe_seconds"],
        "probe_share": s["probe_seconds"] / total,
        "chunk": s["chunk_size"],
        "layout": s["layout"],
        "best_dev": s["best"]["dev_accuracy"],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None)
    args = p.parse_args()
    ds = jm.load_dataset("fashion-mnist", None, dev_size=10_000, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (hidden, k, epochs, halving) in CASES.items():
            os.environ["JAXMLP_LAYOUT_CACHE"] = str(Path(tmp) / f"cache-{len(rows)}.json")  # empty per case
            for label, probe in (("auto, first", None), ("auto, again", None), ("always", True)):
                r = one(ds, hidden, k, epochs, halving, probe, Path(tmp) / "out")
                rows.append({"case": name, "run": label, **r})
    print("\n| case | run | members per program (how) | train s | compile s | probe s | probe share | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['run']} | {r['chunk']} ({r['layout']}) | {r['train_s']:.1f} | {r['compile_s']:.1f} | "
            f"{r['probe_s']:.1f} | {100 * r['probe_share']:.0f}% | {r['wall_s']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
