#!/usr/bin/env bash
# fit's epoch time, the package at commit BEFORE against the working tree, interleaved in one command:
#   BEFORE=eaa8f7e EPOCHS=6 bash benchmarks/fit_segments.sh   (median epoch seconds, first epoch left out)
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${BEFORE:?give BEFORE=<commit>}; EPOCHS=${EPOCHS:-6}; PY=${PY:-.venv/bin/python}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/before"; git archive "$BEFORE" jaxmlp | tar -x -C "$tmp/before"
for v in before after before after; do
  pkg=$([ $v = before ] && echo "$tmp/before" || echo "$PWD")
  PYTHONPATH=$pkg $PY -c "import sys, jaxmlp.cli as c; sys.argv = ['jaxmlp', 'train', '--epochs', '$EPOCHS', '--out', '$tmp/run', '--overwrite', '--no-progress']; c.console()" >/dev/null
  $PY -c "import csv, statistics as s; r = [float(x['seconds']) for x in csv.DictReader(open('$tmp/run/metrics.csv'))][1:]; print('$v', 'median epoch s', round(s.median(r), 3), [round(x, 3) for x in r])"
done
