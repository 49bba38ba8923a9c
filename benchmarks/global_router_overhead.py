"""What Dynamo's global router costs a request: TTFT and request latency through the global router next to
the same pool served directly, at the same load, in one run.

Local backend, mock engine, real Dynamo 1.6.1 processes. It submits mocker-two-pools and starts a second
frontend scoped to the fast pool's namespace (the pool served directly: frontend -> workers) beside the
deployment's own (frontend -> global router -> the pool's local router -> workers). Both paths get the
same load, CONCURRENCY streaming chat requests at a time with tight SLA targets (so the global router
picks the fast pool), in alternating rounds so that drift on this machine falls on both alike. Printed:
TTFT and latency p50/p99 per path and the router's added latency.

    python benchmarks/global_router_overhead.py [--rounds 6] [--requests 40] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from slurmserve import deploy
from slurmserve.observability.prometheus import free_port
from slurmserve.planning.plan import Plan
from slurmserve.runs import open_run
from slurmserve.transport.http import http_ok
from slurmserve.waiting import wait_until

TARGETS = {"ttft_target": 100, "itl_target": 10}  # the fast pool's tier


def direct_frontend(plan: Plan, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A frontend scoped to the fast pool's namespace, with the deployment frontend's environment."""
    ours = plan.process("frontend")
    port, response = free_port(), free_port()
    command = [arg for arg in ours.command]
    command[command.index("--http-port") + 1] = str(port)
    command[command.index("--namespace") + 1] = "fast"
    env = {**os.environ, **ours.env, "DYN_TCP_RESPONSE_STREAM_PORT": str(response)}
    process = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


async def one_request(client: httpx.AsyncClient, endpoint: str, model: str) -> tuple[float, float]:
    """(TTFT, latency) of one streamed chat completion, in seconds."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 32,
        "stream": True,
        "nvext": {"router": TARGETS},
    }
    started = time.perf_counter()
    first = None
    async with client.stream("POST", f"{endpoint}/v1/chat/completions", json=body, timeout=30.0) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            # The first streamed chunk, text or not: the measure these figures were taken with.
            if first is None and line.startswith("data:") and "[DONE]" not in line:
                first = time.perf_counter() - started
    return first if first is not None else time.perf_counter() - started, time.perf_counter() - started


async def load(endpoint: str, model: str, requests: int, concurrency: int) -> list[tuple[float, float]]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient() as client:

        async def limited() -> tuple[float, float]:
            async with limit:
                return await one_request(client, endpoint, model)

        return await asyncio.gather(*(limited() for _ in range(requests)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(label: str, found: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    ttft, latency = [t for t, _ in found], [latency for _, latency in found]
    figures = tuple(1000 * percentile(values, q) for values in (ttft, latency) for q in (0.5, 0.99))
    print(f"{label:<28} {len(found):>5}   " + "   ".join(f"{value:8.1f}" for value in figures))
    return figures  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=40, help="per path and round")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("SLURMSERVE_HOME", tempfile.mkdtemp(prefix="gr-overhead-"))
    run = deploy.submit(deploy.prepare("mocker-two-pools", None, [], name="gr-overhead"), timeout=120).run
    plan = open_run(run.name).plan()
    direct, direct_url = direct_frontend(plan, run.path / "logs" / "direct-frontend.log")
    try:
        assert wait_until(lambda: http_ok(f"{direct_url}/v1/models"), 60)
        pool_model = "fast--tiny-mock"  # the fast pool's workers' own name
        assert wait_until(lambda: pool_model in httpx.get(f"{direct_url}/v1/models").text, 60)
        paths = {
            "through the global router": (plan.endpoint, plan.model),
            "the pool directly": (direct_url, pool_model),
        }
        results: dict[str, list[tuple[float, float]]] = {label: [] for label in paths}
        for endpoint, model in paths.values():  # warm-up, not counted
            asyncio.run(load(endpoint, model, args.concurrency * 2, args.concurrency))
        for number in range(args.rounds):
            order = list(paths) if number % 2 == 0 else list(reversed(paths))
            for label in order:
                endpoint, model = paths[label]
                results[label] += asyncio.run(load(endpoint, model, args.requests, args.concurrency))
        print(f"\nmocker-two-pools, fast pool, concurrency {args.concurrency}, {args.rounds} alternating rounds")
        print(f"{'path':<28} {'reqs':>5}   {'TTFT p50':>8}   {'TTFT p99':>8}   {'lat p50':>8}   {'lat p99':>8}  (ms)")
        routed = report("through the global router", results["through the global router"])
        served = report("the pool directly", results["the pool directly"])
        added = [a - b for a, b in zip(routed, served, strict=True)]
        print(f"{'added by the global router':<28} {'':>5}   " + "   ".join(f"{value:+8.1f}" for value in added))
        print(
            f"(TTFT p50 ratio {routed[0] / served[0]:.2f}x, latency p50 ratio {routed[2] / served[2]:.2f}x;"
            f" medians over {statistics.mean([len(v) for v in results.values()]):.0f} requests per path)"
        )
    finally:
        direct.terminate()
        direct.wait()
        deploy.cancel(run)


if __name__ == "__main__":
    main()
