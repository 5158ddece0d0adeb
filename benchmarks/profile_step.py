"""Where a training step's time goes: per-component timing, XLA's optimized HLO, and a profiler trace.

Each component below is compiled as its own ``lax.scan`` over an epoch's steps at the step's shapes
(so loop and dispatch costs are treated as in the real epoch) and timed interleaved with the others,
median of ``--repeats``:

    gather          the batch gather alone (x and y rows from the device-resident training set)
    forward         gather + forward + cross-entropy value
    grads/manual    gather + hand-written loss_and_grads + a plain SGD update (keeps the grads live)
    grads/autodiff  the same with jax.grad's gradients
    adam            Adam's update alone, on fixed gradients (optim.adam + apply_updates)
    step/manual     the real epoch: jm.train_epoch with Adam (what `jaxmlp train` runs)
    step/autodiff   the same with jax.grad's gradients
    step/manual, dW=xᵀdy   the real epoch with every weight gradient computed as xᵀ dy
                    (``MLPConfig(weight_grad_layout="plain")``), i.e. before ``linear.weight_grad``
                    chose the (dyᵀ x)ᵀ layout for narrowing layers
    step/manual, XLA defaults   the real epoch compiled without ``jaxmlp.compiler.epoch_options()``
                    (every other program here is compiled with them, as the library compiles its own)
    matmul floor    the step's matmuls alone at its shapes (roofline.matmul_floor_program)
    adam floor      Adam's 7 arrays of bytes over the measured elementwise bandwidth
                    (roofline.bandwidth_program)

``--hlo-dir D`` writes the optimized HLO of both epoch programs and prints, for the scan body of each,
how many dots, fusions and copies XLA kept and how many bytes the copies move per step.
``--trace D`` records one epoch of each path with ``jax.profiler`` (open the .xplane.pb / trace in
TensorBoard's profile plugin or Perfetto for per-op times).

    python benchmarks/profile_step.py [--hidden 512,512] [--batch 128] [--repeats 7] [--json F]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from dataclasses import replace
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
from roofline import bandwidth_program, interleaved, matmul_floor_program, matmul_flops_per_step
from step_speed import load_data

import jaxmlp as jm
from jaxmlp.ops import losses
from jaxmlp.step import _epoch


def components(sizes, batch, steps, x, y):
    """name -> (compiled fn, args) for every component and floor; all scan over ``steps`` steps."""
    config = jm.MLPConfig(sizes=sizes, activation="relu")
    tc = jm.TrainConfig(model=config, optimizer="adam", batch_size=batch)
    hyper = jm.Hyper(learning_rate=1e-3).as_arrays()
    ts = jm.init_state(jax.random.PRNGKey(0), tc, hyper)
    idx = jnp.arange(steps * batch, dtype=jnp.int32).reshape(steps, batch)
    key = jax.random.PRNGKey(1)

    def gather(x, y, idx):
        def body(acc, rows):
            return acc + jnp.sum(jnp.take(x, rows, axis=0)) + jnp.sum(jnp.take(y, rows, axis=0)), None

        return jax.lax.scan(body, jnp.float32(0), idx)[0]

    def forward(params, x, y, idx):
        def body(acc, rows):
            logits, _ = jm.forward(
                params, ts.bn_state, jnp.take(x, rows, axis=0), config=config, hyper=hyper, train=True, key=key
            )
            return acc + losses.cross_entropy_forward(logits, jnp.take(y, rows, axis=0))[0], None

        return jax.lax.scan(body, jnp.float32(0), idx)[0]

    def grads_sgd(params, x, y, idx, grad_fn):
        def body(params, rows):
            batch_ = (jnp.take(x, rows, axis=0), jnp.take(y, rows, axis=0))
            cost, g, _, _ = grad_fn(params, ts.bn_state, batch_, hyper, key, config=config)
            return jax.tree_util.tree_map(lambda p, g: p - 1e-3 * g, params, g), cost

        return jax.lax.scan(body, params, idx)

    grads = jax.tree_util.tree_map(lambda p: 1e-3 * p, ts.params)

    def adam(params, opt_state, grads):
        opt = jm.optim.get("adam")

        def body(c, _):
            p, s = c
            u, s = opt.update(grads, s, p, hyper)
            return (jm.optim.apply_updates(p, u), s), None

        return jax.lax.scan(body, (params, opt_state), None, length=steps)[0]

    def epoch(ts, hyper, x, y, grad_fn, tc=tc):  # the library's epoch on a fixed batch order
        return _epoch(ts, hyper, x, y, tc, idx, partial(grad_fn, config=tc.model))

    table = {
        "gather": (gather, (x, y, idx)),
        "forward": (forward, (ts.params, x, y, idx)),
        "grads/manual": (partial(grads_sgd, grad_fn=jm.loss_and_grads), (ts.params, x, y, idx)),
        "grads/autodiff": (partial(grads_sgd, grad_fn=jm.autodiff_loss_and_grads), (ts.params, x, y, idx)),
        "adam": (adam, (ts.params, ts.opt_state, grads)),
        "step/manual": (partial(epoch, grad_fn=jm.loss_and_grads), (ts, hyper, x, y)),
        "step/autodiff": (partial(epoch, grad_fn=jm.autodiff_loss_and_grads), (ts, hyper, x, y)),
    }
    n_params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(ts.params))
    options = jm.epoch_options()  # what the library compiles its epochs with
    compiled = {n: (jax.jit(f).lower(*a).compile(compiler_options=options), a) for n, (f, a) in table.items()}
    # the same epoch with every weight gradient as xᵀdy (the plain layout), for a before/after in one run
    plain_tc = replace(tc, model=replace(config, weight_grad_layout="plain"))
    plain = partial(epoch, grad_fn=jm.loss_and_grads, tc=plain_tc)
    compiled["step/manual, dW=xᵀdy"] = (
        jax.jit(plain).lower(ts, hyper, x, y).compile(compiler_options=options),
        (ts, hyper, x, y),
    )
    # the same epoch with XLA's default options (before jaxmlp.compiler: per-step weight copies)
    compiled["step/manual, XLA defaults"] = (
        jax.jit(partial(epoch, grad_fn=jm.loss_and_grads)).lower(ts, hyper, x, y).compile(),
        (ts, hyper, x, y),
    )
    # the floors run in the same rounds as the components (bandwidth_program moves Adam's 28 bytes per
    # parameter per step, so its time per step is the Adam floor)
    compiled["matmul floor"] = matmul_floor_program(sizes, batch, steps)
    compiled["adam floor"] = bandwidth_program(n_params, steps)
    return compiled


def scan_body_summary(hlo: str) -> dict:
    """Counts in the while body that holds the dots (the scanned step) of an optimized HLO module."""
    for comp in re.split(r"\n(?=\S.*\{\n)", hlo):
        head = comp.split("\n", 1)[0]
        if " dot(" not in comp and "__ynn_fusion" not in comp:
            continue
        if head.startswith(("%fused", "fused", "%wrapped", "%ynn")) or "fused_computation" in head.split()[0]:
            continue
        lines = [line for line in comp.splitlines()[1:] if " = " in line]
        copies = [line for line in lines if re.search(r"= \S+ copy\(", line)]
        copy_bytes = 0
        for line in copies:
            m = re.search(r"= (\w+)\[([\d,]*)\]", line)
            if m:
                n = 1
                for d in filter(None, m.group(2).split(",")):
                    n *= int(d)
                copy_bytes += n * {"f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f64": 8}.get(m.group(1), 4)
        return {
            "instructions": len(lines),
            "fusions": sum(" fusion(" in line for line in lines),
            # XLA:CPU hands most matmuls to YNNPACK as "__ynn_fusion"s (2-D outputs; the 1-D ones
            # are bias-gradient sums) and keeps the rest as plain dots
            "matmuls": sum(" dot(" in line or ("__ynn_fusion" in line and _rank(line) >= 2) for line in lines),
            "copies": len(copies),
            "copy_bytes": copy_bytes,
        }
    return {}


def per_op_ms(trace_dir: Path, steps: int, hlo: str) -> dict:
    """{HLO op name: (ms per step, its HLO line abridged)} from the profiler's trace, slowest first."""
    import gzip
    from collections import Counter

    files = sorted(trace_dir.rglob("*.trace.json.gz"))
    if not files:
        return {}
    events = json.load(gzip.open(files[-1]))["traceEvents"]
    lines = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) (\w[\w-]*)\(", line)
        if m:
            lines[m.group(1)] = f"{m.group(2)} {m.group(3)}"
    total = Counter()
    for e in events:
        if e.get("ph") == "X" and e["name"] in lines:
            total[e["name"]] += e["dur"]  # microseconds
    return {n: (us / 1e3 / steps, lines[n]) for n, us in total.most_common()}


def _rank(line: str) -> int:
    m = re.search(r"= \w+\[([\d,]*)\]", line)
    return len([d for d in m.group(1).split(",") if d]) if m else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", default="512,512")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--hlo-dir", default=None)
    ap.add_argument("--trace", default=None)
    ap.add_argument("--top", type=int, default=15, help="ops listed per path with --trace")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sizes = (784, *[int(h) for h in args.hidden.split(",")], 10)
    x, y, source = load_data(50_000)
    steps = x.shape[0] // args.batch
    compiled = components(sizes, args.batch, steps, x, y)
    secs = {n: statistics.median(v) for n, v in interleaved(compiled, args.repeats).items()}
    ms = {n: 1e3 * s / steps for n, s in secs.items()}
    flops = matmul_flops_per_step(sizes, args.batch)
    out = {
        "sizes": list(sizes),
        "batch": args.batch,
        "steps": steps,
        "data": source,
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "ms_per_step": ms,
        "matmul_flops_per_step": flops,
    }
    print(
        f"net {'-'.join(map(str, sizes))}, batch {args.batch}, {steps} steps per scan, data {source}, "
        f"backend {jax.default_backend()}, median of {args.repeats}"
    )
    step = ms["step/manual"]
    print(f"{'component':<22} {'ms/step':>9} {'of step':>8}")
    for n, v in ms.items():
        print(f"{n:<22} {v:>9.3f} {v / step:>8.1%}")
    derived = {
        "backward (grads/manual - forward)": ms["grads/manual"] - ms["forward"],
        "optimizer in the step (step/manual - grads/manual)": ms["step/manual"] - ms["grads/manual"],
        "floor (matmul + adam)": ms["matmul floor"] + ms["adam floor"],
    }
    out["derived_ms"] = derived
    for n, v in derived.items():
        print(f"{n:<52} {v:>7.3f} ms")

    if args.hlo_dir or args.trace:
        for name in ("step/manual", "step/autodiff"):
            f, a = compiled[name]
            tag = name.split("/")[1]
            text = f.as_text()
            if args.hlo_dir:
                d = Path(args.hlo_dir)
                d.mkdir(parents=True, exist_ok=True)
                (d / f"epoch_{tag}.hlo.txt").write_text(text)
                out[f"hlo_{tag}"] = summary = scan_body_summary(text)
                print(f"HLO scan body, {tag:>8}: {summary}")
            if args.trace:
                with jax.profiler.trace(str(Path(args.trace) / tag)):
                    jax.block_until_ready(f(*a))
                ops = per_op_ms(Path(args.trace) / tag, steps, text)
                out[f"ops_{tag}"] = ops
                print(f"per-op time in one epoch, {tag} (ms per step; ops of a step may overlap on 2 threads)")
                for op, (op_ms, what) in list(ops.items())[: args.top]:
                    print(f"  {op_ms:7.3f}  {op:<34} {what}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
