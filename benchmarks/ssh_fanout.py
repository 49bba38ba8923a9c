"""SSH fan-out: launch time of a deployment on 1 host and on all 3 hosts of the test cluster, and their ratio.

mocker-agg with TP8 workers (one per host): 1 replica on 1 host, then 3 replicas on 3 hosts, through
the real sshd of each lab node. Launch time is `slurmserve submit` until it returns ready (preflight,
script upload, stage starts, probes, first completion). Parallel fan-out keeps the ratio near 1
(target <= 1.5). Brings the lab (tests/cluster/lab.py) up if needed and leaves it as it found it.

    python benchmarks/ssh_fanout.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from lab_session import lab_session


def launch_seconds(hosts: str, replicas: int, name: str) -> float:
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "slurmserve",
            "submit",
            "--recipe",
            "mocker-agg",
            "--hosts",
            hosts,
            "--set",
            f"agg.replicas={replicas}",
            "--set",
            "agg.tensor_parallel=8",
            "--name",
            name,
        ],
        capture_output=True,
        text=True,
    )
    elapsed = time.monotonic() - started
    subprocess.run([sys.executable, "-m", "slurmserve", "cancel", name], capture_output=True)
    if result.returncode != 0:
        raise SystemExit(f"submit failed: {result.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with lab_session() as cluster:
        hosts = str(cluster.hosts_file("ssh"))
        times = {
            count: [launch_seconds(hosts, count, f"fanout-{count}-{i}") for i in range(args.runs)] for count in (1, 3)
        }
    for count, seconds in times.items():
        print(
            f"{count} host(s): launch {statistics.median(seconds):.2f} s median of {args.runs} "
            f"({', '.join(f'{s:.2f}' for s in seconds)})"
        )
    ratio = statistics.median(times[3]) / statistics.median(times[1])
    print(f"ratio 3 hosts / 1 host: {ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'MISSED'})")


if __name__ == "__main__":
    main()
