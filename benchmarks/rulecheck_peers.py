"""The corpus of tests/vjp_corpus.py judged by ``jm.check_vjp`` and by ``jax.test_util.check_grads``.

For every rule: the verdict of each checker (right when it passes a right rule or fails a wrong one),
and its time. ``check_grads`` checks the function whose ``jax.grad`` runs the rule (``jm.as_custom_vjp``),
in reverse mode, order 1, over the floating arguments (integer ones closed over), in two settings: in
float64 (x64 on, the arguments upcast) and at the arguments' own dtype with its default tolerances.
Exceptions count as "fails". Times include compiling (each rule is new to both checkers).

    python benchmarks/rulecheck_peers.py [--seeds 1] [--json benchmarks/rulecheck_peers_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

import jaxmlp as jm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import vjp_corpus  # noqa: E402  (the tests' corpus)


def floating(a) -> bool:
    return jnp.issubdtype(jnp.result_type(a), jnp.inexact)


def check_grads_verdict(case, float64: bool) -> bool:
    """Does check_grads pass the rule? Over the floating leaves of the arguments, the rest closed over."""
    f = jm.as_custom_vjp(case.fwd, case.bwd)
    args = case.make_args()
    leaves, treedef = jax.tree_util.tree_flatten(args)
    where = [k for k, a in enumerate(leaves) if floating(a)]

    def g(*floats):
        full = list(leaves)
        for k, v in zip(where, floats):
            full[k] = v
        return f(*jax.tree_util.tree_unflatten(treedef, full))

    try:
        if float64:
            with jax.enable_x64(True):
                check_grads(g, tuple(jnp.asarray(leaves[k], jnp.float64) for k in where), order=1, modes=("rev",))
        else:
            check_grads(g, tuple(jnp.asarray(leaves[k]) for k in where), order=1, modes=("rev",))
        return True
    except Exception:  # noqa: BLE001 - an AssertionError or anything else: the rule did not pass
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1, help="check_vjp seeds per rule (its verdict must not change)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    checkers = {
        "jm.check_vjp": lambda c: all(
            jm.check_vjp(c.fwd, c.bwd, *c.make_args(), seed=s).ok for s in range(args.seeds)
        ),  # "passes" only if every seed passes; a verdict that changed with the seed shows up as wrong
        "check_grads float64": lambda c: check_grads_verdict(c, True),
        "check_grads caller dtype": lambda c: check_grads_verdict(c, False),
    }
    rows = []
    for case in vjp_corpus.CASES:
        row = {"name": case.name, "kind": case.kind, "right": case.right}
        for name, judge in checkers.items():
            t = time.perf_counter()
            passed = judge(case)
            row[name] = {"passed": passed, "correct": passed == case.right, "seconds": time.perf_counter() - t}
        rows.append(row)
        marks = "  ".join(f"{'ok ' if row[n]['correct'] else 'BAD'}" for n in checkers)
        print(f"{marks}  {case.kind:<9} {'right' if case.right else 'wrong'}  {case.name}", flush=True)

    summary = {}
    for name in checkers:
        summary[name] = {
            "right_verdicts": sum(r[name]["correct"] for r in rows),
            "false_passes": sum(r[name]["passed"] and not r["right"] for r in rows),
            "false_alarms": sum(not r[name]["passed"] and r["right"] for r in rows),
            "seconds_total": sum(r[name]["seconds"] for r in rows),
            "seconds_median": float(np.median([r[name]["seconds"] for r in rows])),
            "wrong_on": [r["name"] for r in rows if not r[name]["correct"]],
        }
    n = len(rows)
    print(
        f"\nbackend {jax.default_backend()}, jax {jax.__version__}, {n} rules ({sum(r['right'] for r in rows)} right)"
    )
    print("| checker | right verdicts | false passes | false alarms | total s | median s per rule |")
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        print(
            f"| {name} | {s['right_verdicts']}/{n} | {s['false_passes']} | {s['false_alarms']} | "
            f"{s['seconds_total']:.1f} | {s['seconds_median']:.2f} |"
        )
    print("\n| class | rules | " + " | ".join(checkers) + " |")
    print("|---|---|" + "---|" * len(checkers))
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        print(
            f"| {kind} | {len(mine)} | " + " | ".join(str(sum(r[n]["correct"] for r in mine)) for n in checkers) + " |"
        )
    for name, s in summary.items():
        if s["wrong_on"]:
            print(f"{name} wrong on: " + "; ".join(s["wrong_on"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"backend": jax.default_backend(), "jax": jax.__version__, "summary": summary, "rows": rows},
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
