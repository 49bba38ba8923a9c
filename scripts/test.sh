#!/usr/bin/env bash
# The whole test suite, as CI runs it: two pytest processes side by side, the tests on the Slurm test cluster
# (`-m lab`: one cluster, so one test after another) and all the others. Both mostly wait on real processes
# (Dynamo, Slurm jobs), so together they take about as long as the longer of the two. Arguments go to both
# (e.g. --durations=30). The others' output comes as it runs, the lab's after it; the exit status is 0 only
# if both passed. Ctrl-C or SIGTERM stops both (each pytest then ends what its tests started).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
lab_log=$(mktemp /tmp/slurmserve-lab-tests.XXXXXX)
set -m  # each pytest in a process group of its own: signalled as a whole, and the terminal's Ctrl-C is ours
.venv/bin/python -m pytest -m lab "$@" >"$lab_log" 2>&1 &
lab=$!
.venv/bin/python -m pytest -m "not lab" "$@" &
others=$!
stop() {
  kill "-$1" -- "-$lab" "-$others" 2>/dev/null
  wait "$lab" "$others"
  cat "$lab_log"
  rm -f "$lab_log"
  exit "$2"
}
trap 'stop INT 130' INT
trap 'stop TERM 143' TERM
wait "$others"
others_status=$?
wait "$lab"
lab_status=$?
echo "=== the tests on the Slurm test cluster (pytest -m lab) ==="
cat "$lab_log"
rm -f "$lab_log"
# 5: no test selected (arguments that select none in one of the two) is no failure.
for status in $others_status $lab_status; do
  [ "$status" -eq 0 ] || [ "$status" -eq 5 ] || exit "$status"
done
