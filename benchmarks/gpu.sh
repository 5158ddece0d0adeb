#!/usr/bin/env bash
# The whole GPU benchmark, one call on the device machine (jax with CUDA already installed there):
#
#     OUT=/some/folder bash benchmarks/gpu.sh            # every row, ≈ 6-8 min on an H200
#     OUT=/tmp/g QUICK=1 BATCHES=128 MEMBERS=1,4 bash benchmarks/gpu.sh   # smoke test (any machine)
#
# Writes into $OUT: env.txt (devices, versions), one JSON + text table per benchmark, and
# TABLE.md gathering every table, ready to paste into benchmarks/RESULTS.md. Each step has its
# own time limit, so one slow or failing row cannot eat the others' time; a failure is written into
# TABLE.md and the script goes on. Runs from the repository root without installing the package
# (PYTHONPATH), on synthetic data of Fashion-MNIST's shape when the dataset is not on the machine.
set -u
OUT=${OUT:?set OUT to the folder for results}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}          # a Python that has jax (the device machine: python3)
R=${QUICK:+1}; R=${R:-5}       # epochs per path and row (median)
RS=${QUICK:+1}; RS=${RS:-3}    # sweep repeats
LIMIT=${LIMIT:-80}             # seconds per step (7 steps: fits one 10-minute call)
BATCHES=${BATCHES:-32,128,1024}
MEMBERS=${MEMBERS:-1,64,512}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  "$PY" -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__); print(jax.devices())"
} > "$OUT/env.txt" 2>&1

TABLE="$OUT/TABLE.md"
{ echo "# GPU benchmark tables"; echo; echo '```'; cat "$OUT/env.txt"; echo '```'; } > "$TABLE"

step() {  # step NAME COMMAND...: run with a time limit, keep its output, append it to TABLE.md
  local name=$1; shift
  echo "== $name: $*"
  local t0=$SECONDS
  timeout "$LIMIT" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  { echo; echo "## $name ($((SECONDS - t0)) s, exit $rc)"; echo; echo "\`$*\`"; echo; echo '```';
    tail -n 25 "$OUT/$name.txt"; echo '```'; } >> "$TABLE"
}

# W = 784-512-512-10 at batch 32/128/1024, float32 (issue targets: ≥ 3M ex/s at 128, ≥ 2M at 1024)
step w_f32 "$PY" benchmarks/step_speed.py --batch "$BATCHES" --repeats "$R" --json "$OUT/w_f32.json"
# the loop overhead per step: the same with the epoch's scan unrolled 8 steps per iteration
step w_f32_unroll8 "$PY" benchmarks/step_speed.py --batch "$BATCHES" --unroll 8 --repeats "$R" \
  --json "$OUT/w_f32_unroll8.json"
# mixed precision
step w_bf16 "$PY" benchmarks/step_speed.py --batch 128,1024 --matmul-dtype bfloat16 --repeats "$R" \
  --json "$OUT/w_bf16.json"
# the seed-size net
step seed_net "$PY" benchmarks/step_speed.py --hidden 100 --batch 128 --repeats "$R" --json "$OUT/seed_net.json"
# sweeps of 784-100-10 (issue target: ≥ 150M aggregate ex/s at K = 512)
step sweep "$PY" benchmarks/sweep_speed.py --members "$MEMBERS" --repeats "$RS" --json "$OUT/sweep.json"
step sweep_unroll8 "$PY" benchmarks/sweep_speed.py --members "${MEMBERS#1,}" --unroll 8 --repeats "$RS" \
  --json "$OUT/sweep_unroll8.json"
# where W's step time goes (per-component timing)
step profile_w "$PY" benchmarks/profile_step.py --repeats "$R" --json "$OUT/profile_w.json"
echo "wrote $TABLE"
