"""The supervisor's tick at scale: the real supervisor against 256, 1,024 and 2,048 simulated processes.

One process here serves every simulated health endpoint (one loopback port each, HTTP 200 on /health);
a run directory holds a plan with one process per endpoint, and PID files naming that serving process,
so every process is alive. The supervisor runs as it does for a deployment (`python -m ...supervisor
RUN_DIR`). Printed per size: tick time p50/p99 (the supervisor's own figure, or for a checkout before
the change the time between its state writes less its 0.5 s sleep), CPU seconds per tick, and the
detection latency of an endpoint that goes away (its port closed; until the supervisor records the
process unhealthy). Targets: tick p99 <= 0.5 s and detection <= 1 s at 2,048, tick time growing no
faster than linearly.

    .venv/bin/python benchmarks/supervisor_scale.py [--sizes 256,1024,2048] [--before CHECKOUT]

`--before` runs the same on another checkout (e.g. `git worktree add /tmp/before 1133b90`), side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE_PORT = 24000  # below the ephemeral range (32768 up), which the clients' own ports come from
TICKS_MEASURED = 30
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


async def serve(count: int, base: int) -> None:
    """Every endpoint on 127.0.0.1:base..base+count-1; `close K` on stdin closes endpoint K."""

    clients: dict[int, set[asyncio.StreamWriter]] = {index: set() for index in range(count)}

    def answerer(index: int):
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            clients[index].add(writer)
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(OK)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                pass
            clients[index].discard(writer)
            writer.close()

        return answer

    servers = [await asyncio.start_server(answerer(index), "127.0.0.1", base + index) for index in range(count)]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.startswith("close "):
            index = int(line.split()[1])
            servers[index].close()  # no new connection is accepted: the endpoint is gone
            for writer in list(clients[index]):
                writer.close()
            print("closed", flush=True)


def plan_json(count: int, run_dir: Path) -> dict:
    processes = [
        {
            "name": f"w-{i}",
            "role": "agg",
            "replica": i,
            "nodes": ["here"],
            "ports": {"system": BASE_PORT + i},
            "command": ["true"],
            "ready_url": f"http://127.0.0.1:{BASE_PORT + i}/health",
            "log": f"logs/w-{i}.log",
        }
        for i in range(count)
    ]
    return {
        "recipe": "scale",
        "backend": "local",
        "run_name": run_dir.name,
        "run_dir": str(run_dir),
        "engine": "mocker",
        "mode": "agg",
        "model": "m",
        "model_path": "/m",
        "discovery": "file",
        "endpoint": "http://127.0.0.1:1",
        "port_block": 0,
        "python": sys.executable,
        "nodes": [{"name": "here", "address": "127.0.0.1", "gpus": 8}],
        "processes": processes,
        "workers_expected": {"agg": count},
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def state_of(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "state.json").read_text())
    except (OSError, ValueError):
        return None


def events_of(run_dir: Path) -> list[dict]:
    events = []
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def measure(count: int, checkout: Path, module: str, ticks: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="supervisor-scale-") as scratch:
        run_dir = Path(scratch) / f"scale-{count}"
        (run_dir / "logs").mkdir(parents=True)
        (run_dir / "pids").mkdir()
        (run_dir / "plan.json").write_text(json.dumps(plan_json(count, run_dir)))
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert server.stdout and server.stdin and server.stdout.readline().strip() == "ready"
        for i in range(count):
            (run_dir / "pids" / f"w-{i}.pid").write_text(f"{server.pid}\n")
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        supervisor = subprocess.Popen(
            [sys.executable, "-m", module, str(run_dir)],
            cwd=checkout,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            return observe(run_dir, server, supervisor.pid, count, ticks)
        finally:
            supervisor.send_signal(signal.SIGTERM)
            supervisor.wait(30)
            server.kill()
            server.wait()


def observe(run_dir: Path, server: subprocess.Popen, supervisor: int, count: int, measured: int) -> dict:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # until every process is ready
        state = state_of(run_dir)
        if state and all(p["state"] == "ready" for p in state["processes"].values()):
            break
        time.sleep(0.05)
    else:
        raise SystemExit(f"{count}: not every process became ready")
    ticks, writes, last = [], [], None
    cpu_before = cpu_seconds(supervisor)
    heartbeat_before = (state_of(run_dir) or {}).get("heartbeat", 0)
    while len(writes) < measured + 1:  # steady state: every process ready, a client-less deployment
        state = state_of(run_dir)
        if state and state["updated"] != last:
            last = state["updated"]
            writes.append(last)
            if "tick_s" in state:
                ticks.append(state["tick_s"])  # the supervisor's own figure for its latest tick
        time.sleep(0.005)
    state = state_of(run_dir) or {}
    if "heartbeat" in state:
        cpu = (cpu_seconds(supervisor) - cpu_before) / max(state["heartbeat"] - heartbeat_before, 1)
    else:  # a supervisor before the change: one state write a tick, then its 0.5 s wait
        ticks = [max(0.0, b - a - 0.5) for a, b in itertools.pairwise(writes)]
        cpu = (cpu_seconds(supervisor) - cpu_before) / measured
    p50, p99 = statistics.median(ticks), statistics.quantiles(ticks, n=100)[98]
    victim = count // 2
    seen = len(events_of(run_dir))
    assert server.stdin and server.stdout
    closed_at = time.time()
    server.stdin.write(f"close {victim}\n")
    server.stdin.flush()
    server.stdout.readline()
    detection = None
    while time.time() - closed_at < 60 and detection is None:
        for event in events_of(run_dir)[seen:]:
            if event.get("process") == f"w-{victim}" and event.get("state") in ("unhealthy", "failed"):
                detection = event_time(event) - closed_at
        time.sleep(0.02)
    return {"p50": p50, "p99": p99, "cpu": cpu, "detection": detection}


def event_time(event: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["time"]).timestamp()


def report(label: str, sizes: list[int], checkout: Path, module: str, ticks: int) -> dict[int, dict]:
    results = {}
    for count in sizes:
        result = results[count] = measure(count, checkout, module, ticks)
        detection = f"{result['detection']:.2f} s" if result["detection"] is not None else "not seen in 60 s"
        print(
            f"{label:>6} {count:>5} processes: tick p50 {result['p50']:.3f} s, p99 {result['p99']:.3f} s, "
            f"CPU {result['cpu']:.3f} s/tick, detection {detection}",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,1024,2048")
    parser.add_argument("--before", type=Path, help="a checkout before the change, measured the same way")
    parser.add_argument("--before-sizes", help="sizes for --before (default: --sizes)")
    parser.add_argument("--ticks", type=int, default=TICKS_MEASURED, help="ticks measured per size")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, BASE_PORT))
        return
    sizes = [int(size) for size in args.sizes.split(",")]
    after = report("after", sizes, REPO, "slurmserve.node.supervisor", args.ticks)
    if len(sizes) > 1:
        growth = after[sizes[-1]]["p50"] / max(after[sizes[0]]["p50"], 1e-6)
        print(
            f"after: tick p50 grows {growth:.1f}x for {sizes[-1] / sizes[0]:.0f}x the processes "
            f"(linear or better: <= {sizes[-1] / sizes[0]:.0f}x)"
        )
    big = after[sizes[-1]]
    print(
        f"targets at {sizes[-1]}: tick p99 {big['p99']:.3f} s (<= 0.5: {'met' if big['p99'] <= 0.5 else 'MISSED'}), "
        f"detection {big['detection'] or float('inf'):.2f} s "
        f"(<= 1: {'met' if big['detection'] is not None and big['detection'] <= 1 else 'MISSED'})"
    )
    if args.before:
        before_sizes = [int(size) for size in (args.before_sizes or args.sizes).split(",")]
        report("before", before_sizes, args.before, "slurmserve.supervisor", args.ticks)


if __name__ == "__main__":
    main()
