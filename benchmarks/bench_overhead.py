"""Where a sweep's time goes: aiperf measuring, against slurmserve's own overhead.

Runs `slurmserve sweep` of mocker-disagg (two-GPU workers) over decode.replicas=1,2 on the local backend
(two deployments, each benchmarked at two concurrency points, then cancelled), in a fresh home, and
prints side by side:

    aiperf measuring        the points' measured windows (aiperf's benchmark_duration)
    aiperf start and warm-up  the rest of aiperf's own runs (its processes, its warm-up requests)
    slurmserve's overhead   everything else: planning, deploying until serving, the frontend's
                            counters, bookkeeping (summaries, tables, plots), cancelling

    .venv/bin/python benchmarks/bench_overhead.py [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from slurmserve.bench.results import BenchSummary

POINTS = ("decode.replicas=1", "decode.replicas=2")


def one_sweep() -> dict[str, float]:
    home = tempfile.mkdtemp(prefix="slurmserve-bench-overhead-")
    out = Path(home) / "sweep"
    env = {**os.environ, "SLURMSERVE_HOME": home, "HOME": home}
    argv = [sys.executable, "-m", "slurmserve", "sweep", "--recipe", "mocker-disagg", "--vary", "decode.replicas=1,2"]
    # Two-GPU workers: a prefill and two decode workers fit this machine's eight (simulated) GPUs.
    argv += [word for role in ("prefill", "decode") for word in ("--set", f"{role}.tensor_parallel=2")]
    argv += [word for role in ("prefill", "decode") for word in ("--set", f"{role}.expert_parallel=2")]
    started = time.monotonic()
    subprocess.run([*argv, "--out", str(out)], env=env, check=True, capture_output=True)
    total = time.monotonic() - started
    points = [
        point
        for name in POINTS
        for point in BenchSummary.model_validate_json((out / name / "summary.json").read_text()).points
    ]
    measuring = sum(point.measuring_s for point in points)
    aiperf = sum(point.aiperf_s for point in points)
    return {"total": total, "measuring": measuring, "aiperf rest": aiperf - measuring, "overhead": total - aiperf}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    results = [one_sweep() for _ in range(args.runs)]
    median = sorted(results, key=lambda r: r["total"])[len(results) // 2]
    print(f"2-point sweep of mocker-disagg on the local backend, 2 concurrency points each (median of {args.runs}):")
    print(f"  {'total':<26} {median['total']:7.2f} s")
    print(f"  {'aiperf measuring':<26} {median['measuring']:7.2f} s")
    print(f"  {'aiperf start and warm-up':<26} {median['aiperf rest']:7.2f} s")
    overhead = "slurmserve's overhead"
    print(f"  {overhead:<26} {median['overhead']:7.2f} s  (deploy, teardown, bookkeeping)")


if __name__ == "__main__":
    main()
