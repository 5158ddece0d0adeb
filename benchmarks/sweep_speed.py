"""Sweep throughput: K members of a 784-100-10 ReLU net (Adam, float32, batch 128) for one epoch.

For each K: aggregate training examples/s of the vmapped sweep program (compile excluded, median of
``--repeats`` rounds), the ratio to K sequential single runs (the plain jitted epoch, times K), and
the roofline floor (the vmapped step's matmuls at their shapes + Adam's bytes for K members over
measured elementwise bandwidth). Each round runs the sweep's epoch, the single run's epoch and the two
floor programs back to back (order alternating), and the ratios are medians of per-round ratios.
The sweep's time includes drawing its shared data order for the epoch, as each single run's includes
drawing its own.

    python benchmarks/sweep_speed.py [--members 1,4,16,64] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
from roofline import bandwidth_program, interleaved, matmul_floor_program
from step_speed import load_data

import jaxmlp as jm
from jaxmlp import sweep


def bench(k, tc, x, y, repeats, single):
    """K members' epoch, interleaved round by round with the single run ``single`` = (fn, args) and
    the two floor programs, so every ratio is paired."""
    members = (
        jm.grid(
            jm.Hyper(), {"learning_rate": list(jnp.geomspace(1e-4, 1e-2, k).tolist())}, hidden=[tc.model.sizes[1:-1]]
        )
        if k > 1
        else jm.grid(jm.Hyper(), {}, hidden=[tc.model.sizes[1:-1]])
    )
    wide_tc = sweep.padded_config(tc, members)  # as run_sweep builds it
    ts, masks, hyper = sweep.stack_members(members, tc, wide_tc)
    steps = x.shape[0] // tc.batch_size
    # the shared data order is drawn once per epoch (as run_sweep does), and timed with the epoch,
    # since each single run draws its own inside its program
    draw = jax.jit(jm.data.batch_indices, static_argnums=(1, 2))
    idx = draw(jax.random.PRNGKey(0), x.shape[0], tc.batch_size)
    # the library's sweep program, without buffer donation so the same state can be timed repeatedly
    fn = sweep.make_epoch(wide_tc, shared_order=True, donate=False)
    t = time.perf_counter()
    compiled = fn.lower(ts, hyper, x, y, idx, masks).compile()
    compile_s = time.perf_counter() - t
    n_params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(ts.params))  # all K members

    def sweep_epoch(key):  # interleaved() warms it up, draw included
        return compiled(ts, hyper, x, y, draw(key, x.shape[0], tc.batch_size), masks)

    times = interleaved(
        {
            "sweep": (sweep_epoch, (jax.random.PRNGKey(1),)),
            "single": single,
            "floor_matmul": matmul_floor_program(tc.model.sizes, tc.batch_size, steps, members=k),
            "floor_adam": bandwidth_program(n_params, steps),  # Adam's 28 bytes per parameter per step
        },
        repeats,
    )
    sec = statistics.median(times["sweep"])
    floor_all = [m + b for m, b in zip(times["floor_matmul"], times["floor_adam"])]  # epoch seconds
    return {
        "members": k,
        "compile_s": compile_s,
        "epoch_s": sec,
        "examples_per_s": k * steps * tc.batch_size / sec,
        "single_epoch_s": statistics.median(times["single"]),
        "speedup_vs_sequential": statistics.median([k * s1 / sk for s1, sk in zip(times["single"], times["sweep"])]),
        "floor_epoch_s": statistics.median(floor_all),
        "vs_floor": statistics.median([sk / f for sk, f in zip(times["sweep"], floor_all)]),
        "floor_matmul_share": statistics.median([m / f for m, f in zip(times["floor_matmul"], floor_all)]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", default="1,4,16,64")
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--unroll", type=int, default=1, help="steps per iteration of the epoch's loop")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    x, y, source = load_data(50_000)
    tc = jm.TrainConfig(
        model=jm.MLPConfig(sizes=(784, args.hidden, 10)),
        optimizer="adam",
        batch_size=args.batch,
        scan_unroll=args.unroll,
    )
    hyper = jm.Hyper().as_arrays()
    ts = jm.init_state(jax.random.PRNGKey(0), tc, hyper)
    single = (
        jax.jit(lambda ts, h: jm.train_epoch(ts, h, x, y, tc=tc))
        .lower(ts, hyper)
        .compile(compiler_options=jm.epoch_options())
    )
    rows = [bench(int(k), tc, x, y, args.repeats, (single, (ts, hyper))) for k in args.members.split(",")]
    single_s = statistics.median([r["single_epoch_s"] for r in rows])
    print(
        f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}, "
        f"data {source}, net 784-{args.hidden}-10, Adam, batch {args.batch}, float32, scan unroll "
        f"{args.unroll}; one epoch = "
        f"{x.shape[0] // args.batch} steps; single run {x.shape[0] // args.batch * args.batch / single_s:.0f} ex/s"
    )
    print(
        f"{'K':>4} {'aggregate ex/s':>15} {'vs K sequential':>16} {'epoch s':>8} {'floor s':>8} "
        f"{'epoch/floor':>12} {'compile s':>10}"
    )
    for r in rows:
        print(
            f"{r['members']:>4} {r['examples_per_s']:>15.0f} {r['speedup_vs_sequential']:>16.2f} "
            f"{r['epoch_s']:>8.3f} {r['floor_epoch_s']:>8.3f} {r['vs_floor']:>12.3f} {r['compile_s']:>10.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "backend": jax.default_backend(),
                    "device": jax.devices()[0].device_kind,
                    "jax": jax.__version__,
                    "data": source,
                    "scan_unroll": args.unroll,
                    "single_epoch_s": single_s,
                    "rows": rows,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
