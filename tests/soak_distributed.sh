#!/usr/bin/env bash
# Repeats every multi-process test (pytest -m distributed) N times and counts the runs that failed.
# Not part of `make test`: it proves that those tests fail only for a reason (`make soak-distributed`).
#   tests/soak_distributed.sh [N=50] [LOG_DIR=build/soak]
# Each failed run's whole pytest output is kept as LOG_DIR/run-<i>.log.
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-50}"
logs="${2:-build/soak}"
python="${PYTHON:-.venv/bin/python}"
mkdir -p "$logs"
failed=0
for i in $(seq 1 "$runs"); do
    if "$python" -m pytest -q -p no:cacheprovider -m distributed tests >"$logs/run-$i.log" 2>&1; then
        echo "run $i/$runs: $(tail -n 1 "$logs/run-$i.log")"
        rm -f "$logs/run-$i.log"
    else
        failed=$((failed + 1))
        echo "run $i/$runs FAILED: $(tail -n 1 "$logs/run-$i.log") (log: $logs/run-$i.log)"
    fi
done
echo "soak: $runs runs of every distributed test, $failed failed"
[ "$failed" -eq 0 ]
