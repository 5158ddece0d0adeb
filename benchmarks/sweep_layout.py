"""A sweep against its members run one after another: aggregate examples/s of K learning-rate members
(Adam, batch 128, float32, Fashion-MNIST) in each member layout, over K single runs.

For each net and K it times, interleaved round by round (paired ratios, medians of ``--repeats``):
  - ``single``: one single run's epoch (``jm.epoch_program``, what ``fit`` runs); K single runs take K×.
  - ``before``: what ``jaxmlp sweep`` ran before the layout probe: every member in one vmapped program
    (the default when they fit in memory) and, for K = 1, the vmapped program of one member (the old
    ``--chunk-size 1``).
  - ``after``: the layout ``run_sweep`` picks now (``sweep.layout_candidates`` + ``sweep.probe_layouts``,
    the same calls): c members per program, K/c programs one after another; c = 1 is the single-run
    program at the member's widths (``sweep.make_member_epoch``). Its probe's seconds are reported apart.
Every member costs the same (only the learning rate differs), so one program of c members is timed
and counted K/c times. An epoch is ``--examples`` training examples (the first of Fashion-MNIST's
train split), enough for stable medians without hour-long K = 64 cells.

    python benchmarks/sweep_layout.py [--members 1,4,16,64] [--nets 100/512,512] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np
from roofline import interleaved
from step_speed import load_data

import jaxmlp as jm
from jaxmlp import sweep


def cell(k, hidden, x, y, repeats):
    tc = jm.TrainConfig(model=jm.MLPConfig(sizes=(784, *hidden, 10)), optimizer="adam", batch_size=128)
    members = jm.grid(jm.Hyper(), {"learning_rate": list(np.geomspace(1e-4, 1e-2, k))}, hidden=[hidden])
    wide = sweep.padded_config(tc, members)
    steps = x.shape[0] // tc.batch_size
    idx = jm.data.batch_indices(jax.random.PRNGKey(0), x.shape[0], tc.batch_size)

    def vmapped(c):
        ts, masks, hyper = sweep.stack_members(members[:c], tc, wide)
        fn = sweep.make_epoch(wide, True, donate=False).lower(ts, hyper, x, y, idx, masks).compile()
        return fn, (ts, hyper, x, y, idx, masks)

    t = time.perf_counter()
    probe = sweep.probe_layouts(sweep.layout_candidates(k, 1, k), members, tc, wide, x, y) if k > 1 else {1: 0.0}
    probe_s = time.perf_counter() - t
    c = min(probe, key=probe.get)
    hyper1 = members[0].hyper.as_arrays()
    ts1 = jm.init_state(jax.random.PRNGKey(0), tc, hyper1)
    fns = {"single": (jm.epoch_program(tc, donate=False).lower(ts1, hyper1, x, y).compile(), (ts1, hyper1, x, y))}
    fns["before"] = vmapped(k)
    if c == 1:
        ts, masks, hyper = sweep.stack_members(members[:1], tc, wide)
        args = (ts, hyper, x, y, idx, masks)
        fns["after"] = (sweep.make_member_epoch(tc, hidden, True, donate=False).lower(*args).compile(), args)
    elif c != k:
        fns["after"] = vmapped(c)
    times = interleaved(fns, repeats)
    after = times["after"] if "after" in times else times["before"]
    runs = {"single": k, "before": 1, "after": -(-k // c)}  # programs per epoch of all K members (⌈K/c⌉)
    examples = k * steps * tc.batch_size
    return {
        "net": "784-" + "-".join(map(str, hidden)) + "-10",
        "members": k,
        "chosen_members_per_program": c,
        "probe": {str(m): 1 / s if s else None for m, s in probe.items()},
        "probe_s": probe_s,
        "single_examples_per_s": examples / (runs["single"] * statistics.median(times["single"])),
        "before_examples_per_s": examples / statistics.median(times["before"]),
        "after_examples_per_s": examples / (runs["after"] * statistics.median(after)),
        # paired per-round ratios: K single runs' time over the layout's time
        "before_vs_single": statistics.median([k * s / b for s, b in zip(times["single"], times["before"])]),
        "after_vs_single": statistics.median([k * s / (runs["after"] * a) for s, a in zip(times["single"], after)]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", default="1,4,16,64")
    ap.add_argument("--nets", default="100/512,512", help="hidden widths of each net, '/' between nets")
    ap.add_argument("--examples", type=int, default=10_240, help="training examples per epoch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    x, y, source = load_data(args.examples)
    x, y = x[: args.examples], y[: args.examples]
    rows = []
    print(
        f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}, data {source}, "
        f"{x.shape[0]} examples per epoch, Adam, batch 128, float32; medians of {args.repeats} paired rounds"
    )
    print(
        f"{'net':>16} {'K':>3} {'single ex/s':>12} {'before ex/s':>12} {'× single':>9} {'after ex/s':>11} "
        f"{'× single':>9} {'per program':>12} {'probe s':>8}"
    )
    for net in args.nets.split("/"):
        hidden = tuple(int(w) for w in net.split(","))
        for k in map(int, args.members.split(",")):
            r = cell(k, hidden, x, y, args.repeats)
            rows.append(r)
            print(
                f"{r['net']:>16} {k:>3} {r['single_examples_per_s']:>12.0f} {r['before_examples_per_s']:>12.0f} "
                f"{r['before_vs_single']:>9.2f} {r['after_examples_per_s']:>11.0f} {r['after_vs_single']:>9.2f} "
                f"{r['chosen_members_per_program']:>12} {r['probe_s']:>8.1f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            meta = {"backend": jax.default_backend(), "jax": jax.__version__, "data": source, "examples": x.shape[0]}
            json.dump({**meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
