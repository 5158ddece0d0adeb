"""Training-step speed of workload W against the roofline floor measured in the same run.

W: 784-512-512-10 ReLU, Adam, float32, batch 128 (other batch sizes and nets via options), data on
the device, one epoch = one lax.scan. Reports training examples/s (compile excluded, median of
``--repeats`` rounds) for the hand-written step and for the same step with jax.grad's gradients,
and the floor:

    floor = matmul FLOPs per step / measured matmul rate at W's shapes
          + optimizer bytes per step / measured elementwise bandwidth

The matmul rate is measured by scanning exactly the step's matmuls (forward, weight gradients, input
gradients except the first layer's) at the same shapes; the bandwidth by scanning an Adam-like
elementwise update (read p, g, m, v; write p, m, v) over arrays of the model's size.

    python benchmarks/step_speed.py [--batch 128] [--hidden 512,512] [--repeats 5]
                                    [--matmul-dtype bfloat16] [--unroll N] [--json out.json]

Each round runs one epoch of each path and one of each floor program back to back (order
alternating between rounds); the manual/autodiff ratio and each path's ratio to the floor are taken
per round and reported as the median over rounds with a bootstrap 95% confidence interval.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from roofline import bandwidth_program, interleaved, matmul_floor_program, matmul_flops_per_step

import jaxmlp as jm
from jaxmlp.step import _epoch


def load_data(n_train: int):
    try:
        ds = jm.data.load_dataset("fashion-mnist", allow_download=False)
        return jnp.asarray(ds.x_train), jnp.asarray(ds.y_train), "fashion-mnist"
    except jm.DatasetError:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n_train, 784), dtype=np.float32)
        return jnp.asarray(x), jnp.asarray(rng.integers(0, 10, n_train, dtype=np.int32)), "synthetic"


def median_ci(values, level=0.95, resamples=2000, seed=0):
    """The median and a bootstrap confidence interval for it (percentile method)."""
    v = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    meds = np.median(rng.choice(v, size=(resamples, v.size), replace=True), axis=1)
    return float(np.median(v)), float(np.quantile(meds, (1 - level) / 2)), float(np.quantile(meds, (1 + level) / 2))


def bench(sizes, batch, repeats, x, y, matmul_dtype="float32", unroll=1):
    config = jm.MLPConfig(sizes=sizes, activation="relu", matmul_dtype=matmul_dtype)
    tc = jm.TrainConfig(model=config, optimizer="adam", batch_size=batch, scan_unroll=unroll)
    hyper = jm.Hyper(learning_rate=1e-3).as_arrays()
    ts = jm.init_state(jax.random.PRNGKey(0), tc, hyper)
    steps = x.shape[0] // batch
    n_params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(ts.params))
    out = {
        "sizes": list(sizes),
        "batch": batch,
        "steps_per_epoch": steps,
        "params": n_params,
        "matmul_dtype": matmul_dtype,
        "scan_unroll": unroll,
        "compiler_options": jm.epoch_options(),
    }
    compiled = {}
    # the library's epoch (step._epoch with the hand-written gradients is exactly jm.train_epoch) and the
    # same epoch with jax.grad's gradients
    for name, grads in (("manual", jm.loss_and_grads), ("autodiff", jm.autodiff_loss_and_grads)):
        grad_fn = partial(grads, config=config)
        fn = jax.jit(lambda ts, h, x, y, g=grad_fn: _epoch(ts, h, x, y, tc, None, g))
        t = time.perf_counter()
        compiled[name] = fn.lower(ts, hyper, x, y).compile(compiler_options=jm.epoch_options())
        out[f"{name}_compile_s"] = time.perf_counter() - t
        mem = compiled[name].memory_analysis()  # XLA's buffer assignment: arguments + outputs + temporaries
        out[f"{name}_peak_mb"] = (
            getattr(mem, "peak_memory_in_bytes", 0)
            or mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
        ) / 2**20
    # The two paths and the two floor programs are timed INTERLEAVED, round by round (alternating
    # the order), so drift in this noisy machine's speed hits all alike and every ratio is paired.
    flops = matmul_flops_per_step(sizes, batch)
    mm_fn = matmul_floor_program(sizes, batch, steps, dtype=jnp.bfloat16 if matmul_dtype == "bfloat16" else jnp.float32)
    progs = {n: (c, (ts, hyper, x, y)) for n, c in compiled.items()}
    progs.update(floor_matmul=mm_fn, floor_adam=bandwidth_program(n_params, steps))
    times = interleaved(progs, repeats)
    for name in ("manual", "autodiff"):
        v = times[name]
        sec = statistics.median(v)
        out[f"{name}_epoch_s_all"] = v
        out[f"{name}_step_s"] = sec / steps
        out[f"{name}_examples_per_s"] = steps * batch / sec
    # floor of round i = its matmul time + the optimizer's 28·n_params bytes at its measured bandwidth
    # (bandwidth_program moves exactly those bytes per step, so that term is its time per step)
    floor_all = [(m + b) / steps for m, b in zip(times["floor_matmul"], times["floor_adam"])]
    mm_step = statistics.median(times["floor_matmul"]) / steps
    opt_bytes = 7 * 4 * n_params
    bw = opt_bytes / (statistics.median(times["floor_adam"]) / steps)
    out.update(
        matmul_flops_per_step=flops,
        flops_per_example=flops / batch,
        matmul_gflops=flops / mm_step / 1e9,
        bandwidth_gb_s=bw / 1e9,
        optimizer_bytes_per_step=opt_bytes,
        floor_step_s=statistics.median(floor_all),
        floor_step_s_all=floor_all,
    )
    out["floor_examples_per_s"] = batch / out["floor_step_s"]
    for name in ("manual", "autodiff"):  # per-round ratio to that round's floor
        ratios = [t / steps / f for t, f in zip(times[name], floor_all)]
        med, lo, hi = median_ci(ratios)
        out[f"{name}_vs_floor"], out[f"{name}_vs_floor_ci95"] = med, [lo, hi]
    # paired per round: autodiff epoch time / manual epoch time (> 1: the hand-written step is faster)
    pairs = [a / m for a, m in zip(times["autodiff"], times["manual"])]
    med, lo, hi = median_ci(pairs)
    out.update(manual_speedup_pairs=pairs, manual_speedup_over_autodiff=med, manual_speedup_ci95=[lo, hi])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=lambda s: [int(b) for b in s.split(",")], default=[128])
    ap.add_argument("--hidden", default="512,512")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--matmul-dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--unroll", type=int, default=1, help="steps per iteration of the epoch's loop")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sizes = (784, *[int(h) for h in args.hidden.split(",")], 10)
    x, y, source = load_data(50_000)
    rows = [bench(sizes, b, args.repeats, x, y, args.matmul_dtype, args.unroll) for b in args.batch]
    print(
        f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}, "
        f"data {source}, net {'-'.join(map(str, sizes))}, Adam, matmuls {args.matmul_dtype}, "
        f"scan unroll {args.unroll}, median of {args.repeats} epochs (paths interleaved)"
    )
    print(
        f"{'batch':>5} {'manual ex/s':>12} {'autodiff ex/s':>14} {'manual/autodiff [95% CI]':>26} "
        f"{'floor ex/s':>11} {'manual/floor [95% CI]':>23} {'autodiff/floor':>15} {'GFLOP/s mm':>11} {'GB/s':>7} "
        f"{'MFLOP/ex':>9} {'compile s m/a':>14} {'peak MB m/a':>12}"
    )
    for r in rows:
        print(
            f"{r['batch']:>5} {r['manual_examples_per_s']:>12.0f} {r['autodiff_examples_per_s']:>14.0f} "
            f"{r['manual_speedup_over_autodiff']:>9.3f} [{r['manual_speedup_ci95'][0]:.3f}, "
            f"{r['manual_speedup_ci95'][1]:.3f}] {r['floor_examples_per_s']:>11.0f} "
            f"{r['manual_vs_floor']:>7.3f} [{r['manual_vs_floor_ci95'][0]:.3f}, {r['manual_vs_floor_ci95'][1]:.3f}] "
            f"{r['autodiff_vs_floor']:>15.3f} {r['matmul_gflops']:>11.1f} "
            f"{r['bandwidth_gb_s']:>7.1f} {r['flops_per_example'] / 1e6:>9.2f} "
            f"{r['manual_compile_s']:>6.2f}/{r['autodiff_compile_s']:<7.2f} "
            f"{r['manual_peak_mb']:>5.0f}/{r['autodiff_peak_mb']:<6.0f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "backend": jax.default_backend(),
                    "device": jax.devices()[0].device_kind,
                    "jax": jax.__version__,
                    "data": source,
                    "rows": rows,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
