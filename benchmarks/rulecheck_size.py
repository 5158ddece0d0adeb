"""What checking a linear layer's rule costs as the layer grows: ``jm.check_vjp`` (and, for scale,
``jax.test_util.check_grads``) on y = x·W + b with W of n × n and a batch of 256, float32 arguments.

Each size runs in a fresh process: seconds of the whole check (compiling included) and its peak extra
memory (the process's peak resident set during the check minus its resident set just before it).

    python benchmarks/rulecheck_size.py [--sizes 64,128,256,512,1024] [--batch 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import jax, jax.numpy as jnp, numpy as np
from jax.test_util import check_grads
import jaxmlp as jm

n, batch, which = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
W = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
params = {"W": W, "b": rng.standard_normal(n).astype(np.float32)}
x = rng.standard_normal((batch, n)).astype(np.float32)

def fwd(params, x):
    return x @ params["W"] + params["b"], (params, x)

def bwd(res, dy):
    params, x = res
    return {"W": x.T @ dy, "b": dy.sum(0)}, dy @ params["W"].T

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

before = rss_kib()
t = time.perf_counter()
if which == "check_vjp":
    ok = jm.check_vjp(fwd, bwd, params, x).ok
else:
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), (params, x))
        check_grads(jm.as_custom_vjp(fwd, bwd), p64, order=1, modes=("rev",))
    ok = True
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print(json.dumps({"n": n, "checker": which, "ok": ok, "seconds": seconds, "extra_mib": (peak - before) / 1024}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,128,256,512,1024")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--checkers", default="check_vjp,check_grads")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        for which in args.checkers.split(","):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(n), str(args.batch), which], capture_output=True, text=True
            )
            if done.returncode != 0:
                rows.append({"n": n, "checker": which, "error": done.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print(f"\n| W (n × n), batch {args.batch} | checker | verdict | seconds | peak extra memory (MiB) |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['n']}² | {r['checker']} | error: {r['error']} | | |")
        else:
            verdict = "ok" if r["ok"] else "FAILED"
            print(f"| {r['n']}² | {r['checker']} | {verdict} | {r['seconds']:.2f} | {r['extra_mib']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
