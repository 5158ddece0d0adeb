"""Training-step speed of workload W against the roofline floor measured in the same run.

W: 784-512-512-10 ReLU, Adam, float32, batch 128 (other batch sizes and nets via options), data on
the device, one epoch = one lax.scan. Reports training examples/s (compile excluded, median of
``--repeats`` epochs, the two paths' epochs interleaved) for the hand-written step and for the same
step with jax.grad's gradients, and
the floor:

    floor = matmul FLOPs per step / measured matmul rate at W's shapes
          + optimizer bytes per step / measured elementwise bandwidth

The matmul rate is measured by scanning exactly the step's matmuls (forward, weight gradients, input
gradients except the first layer's) at the same shapes; the bandwidth by scanning an Adam-like
elementwise update (read p, g, m, v; write p, m, v) over arrays of the model's size.

    python benchmarks/step_speed.py [--batch 128] [--hidden 512,512] [--repeats 5]
                                    [--matmul-dtype bfloat16] [--unroll N] [--json out.json]

The manual/autodiff speed ratio is taken per round (both paths' epochs of one round run back to
back), reported as the median of the rounds with a bootstrap 95% confidence interval.
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

from jaxmlp import data, mlp, train
from jaxmlp.hyper import Hyper
from roofline import matmul_flops_per_step, measure_bandwidth, measure_matmul_floor


def load_data(n_train: int):
    try:
        ds = data.load_dataset("fashion-mnist", allow_download=False)
        return jnp.asarray(ds.x_train), jnp.asarray(ds.y_train), "fashion-mnist"
    except data.DatasetError:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n_train, 784), dtype=np.float32)
        return jnp.asarray(x), jnp.asarray(rng.integers(0, 10, n_train, dtype=np.int32)), "synthetic"


def interleaved(fns: dict, args, repeats: int) -> dict:
    """Seconds of every run of each compiled fn, runs alternating between them (one warm-up each).
    Round i runs every fn once (order alternating), so times[a][i] / times[b][i] is a paired ratio."""
    for f in fns.values():
        jax.block_until_ready(f(*args))
    times = {n: [] for n in fns}
    names = list(fns)
    for i in range(repeats):
        for n in names if i % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            jax.block_until_ready(fns[n](*args))
            times[n].append(time.perf_counter() - t)
    return times


def median_ci(values, level=0.95, resamples=2000, seed=0):
    """The median and a bootstrap confidence interval for it (percentile method)."""
    v = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    meds = np.median(rng.choice(v, size=(resamples, v.size), replace=True), axis=1)
    return float(np.median(v)), float(np.quantile(meds, (1 - level) / 2)), float(np.quantile(meds, (1 + level) / 2))


def bench(sizes, batch, repeats, x, y, matmul_dtype="float32", unroll=1):
    config = mlp.MLPConfig(sizes=sizes, activation="relu", matmul_dtype=matmul_dtype)
    tc = train.TrainConfig(model=config, optimizer="adam", batch_size=batch, scan_unroll=unroll)
    hyper = Hyper(learning_rate=1e-3).as_arrays()
    ts = train.init_state(jax.random.PRNGKey(0), tc, hyper)
    steps = x.shape[0] // batch
    n_params = sum(l.size for l in jax.tree_util.tree_leaves(ts.params))
    out = {"sizes": list(sizes), "batch": batch, "steps_per_epoch": steps, "params": n_params,
           "matmul_dtype": matmul_dtype, "scan_unroll": unroll}
    compiled = {}
    for name, grad_fn in (("manual", mlp.loss_and_grads), ("autodiff", mlp.autodiff_loss_and_grads)):
        fn = jax.jit(partial(train.train_epoch, tc=tc, grad_fn=grad_fn))
        t = time.perf_counter()
        compiled[name] = fn.lower(ts, hyper, x, y).compile()
        out[f"{name}_compile_s"] = time.perf_counter() - t
        mem = compiled[name].memory_analysis()  # XLA's buffer assignment: arguments + outputs + temporaries
        out[f"{name}_peak_mb"] = (getattr(mem, "peak_memory_in_bytes", 0) or
                                  mem.argument_size_in_bytes + mem.output_size_in_bytes
                                  + mem.temp_size_in_bytes - mem.alias_size_in_bytes) / 2**20
    # The two paths are timed INTERLEAVED (alternating which goes first), so that drift in this
    # noisy machine's speed hits both alike; each gets `repeats` epochs and reports its median.
    times = interleaved(compiled, (ts, hyper, x, y), repeats)
    for name, v in times.items():
        sec = statistics.median(v)
        out[f"{name}_epoch_s_all"] = v
        out[f"{name}_step_s"] = sec / steps
        out[f"{name}_examples_per_s"] = steps * batch / sec
    flops = matmul_flops_per_step(sizes, batch)
    mm_step = measure_matmul_floor(sizes, batch, steps, repeats,
                                   dtype=jnp.bfloat16 if matmul_dtype == "bfloat16" else jnp.float32)
    bw = measure_bandwidth(n_params, steps, repeats)
    opt_bytes = 7 * 4 * n_params
    out.update(matmul_flops_per_step=flops, flops_per_example=flops / batch,
               matmul_gflops=flops / mm_step / 1e9,
               bandwidth_gb_s=bw / 1e9, optimizer_bytes_per_step=opt_bytes,
               floor_step_s=mm_step + opt_bytes / bw)
    out["floor_examples_per_s"] = batch / out["floor_step_s"]
    out["manual_vs_floor"] = out["manual_step_s"] / out["floor_step_s"]
    out["autodiff_vs_floor"] = out["autodiff_step_s"] / out["floor_step_s"]
    # paired per round: autodiff epoch time / manual epoch time (> 1: the hand-written step is faster)
    pairs = [a / m for a, m in zip(times["autodiff"], times["manual"])]
    med, lo, hi = median_ci(pairs)
    out.update(manual_speedup_pairs=pairs, manual_speedup_over_autodiff=med,
               manual_speedup_ci95=[lo, hi])
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
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}, "
          f"data {source}, net {'-'.join(map(str, sizes))}, Adam, matmuls {args.matmul_dtype}, "
          f"scan unroll {args.unroll}, median of {args.repeats} epochs (paths interleaved)")
    print(f"{'batch':>5} {'manual ex/s':>12} {'autodiff ex/s':>14} {'manual/autodiff [95% CI]':>26} "
          f"{'floor ex/s':>11} {'manual/floor':>13} {'autodiff/floor':>15} {'GFLOP/s mm':>11} {'GB/s':>7} "
          f"{'MFLOP/ex':>9} {'compile s m/a':>14} {'peak MB m/a':>12}")
    for r in rows:
        print(f"{r['batch']:>5} {r['manual_examples_per_s']:>12.0f} {r['autodiff_examples_per_s']:>14.0f} "
              f"{r['manual_speedup_over_autodiff']:>9.3f} [{r['manual_speedup_ci95'][0]:.3f}, "
              f"{r['manual_speedup_ci95'][1]:.3f}] {r['floor_examples_per_s']:>11.0f} "
              f"{r['manual_vs_floor']:>13.3f} {r['autodiff_vs_floor']:>15.3f} {r['matmul_gflops']:>11.1f} "
              f"{r['bandwidth_gb_s']:>7.1f} {r['flops_per_example'] / 1e6:>9.2f} "
              f"{r['manual_compile_s']:>6.2f}/{r['autodiff_compile_s']:<7.2f} "
              f"{r['manual_peak_mb']:>5.0f}/{r['autodiff_peak_mb']:<6.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
                       "jax": jax.__version__, "data": source, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
