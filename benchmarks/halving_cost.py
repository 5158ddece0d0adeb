"""What successive halving's re-stacking saves: the same K members trained as a grid (every member every
epoch; what keeping stopped members in fixed slots of the vmapped program would cost) and with
``--halving`` (survivors re-stacked into a smaller member axis at each rung, one compile per size).

Reports member-epochs, training seconds and compile seconds of both (``run_sweep``'s own summary; the
same layout for both, ``--chunk-size``), on Fashion-MNIST (50k train / 10k dev).

    python benchmarks/halving_cost.py [--members 27] [--epochs 9] [--eta 3] [--hidden 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

import jaxmlp as jm


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=27)
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--hidden", default="100")
    ap.add_argument("--chunk-size", type=int, default=None, help="default: all members in one program")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    hidden = tuple(int(w) for w in args.hidden.split(","))
    ds = jm.load_dataset("fashion-mnist", allow_download=False)
    tc = jm.TrainConfig(model=jm.MLPConfig(sizes=(784, *hidden, 10)), epochs=args.epochs)
    members = jm.grid(jm.Hyper(), {"learning_rate": list(np.geomspace(1e-4, 3e-2, args.members))}, hidden=[hidden])
    chunk = args.chunk_size or args.members
    rows = {}
    for name, how in (("grid (fixed slots)", {}), (f"halving η={args.eta} (re-stacked)", {"halving": args.eta})):
        res = jm.run_sweep(ds, tc, members, chunk_size=chunk, axes=["learning_rate"], log=lambda s: None, **how)
        s = res.summary
        rows[name] = {
            "member_epochs": s["member_epochs"],
            "seconds": s["seconds"],
            "compile_seconds": s["compile_seconds"],
            "compiled_member_counts": s["compiled_member_counts"],
            "best_dev": s["best"]["dev_accuracy"],
        }
    print(
        f"backend {jax.default_backend()}, jax {jax.__version__}, 784-{args.hidden}-10, {args.members} members, "
        f"{args.epochs} epochs, {chunk} members per program"
    )
    print(f"{'':>30} {'member-epochs':>14} {'train s':>8} {'compile s':>10} {'programs':>12} {'best dev':>9}")
    for name, r in rows.items():
        print(
            f"{name:>30} {r['member_epochs']:>14} {r['seconds']:>8.1f} {r['compile_seconds']:>10.1f} "
            f"{','.join(map(str, r['compiled_member_counts'])):>12} {r['best_dev']:>9.4f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": jax.default_backend(), "jax": jax.__version__, "args": vars(args), "rows": rows}, f)


if __name__ == "__main__":
    main()
