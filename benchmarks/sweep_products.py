"""Each matmul of a K-member 784-H-10 sweep step, timed alone: where the ceiling on sweep speed-ups is.

For K members sharing a batch of B rows (the sweep's default shared data order), the step's products
are the two first-layer ones (forward x @ W1 and weight gradient xᵀ dy, both one large product over all
members) and three small batched layer-2 ones (forward, weight gradient, input gradient). Each is
timed as a ``lax.scan`` of ``reps`` products (dispatch amortized; the scan carry scales one operand
so XLA cannot hoist the product), alongside the same products for one member and a 1024³ product
for the cores' peak matmul rate. Every product runs once per round (``--repeats`` rounds, order
alternating), so the ratios are taken within a round on this noisy machine. The last line compares
the K-member step's products with K times one member's: the speed-up over K sequential runs that the
matmuls alone allow, before the optimizer's K-fold state traffic and the elementwise work.

    python benchmarks/sweep_products.py [--members 16] [--hidden 100] [--batch 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics

import jax
import jax.numpy as jnp
from jax import lax
from roofline import interleaved


def scan_of(fn, reps: int):
    """A jitted ``lax.scan`` of ``reps`` products fn(*operands); the scan carry scales the first operand,
    so XLA cannot hoist the product out of the loop."""

    def run(*ops):
        def body(s, _):
            out = fn(ops[0] * (1 + s), *ops[1:])
            return s + out.ravel()[0] * 1e-12, None

        return lax.scan(body, jnp.float32(0), None, length=reps)[0]

    return jax.jit(run)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    k, h, b, d_in, d_out = args.members, args.hidden, args.batch, 784, 10
    full = lambda *shape: jnp.full(shape, 0.01, jnp.float32)  # noqa: E731
    x, w1, dy1 = full(b, d_in), full(k, d_in, h), full(k, b, h)
    h1, w2, dy2 = full(k, b, h), full(k, h, d_out), full(k, b, d_out)
    rows = [  # (name, fn, operands, FLOPs, reps)
        (
            "first layer forward, merged: (B, 784) @ (784, K·H)",
            jnp.dot,
            (x, full(d_in, k * h)),
            2 * b * d_in * k * h,
            100,
        ),
        (
            "first layer forward as vmap lays it out: x @ W1[k]",
            lambda a, w: jnp.einsum("bi,kio->kbo", a, w),
            (x, w1),
            2 * b * d_in * k * h,
            100,
        ),
        (
            "first layer weight gradient: (784, B) @ (B, K·H)",
            jnp.dot,
            (full(d_in, b), full(b, k * h)),
            2 * b * d_in * k * h,
            100,
        ),
        (
            "first layer weight gradient as vmap: xᵀ dy[k]",
            lambda d, a: jnp.einsum("bi,kbo->kio", a, d),
            (dy1, x),
            2 * b * d_in * k * h,
            100,
        ),
        (
            "layer 2 forward, K × (B, H) @ (H, 10)",
            lambda a, w: jnp.einsum("kbi,kio->kbo", a, w),
            (h1, w2),
            2 * k * b * h * d_out,
            500,
        ),
        (
            "layer 2 weight gradient, K × (H, B) @ (B, 10)",
            lambda a, d: jnp.einsum("kbi,kbo->kio", a, d),
            (h1, dy2),
            2 * k * b * h * d_out,
            500,
        ),
        (
            "layer 2 input gradient, K × (B, 10) @ (10, H)",
            lambda d, w: jnp.einsum("kbo,kio->kbi", d, w),
            (dy2, w2),
            2 * k * b * h * d_out,
            500,
        ),
        ("one member: first layer forward (B, 784) @ (784, H)", jnp.dot, (x, full(d_in, h)), 2 * b * d_in * h, 1000),
        ("one member: first layer weight gradient", jnp.dot, (full(d_in, b), full(b, h)), 2 * b * d_in * h, 1000),
        (
            "one member: layer 2 forward (B, H) @ (H, 10)",
            jnp.dot,
            (full(b, h), full(h, d_out)),
            2 * b * h * d_out,
            3000,
        ),
        (
            "one member: layer 2 weight gradient (H, B) @ (B, 10)",
            jnp.dot,
            (full(h, b), full(b, d_out)),
            2 * b * h * d_out,
            3000,
        ),
        (
            "one member: layer 2 input gradient (B, 10) @ (10, H)",
            jnp.dot,
            (full(b, d_out), full(d_out, h)),
            2 * b * h * d_out,
            3000,
        ),
        ("peak: 1024 × 1024 × 1024", jnp.dot, (full(1024, 1024), full(1024, 1024)), 2 * 1024**3, 30),
    ]
    print(
        f"backend {jax.default_backend()}, jax {jax.__version__}; K = {k}, 784-{h}-10, batch {b}; "
        f"{args.repeats} rounds, every product once per round (order alternating); medians"
    )
    progs = {name: (scan_of(fn, reps), ops) for name, fn, ops, _, reps in rows}
    times = interleaved(progs, args.repeats)  # seconds per scan, per round
    reps = {name: r for name, _, _, _, r in rows}
    ms = {name: [t / reps[name] * 1e3 for t in times[name]] for name in times}  # per product, per round
    out = []
    for name, _, _, flops, _ in rows:
        med = statistics.median(ms[name])
        out.append({"product": name, "ms": med, "gflops": flops / med / 1e6})
        print(f"{name:58s} {med:8.3f} ms {flops / med / 1e6:7.1f} GFLOP/s")
    names = list(ms)
    layer2 = [n for n in names if n.startswith("layer 2")]
    one = [n for n in names if n.startswith("one member")]
    per_round = {  # summed over one round's products: one K-member step, K single-member steps
        "vmap": [sum(v) for v in zip(ms[rows[1][0]], ms[rows[3][0]], *(ms[n] for n in layer2))],
        "merged": [sum(v) for v in zip(ms[rows[0][0]], ms[rows[2][0]], *(ms[n] for n in layer2))],
        "single": [k * sum(v) for v in zip(*(ms[n] for n in one))],
    }
    ceiling = {
        lay: sorted(s1 / sk for s1, sk in zip(per_round["single"], per_round[lay])) for lay in ("vmap", "merged")
    }
    summary = {
        "k_member_step_ms_vmap_layout": statistics.median(per_round["vmap"]),
        "k_member_step_ms_merged": statistics.median(per_round["merged"]),
        "k_single_steps_ms": statistics.median(per_round["single"]),
        "ceiling_vmap_layout": statistics.median(ceiling["vmap"]),
        "ceiling_vmap_layout_range": [ceiling["vmap"][0], ceiling["vmap"][-1]],
        "ceiling_merged": statistics.median(ceiling["merged"]),
        "ceiling_merged_range": [ceiling["merged"][0], ceiling["merged"][-1]],
    }
    print(
        f"products of one K-member step: {summary['k_member_step_ms_vmap_layout']:.2f} ms as vmap lays them "
        f"out, {summary['k_member_step_ms_merged']:.2f} ms merged; K single-member steps' products: "
        f"{summary['k_single_steps_ms']:.2f} ms"
    )
    print(
        f"speed-up over K sequential runs that the matmuls alone allow (median of per-round ratios): "
        f"{summary['ceiling_vmap_layout']:.2f}x [{ceiling['vmap'][0]:.2f}, {ceiling['vmap'][-1]:.2f}] "
        f"as vmap lays them out, {summary['ceiling_merged']:.2f}x "
        f"[{ceiling['merged'][0]:.2f}, {ceiling['merged'][-1]:.2f}] merged"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "backend": jax.default_backend(),
                    "jax": jax.__version__,
                    "members": k,
                    "hidden": h,
                    "batch": b,
                    "rows": out,
                    **summary,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
