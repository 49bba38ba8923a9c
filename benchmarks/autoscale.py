"""Autoscaling against fixed sizes under the same bursty load, side by side in one run.

Deploys mocker-disagg-autoscale (decode between 1 and 3 workers of 2 GPUs, `reserved`) on the local backend
three times, each in a fresh home and cancelled after: held at `max` (planner paused, `slurmserve scale
decode=3`), held at `min` (planner paused), and autoscaled by Dynamo's planner (load-based, its KV
thresholds set for the tiny model's cache as in tests/runtime/test_scaling_local.py). Each gets the same
load: --quiet-s with one stream, --burst-s with --burst-streams streams, --quiet-s again; each stream asks
for --tokens tokens of the mocker's replay trace (seconds long at speedup 1), back to back. A small httpx
client times each stream. Prints per deployment:

    GPU-s        the decode workers' GPUs times the seconds each ran within the load (from the run's
                 scaled events); the prefill worker's and the reserved but idle GPUs are left out
    TTFT p50/p99 first streamed token, from the client's clock
    ITL p50/p99  per stream, its mean time between tokens after the first
    failed       streams that did not end with HTTP 200 and finish_reason "length"
    decision     for the autoscaled one: seconds from each planner decision to add workers to the last
                 of them serving (ready and counted by the frontend), min/max over the decisions

    .venv/bin/python benchmarks/autoscale.py [--quiet-s 20] [--burst-s 60] [--burst-streams 9] [--tokens 2048]

With --lab (root: the Slurm test cluster, borrowed as benchmarks/lab_session.py does), it prints instead what
a worker added by scaling costs there, `reserved` against `elastic`: --repeats times, `scale decode=2` then
back to 1 (the path a planner decision takes), the seconds from the count asked to the worker serving.

    sudo .venv/bin/python benchmarks/autoscale.py --lab [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from slurmserve.bench.workload import replayed_chat
from slurmserve.runs import open_run

RECIPE = "mocker-disagg-autoscale"
PLANNER_THRESHOLDS = ["autoscale.planner.decode_scale_up_kv_rate=1", "autoscale.planner.decode_scale_down_kv_rate=0.5"]


@dataclass
class Load:
    """What the client saw: per stream its TTFT and mean ITL (seconds), and how many failed."""

    ttfts: list[float] = field(default_factory=list)
    itls: list[float] = field(default_factory=list)
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stream(self, endpoint: str, tokens: int) -> None:
        body = replayed_chat("tiny-mock", tokens)
        started, arrivals, finish = time.perf_counter(), [], None
        try:
            with httpx.stream("POST", f"{endpoint}/v1/chat/completions", json=body, timeout=180) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        choices = json.loads(line[6:]).get("choices") or [{}]
                        arrivals.append(time.perf_counter())
                        finish = choices[0].get("finish_reason") or finish
                ok = response.status_code == 200 and finish == "length" and len(arrivals) > 1
        except httpx.HTTPError:
            ok = False
        with self.lock:
            if not ok:
                self.failed += 1
                return
            self.ttfts.append(arrivals[0] - started)
            self.itls.append((arrivals[-1] - arrivals[0]) / (len(arrivals) - 1))

    def phase(self, endpoint: str, streams: int, seconds: float, tokens: int) -> None:
        """`streams` clients, each sending back to back until `seconds` passed (its last stream finishes)."""
        until = time.time() + seconds

        def client() -> None:
            while time.time() < until:
                self.stream(endpoint, tokens)

        clients = [threading.Thread(target=client) for _ in range(streams)]
        for each in clients:
            each.start()
        for each in clients:
            each.join()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] if ordered else float("nan")


def slurmserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slurmserve", *args], capture_output=True, text=True)


def status(run: str) -> dict:
    return json.loads(slurmserve("status", run, "--json").stdout)


def wait_for_decode(run: str, count: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        scaled = status(run)["autoscale"]["decode"]
        if scaled["actual"] == scaled["desired"] == count:
            return
        time.sleep(1)
    raise RuntimeError(f"{run}: decode never reached {count} workers")


def event_time(event: dict) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


def decode_gpu_seconds(run: str, start: float, end: float) -> float:
    """The decode workers' GPUs times the seconds each ran within [start, end], from the run's events: a
    launched worker from the start, an added one from its start, a removed one until it stopped."""
    plan = open_run(run).plan()
    events = [e.model_dump(mode="json") for e in open_run(run).events()]
    since = {p.name: start for p in plan.launched if p.role == "decode"}
    total = 0.0
    for event in (e for e in events if e["event"] == "scaled"):
        at = min(max(event_time(event), start), end)
        if event["action"] == "add" and event["outcome"] == "started":
            since[event["process"]] = at
        elif event["action"] == "remove" and event["outcome"] == "stopped" and event["process"] in since:
            total += (at - since.pop(event["process"])) * len(plan.process(event["process"]).gpus)
    return total + sum((end - began) * len(plan.process(name).gpus) for name, began in since.items())


def decision_to_serving(run: str) -> list[float]:
    """For each planner decision that added workers: seconds until the last of them served."""
    events = [e.model_dump(mode="json") for e in open_run(run).events()]
    delays, decided, serving_before = [], None, 0
    for event in events:
        if event["event"] == "planner decided":
            decided = (event_time(event), event["counts"].get("decode", 0))
        elif event["event"] == "scaled" and event["outcome"] == "serving":
            serving_before += 1
            if decided is not None and serving_before + 1 >= decided[1]:  # +1: the launched worker
                delays.append(event_time(event) - decided[0])
                decided = None
        elif event["event"] == "scaled" and event["outcome"] == "stopped":
            serving_before -= 1
    return delays


def deployed(kind: str, args: argparse.Namespace) -> dict[str, float]:
    home = tempfile.mkdtemp(prefix=f"slurmserve-autoscale-{kind}-")
    os.environ.update(SLURMSERVE_HOME=home, HOME=home)  # open_run reads this registry too
    run = f"autoscale-bench-{kind}"
    sets = [f"mocker.speedup_ratio={args.speedup_ratio:g}", *PLANNER_THRESHOLDS]
    submitted = slurmserve("submit", "--recipe", RECIPE, "--name", run, *(w for s in sets for w in ("--set", s)))
    if submitted.returncode != 0:
        raise RuntimeError(submitted.stdout + submitted.stderr)
    try:
        if kind != "autoscaled":
            slurmserve("scale", run, "--pause")
            slurmserve("scale", run, f"decode={3 if kind == 'max' else 1}")
            wait_for_decode(run, 3 if kind == "max" else 1)
        endpoint, load, start = status(run)["endpoint"], Load(), time.time()
        for streams, seconds in ((1, args.quiet_s), (args.burst_streams, args.burst_s), (1, args.quiet_s)):
            load.phase(endpoint, streams, seconds, args.tokens)
        end = time.time()
        delays = decision_to_serving(run) if kind == "autoscaled" else []
        return {
            "gpu_s": decode_gpu_seconds(run, start, end),
            "seconds": end - start,
            "streams": len(load.ttfts) + load.failed,
            "failed": load.failed,
            "ttft_p50": statistics.median(load.ttfts),
            "ttft_p99": percentile(load.ttfts, 0.99),
            "itl_p50": statistics.median(load.itls),
            "itl_p99": percentile(load.itls, 0.99),
            "decision_min": min(delays, default=float("nan")),
            "decision_max": max(delays, default=float("nan")),
        }
    finally:
        slurmserve("cancel", run)


def scale_to_serving(run: str) -> list[float]:
    """Per `scale asked` of more workers: seconds until the next worker added by scaling served."""
    events = [e.model_dump(mode="json") for e in open_run(run).events()]
    delays, asked = [], None
    for event in events:
        if event["event"] == "scale asked":
            asked = event_time(event)
        elif event["event"] == "scaled" and event["outcome"] == "serving" and asked is not None:
            delays.append(event_time(event) - asked)
            asked = None
    return delays


def lab_costs(repeats: int) -> dict[str, list[float]]:
    """On the test cluster: per capacity, the seconds from `scale decode=2` to decode-1 serving."""
    from lab_session import lab_session

    costs = {}
    with lab_session() as cluster:
        hosts = str(cluster.hosts_file("slurm"))
        for capacity in ("reserved", "elastic"):
            run = f"autoscale-lab-{capacity}"
            sets = ["--set", f"autoscale.capacity={capacity}"]
            submitted = slurmserve("submit", "--recipe", RECIPE, "--hosts", hosts, "--name", run, *sets)
            if submitted.returncode != 0:
                raise RuntimeError(submitted.stdout + submitted.stderr)
            try:
                slurmserve("scale", run, "--pause")
                for _ in range(repeats):
                    for count in (2, 1):
                        slurmserve("scale", run, f"decode={count}")
                        wait_for_decode(run, count)
                    time.sleep(5)  # decode-1's drain over (idle: its grace period is not waited for)
                costs[capacity] = scale_to_serving(run)
            finally:
                slurmserve("cancel", run)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet-s", type=float, default=20.0)
    parser.add_argument("--burst-s", type=float, default=60.0)
    parser.add_argument("--burst-streams", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--speedup-ratio", type=float, default=1.0)
    parser.add_argument("--lab", action="store_true", help="reserved against elastic on the Slurm test cluster")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.lab:
        for capacity, delays in lab_costs(args.repeats).items():
            shown = ", ".join(f"{delay:.1f}" for delay in delays)
            print(f"{capacity:<9} scale decode=2 to decode-1 serving on the test cluster: {shown} s")
        return
    results = {kind: deployed(kind, args) for kind in ("max", "min", "autoscaled")}
    print(
        f"{RECIPE} on the local backend (mocker, speedup {args.speedup_ratio:g}): {args.quiet_s:g} s of 1 stream, "
        f"{args.burst_s:g} s of {args.burst_streams}, {args.quiet_s:g} s of 1; {args.tokens} tokens a stream"
    )
    columns = ("seconds", "decode GPU-s", "streams", "failed", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99")
    print(f"{'decode':<11}" + "".join(f"{name:>13}" for name in columns))
    for kind, got in results.items():
        label = {"max": "fixed at 3", "min": "fixed at 1", "autoscaled": "1..3"}[kind]
        print(
            f"{label:<11}{got['seconds']:>13.0f}{got['gpu_s']:>13.0f}{got['streams']:>13}{got['failed']:>13}"
            f"{got['ttft_p50'] * 1000:>11.0f}ms{got['ttft_p99'] * 1000:>11.0f}ms"
            f"{got['itl_p50'] * 1000:>11.1f}ms{got['itl_p99'] * 1000:>11.1f}ms"
        )
    scaled = results["autoscaled"]
    print(
        f"planner decision to the added workers serving: {scaled['decision_min']:.1f} s to "
        f"{scaled['decision_max']:.1f} s (target for reserved: under 5 s)"
    )


if __name__ == "__main__":
    main()
