"""The supervisor at scale, live metrics on: the real supervisor against 256 to 4,096 simulated processes.

One process here (asyncio) serves every simulated endpoint, one loopback port each: HTTP 200 on /health,
and on /metrics the exposition text a Dynamo 1.6.1 mock worker serves (benchmarks/data/, captured from
`submit --recipe mocker-disagg`); the frontend's /metrics (captured the same way) on one more port. A run
directory holds a plan with one process per endpoint, and PID files naming that serving process, so every
process is alive. The supervisor runs as it does for a deployment (`python -m ...supervisor RUN_DIR`),
with its scraper of live metrics (a child process since the scraper moved out of the tick's interpreter;
a thread of the supervisor before).

Printed per size: tick time p50/p99 (the supervisor's own figure), its CPU seconds per tick, the CPU in
cores (CPU-seconds per second) of the supervisor and of its scraper child, their sum, per process, the
detection latency of an endpoint that goes away (its port closed; until the supervisor records the
process unhealthy), and the load average (the figures are only as quiet as the machine). Targets, at
2,048 and 4,096: tick p99 <= 0.5 s, detection <= 1 s, whole CPU <= 1.0 core; CPU per process at 4,096 at
most 1.2x that at 1,024.

    .venv/bin/python benchmarks/supervisor_scale.py [--sizes 256,1024,2048,4096] [--before CHECKOUT]
    .venv/bin/python benchmarks/supervisor_scale.py --smoke    # CI: 1,024 processes, figures only

`--before` runs the same on another checkout (e.g. `git worktree add /tmp/before-2a7c08e 2a7c08e`), after.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE_PORT = 24000  # below the ephemeral range (32768 up), which the clients' own ports come from
TICKS_MEASURED = 30  # state writes: of 30 ticks the p99 is near the largest
READY_WAIT_S = 300
SCRAPE_INTERVAL_S = 5.0  # the recipes' default
DATA = Path(__file__).resolve().parent / "data"
WORKER_METRICS = "dynamo-1.6.1-mocker-decode-metrics.txt"  # captured from `submit --recipe mocker-disagg`
FRONTEND_METRICS = "dynamo-1.6.1-frontend-metrics.txt"  # the same, after a dozen streamed requests
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
UTIME, STIME, START_TIME = 11, 12, 19  # in stat_of's fields
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def exposition(path: Path) -> bytes:
    body = path.read_bytes()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s" % (len(body), body)


def raise_open_files(needed: int) -> None:
    """Each endpoint is a listening socket and a connection or two (probes, scrapes): thousands of files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (min(needed, hard) if hard != resource.RLIM_INFINITY else needed, hard)
        )


async def serve(count: int, base: int) -> None:
    """Every worker endpoint on 127.0.0.1:base..base+count-1 (/health: 200, /metrics: a Dynamo mock
    worker's), the frontend's /metrics on base-1; `close K` on stdin closes endpoint K."""
    raise_open_files(4 * count + 256)
    worker, frontend = exposition(DATA / WORKER_METRICS), exposition(DATA / FRONTEND_METRICS)
    clients: dict[int, set[asyncio.StreamWriter]] = {index: set() for index in range(-1, count)}

    def answerer(index: int, metrics: bytes):
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            clients[index].add(writer)
            try:
                while True:
                    request = await reader.readuntil(b"\r\n\r\n")
                    writer.write(metrics if request.startswith(b"GET /metrics") else OK)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                pass
            clients[index].discard(writer)
            writer.close()

        return answer

    await asyncio.start_server(answerer(-1, frontend), "127.0.0.1", base - 1)
    servers = [await asyncio.start_server(answerer(i, worker), "127.0.0.1", base + i) for i in range(count)]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.startswith("close "):
            index = int(line.split()[1])
            servers[index].close()  # no new connection is accepted: the endpoint is gone
            for writer in list(clients[index]):
                writer.close()
            print("closed", flush=True)


def plan_json(count: int, run_dir: Path, scrape_s: float = SCRAPE_INTERVAL_S) -> dict:
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
        "endpoint": f"http://127.0.0.1:{BASE_PORT - 1}",  # the frontend's /metrics only: no frontend process
        "scrape_interval_s": scrape_s,
        "port_block": 0,
        "python": sys.executable,
        "nodes": [{"name": "here", "address": "127.0.0.1", "gpus": 8}],
        "processes": processes,
        "workers_expected": {"agg": count},
    }


def stat_of(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command's name (the third field first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int | None) -> float:
    """A process's CPU seconds so far, user and system (0 for none, or one that has ended)."""
    try:
        fields = stat_of(pid) if pid else []
    except OSError:
        return 0.0
    return (int(fields[UTIME]) + int(fields[STIME])) / CLOCK_TICKS if fields else 0.0


def scraper_pid(run_dir: Path) -> int | None:
    """The supervisor's scraper child (a supervisor before it scraped in a thread of its own)."""
    try:
        return int((run_dir / "pids" / "scraper.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def written(run_dir: Path) -> tuple[int, int] | None:
    """When state.json was last written (replaced whole: a new inode each time)."""
    try:
        status = (run_dir / "state.json").stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_ino


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


def measure(count: int, checkout: Path, ticks: int, scrape_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="supervisor-scale-") as scratch:
        run_dir = Path(scratch) / f"scale-{count}"
        (run_dir / "logs").mkdir(parents=True)
        (run_dir / "pids").mkdir()
        (run_dir / "plan.json").write_text(json.dumps(plan_json(count, run_dir, scrape_s)))
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert server.stdout and server.stdin and server.stdout.readline().strip() == "ready"
        record = f"{server.pid} {stat_of(server.pid)[START_TIME]}\n"  # a PID with its start time: not a reused one
        for i in range(count):
            (run_dir / "pids" / f"w-{i}.pid").write_text(record)
        supervisor = subprocess.Popen(
            [sys.executable, "-m", supervisor_module(checkout), str(run_dir)],
            cwd=checkout,
            env={**os.environ, "PYTHONPATH": str(checkout)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            if not ready_in(run_dir, READY_WAIT_S):
                return {"ready": False}
            return steady(run_dir, supervisor.pid, ticks) | {"detection": detection(run_dir, server, count // 2)}
        finally:
            supervisor.send_signal(signal.SIGTERM)
            supervisor.wait(30)
            server.kill()
            server.wait()


def supervisor_module(checkout: Path) -> str:
    """The supervisor's program in that checkout (before 2a7c08e it was slurmserve.supervisor)."""
    return (
        "slurmserve.node.supervisor"
        if (checkout / "slurmserve/node/supervisor.py").exists()
        else "slurmserve.supervisor"
    )


def ready_in(run_dir: Path, seconds: float) -> bool:
    """Whether every process became ready within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = state_of(run_dir)
        if state and all(p["state"] == "ready" for p in state["processes"].values()):
            return True
        time.sleep(0.05)
    return False


def steady(run_dir: Path, supervisor: int, measured: int) -> dict:
    """Every process ready, a client-less deployment, scraping on: the tick's times and CPU, the scraper's
    CPU, over `measured` state writes."""
    ticks, writes, last = [], [], None
    scraper = scraper_pid(run_dir)
    started, cpu_before, scraper_before = time.monotonic(), cpu_seconds(supervisor), cpu_seconds(scraper)
    heartbeat_before = (state_of(run_dir) or {}).get("heartbeat", 0)
    # A state write carries the tick before its own: the first steady one is the write two ticks on (the
    # ticks before every process was ready, the first making thousands of connections, are start-up).
    first_steady = heartbeat_before + 2
    seen = None
    while len(writes) < measured + 1:
        time.sleep(0.005)
        # Parsed only when written: thousands of processes' state 200 times a second would take CPU the
        # machine's two cores owe the supervisor.
        stamp = written(run_dir)
        if stamp == seen:
            continue
        seen, state = stamp, state_of(run_dir)
        if state and state["updated"] != last and state.get("heartbeat", first_steady) >= first_steady:
            last = state["updated"]
            writes.append(last)
            if "tick_s" in state:
                ticks.append(state["tick_s"])  # the supervisor's own figure for its latest tick
    wall = time.monotonic() - started
    cpu, scraped = cpu_seconds(supervisor) - cpu_before, cpu_seconds(scraper) - scraper_before
    state = state_of(run_dir) or {}
    if "heartbeat" in state:
        per_tick = cpu / max(state["heartbeat"] - heartbeat_before, 1)
    else:  # a supervisor before f9ec435: one state write a tick, then its 0.5 s wait
        ticks = [max(0.0, b - a - 0.5) for a, b in itertools.pairwise(writes)]
        per_tick = cpu / measured
    return {
        "p50": statistics.median(ticks),
        # Inclusive: of a few dozen ticks the default (exclusive) method extrapolates past the largest.
        "p99": statistics.quantiles(ticks, n=100, method="inclusive")[98],
        "cpu": per_tick,
        "supervisor_cores": cpu / wall,
        "scraper_cores": scraped / wall,
        "live": state.get("metrics") is not None,
        "ready": True,
    }


def detection(run_dir: Path, server: subprocess.Popen, victim: int) -> float | None:
    """Seconds from an endpoint going away until the supervisor records its process unhealthy."""
    seen = len(events_of(run_dir))
    assert server.stdin and server.stdout
    closed_at = time.time()
    server.stdin.write(f"close {victim}\n")
    server.stdin.flush()
    server.stdout.readline()
    while time.time() - closed_at < 60:
        for event in events_of(run_dir)[seen:]:
            if event.get("process") == f"w-{victim}" and event.get("state") in ("unhealthy", "failed"):
                return event_time(event) - closed_at
        time.sleep(0.02)
    return None


def event_time(event: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["time"]).timestamp()


def report(label: str, sizes: list[int], checkout: Path, ticks: int, scrape_s: float) -> dict[int, dict]:
    results = {}
    for count in sizes:
        result = measure(count, checkout, ticks, scrape_s)
        if not result["ready"]:
            print(f"{label:>6} {count:>5} processes: not every process became ready in {READY_WAIT_S:g} s", flush=True)
            continue
        results[count] = result
        seen = f"{result['detection']:.2f} s" if result["detection"] is not None else "not seen in 60 s"
        whole = result["supervisor_cores"] + result["scraper_cores"]
        print(
            f"{label:>6} {count:>5} processes: tick p50 {result['p50']:.3f} s, p99 {result['p99']:.3f} s, "
            f"CPU {result['cpu']:.3f} s/tick; cores: tick {result['supervisor_cores']:.2f} + scraper "
            f"{result['scraper_cores']:.2f} = {whole:.2f} ({1000 * whole / count:.3f} millicores a process); "
            f"detection {seen}; live figures in state.json: {'yes' if result['live'] else 'no'}; "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    return results


def targets(after: dict[int, dict]) -> None:
    """The issue's targets at the largest size measured (2,048 and 4,096 in a full run)."""
    sizes = sorted(after)
    for size in [size for size in sizes if size >= 2048] or sizes[-1:]:
        big = after[size]
        whole = big["supervisor_cores"] + big["scraper_cores"]
        seen = big["detection"] if big["detection"] is not None else float("inf")
        print(
            f"targets at {size}: tick p99 {big['p99']:.3f} s ({verdict(big['p99'] <= 0.5)} <= 0.5), detection "
            f"{seen:.2f} s ({verdict(seen <= 1)} "
            f"<= 1), whole CPU {whole:.2f} cores ({verdict(whole <= 1.0)} <= 1.0)"
        )
    if 1024 in after and 4096 in after:
        per = {size: (after[size]["supervisor_cores"] + after[size]["scraper_cores"]) / size for size in (1024, 4096)}
        growth = per[4096] / per[1024]
        print(f"CPU per process at 4096 / at 1024: {growth:.2f}x ({verdict(growth <= 1.2)} <= 1.2x)")


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,1024,2048,4096")
    parser.add_argument("--smoke", action="store_true", help="CI: 1,024 processes, 10 ticks, figures only")
    parser.add_argument("--before", type=Path, help="a checkout before the change, measured the same way")
    parser.add_argument("--before-sizes", help="sizes for --before (default: --sizes)")
    parser.add_argument("--ticks", type=int, default=TICKS_MEASURED, help="state writes measured per size")
    parser.add_argument(
        "--scrape-interval", type=float, default=SCRAPE_INTERVAL_S, help="the plan's; 0: the tick without scraping"
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the supervisor and the server are stopped too
    if args.serve:
        asyncio.run(serve(args.serve, BASE_PORT))
        return
    if args.smoke:
        args.sizes, args.ticks = "1024", 10
    sizes = [int(size) for size in args.sizes.split(",")]
    after = report("after", sizes, REPO, args.ticks, args.scrape_interval)
    if not args.smoke:
        targets(after)
    if args.before:
        before_sizes = [int(size) for size in (args.before_sizes or args.sizes).split(",")]
        report("before", before_sizes, args.before, args.ticks, args.scrape_interval)


if __name__ == "__main__":
    main()
