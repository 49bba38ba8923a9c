#!/usr/bin/env bash
# The whole test suite, as CI runs it: two pytest processes side by side, the tests on the Slurm test cluster
# (`-m lab`: one cluster, so one test after another) and all the others. Both mostly wait on real processes
# (Dynamo, Slurm jobs), so together they take about as long as the longer of the two. Arguments go to both
# (e.g. --durations=30). The lab's output follows the other's; the exit status is 0 only if both passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
lab_log=$(mktemp /tmp/slurmserve-lab-tests.XXXXXX)
set -m  # the lab's pytest in a process group of its own: stopped as a whole on Ctrl-C
.venv/bin/python -m pytest -m lab "$@" >"$lab_log" 2>&1 &
lab=$!
trap 'kill -INT -- -$lab 2>/dev/null; wait $lab; cat "$lab_log"; rm -f "$lab_log"; exit 130' INT TERM
.venv/bin/python -m pytest -m "not lab" "$@"
others=$?
wait $lab
on_lab=$?
echo "=== the tests on the Slurm test cluster (pytest -m lab) ==="
cat "$lab_log"
rm -f "$lab_log"
# 5: no test selected (arguments that select none in one of the two) is no failure.
for status in $others $on_lab; do
  [ "$status" -eq 0 ] || [ "$status" -eq 5 ] || exit "$status"
done
