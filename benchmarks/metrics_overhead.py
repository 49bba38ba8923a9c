"""The supervisor's CPU with and without its /metrics scrapes, at 64 workers.

Simulated endpoints (one process, a loopback port each: 64 workers answering /health and a worker's
/metrics, and a frontend answering /metrics with its histograms) stand in for a deployment; the real
supervisor watches a plan of them (`python -m slurmserve.node.supervisor RUN_DIR`), once with the
recipe's default scrape interval (5 s) and once with scraping off (observability.scrape_interval_s: 0).
Printed side by side: the supervisor's CPU seconds per wall-clock second over a steady minute.

    .venv/bin/python benchmarks/metrics_overhead.py [--workers 64] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from supervisor_scale import cpu_seconds, plan_json

BASE_PORT = 25000
WORKER_METRICS = "".join(
    f'dynamo_component_requests_total{{dynamo_endpoint="{endpoint}",worker_id="w"}} 1234\n'
    for endpoint in ("generate", "clear_kv_blocks", "worker_kv_query")
) + "".join(f'vllm:kv_cache_usage_perc{{engine="{i}"}} 0.25\n' for i in range(4))
BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, float("inf"))
FRONTEND_METRICS = (
    'dynamo_frontend_requests_total{model="m",request_type="stream",status="success"} 1000\n'
    'dynamo_frontend_inflight_requests{model="m"} 4\n'
    'dynamo_frontend_queued_requests{model="m"} 0\n'
    "# TYPE dynamo_frontend_output_sequence_tokens histogram\n"
    'dynamo_frontend_output_sequence_tokens_sum{model="m"} 32000\n'
    'dynamo_frontend_output_sequence_tokens_count{model="m"} 1000\n'
    + "".join(
        f"# TYPE {name} histogram\n"
        + "".join(f'{name}_bucket{{model="m",le="{bound}"}} {100 * (i + 1)}\n' for i, bound in enumerate(BUCKETS))
        + f'{name}_sum{{model="m"}} 12\n{name}_count{{model="m"}} 1000\n'
        for name in ("dynamo_frontend_time_to_first_token_seconds", "dynamo_frontend_inter_token_latency_seconds")
    )
)


def serve(count: int) -> None:
    """Workers on BASE_PORT..+count-1, the frontend on BASE_PORT+count; runs until killed."""

    def handler(body: str) -> type[BaseHTTPRequestHandler]:
        class Answer(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                text = (body if self.path == "/metrics" else "ok").encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args: object) -> None:
                pass

        return Answer

    bodies = [WORKER_METRICS] * count + [FRONTEND_METRICS]
    for index, body in enumerate(bodies):
        server = ThreadingHTTPServer(("127.0.0.1", BASE_PORT + index), handler(body))
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def cpu_per_second(count: int, scrape_interval_s: float, seconds: float) -> float:
    with tempfile.TemporaryDirectory(prefix="metrics-overhead-") as scratch:
        run_dir = Path(scratch) / "run"
        (run_dir / "logs").mkdir(parents=True)
        (run_dir / "pids").mkdir()
        plan = plan_json(count, run_dir)
        for process in plan["processes"]:
            port = BASE_PORT + process["replica"]
            process |= {"ports": {"system": port}, "ready_url": f"http://127.0.0.1:{port}/health"}
        plan |= {"endpoint": f"http://127.0.0.1:{BASE_PORT + count}", "scrape_interval_s": scrape_interval_s}
        (run_dir / "plan.json").write_text(json.dumps(plan))
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(count)], stdout=subprocess.PIPE, text=True)
        assert server.stdout and server.stdout.readline().strip() == "ready"
        for i in range(count):
            (run_dir / "pids" / f"w-{i}.pid").write_text(f"{server.pid}\n")
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "slurmserve.node.supervisor", str(run_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(10)  # past start-up: every process ready, the first scrapes done
            cpu, wall = cpu_seconds(supervisor.pid), time.monotonic()
            time.sleep(seconds)
            return (cpu_seconds(supervisor.pid) - cpu) / (time.monotonic() - wall)
        finally:
            supervisor.send_signal(signal.SIGTERM)
            supervisor.wait(30)
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    with_scrapes = cpu_per_second(args.workers, 5.0, args.seconds)
    without = cpu_per_second(args.workers, 0.0, args.seconds)
    print(f"supervisor CPU at {args.workers} workers, over {args.seconds:g} s of steady state:")
    print(f"  without /metrics scrapes     {without:.4f} CPU s per s")
    print(f"  with scrapes every 5 s       {with_scrapes:.4f} CPU s per s")
    print(f"  the scrapes' share           {with_scrapes - without:+.4f} CPU s per s ({with_scrapes / without:.2f}x)")


if __name__ == "__main__":
    main()
