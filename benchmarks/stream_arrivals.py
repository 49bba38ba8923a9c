"""When each piece of a streamed response arrives: over HTTP from a Dynamo frontend (each SSE chunk of a
streamed chat completion), or from a Dynamo endpoint called with Dynamo's own client (each response of
`NS.COMPONENT.ENDPOINT`, no HTTP). Dynamo alone: it imports httpx and, for endpoints, Dynamo's runtime.

Concurrent requests, warm-up first; printed: the response headers' p50 (HTTP only), TTFT and latency
p50/p99, how many requests got their first piece together with their last (within 2 ms), and the arrival
times (ms) of the first few requests, one line each.

    python benchmarks/stream_arrivals.py http http://127.0.0.1:18080 MODEL [--requests 40] [--concurrency 4]
    python benchmarks/stream_arrivals.py dynamo NS.router.generate [--requests 40] [--concurrency 4]

For endpoints, the environment says where discovery is, as for any Dynamo process (DYN_DISCOVERY_BACKEND,
DYN_FILE_KV or ETCD_ENDPOINTS; DYN_REQUEST_PLANE).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

TARGETS = {"ttft_target": 100, "itl_target": 10}  # tight: the global router picks its fast pool
MAX_TOKENS = 32
# What the frontend hands the global router and a local router: a tokenized request.
PREPROCESSED = {
    "model": "tiny-mock",
    "token_ids": list(range(1, 20)),
    "stop_conditions": {"max_tokens": MAX_TOKENS, "ignore_eos": True},
    "sampling_options": {},
    "output_options": {},
    "eos_token_ids": [],
    "annotations": [],
    "router": TARGETS,
}

Arrivals = list[float]  # ms since the request: [headers (HTTP only, else nan), each piece...]
OneRequest = Callable[[], Awaitable[Arrivals]]


async def timed(pieces: AsyncIterator[object], started: float, headers: float) -> Arrivals:
    arrivals = [headers]
    async for _ in pieces:
        arrivals.append(1000 * (time.perf_counter() - started))
    return arrivals


def http_request(client: httpx.AsyncClient, url: str, model: str) -> OneRequest:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "nvext": {"router": TARGETS},
    }

    async def chunks(response: httpx.Response) -> AsyncIterator[str]:
        async for line in response.aiter_lines():
            if line.startswith("data:") and "[DONE]" not in line:
                yield line

    async def one() -> Arrivals:
        started = time.perf_counter()
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30.0) as response:
            response.raise_for_status()
            return await timed(chunks(response), started, 1000 * (time.perf_counter() - started))

    return one


async def dynamo_requests(endpoint: str, run: Callable[[OneRequest], Awaitable[None]]) -> None:
    from dynamo.runtime import DistributedRuntime

    planes = os.environ.get("DYN_DISCOVERY_BACKEND", "etcd"), os.environ.get("DYN_REQUEST_PLANE", "tcp")
    runtime = DistributedRuntime(asyncio.get_running_loop(), *planes)
    client = await runtime.endpoint(endpoint).client()
    await client.wait_for_instances()

    async def one() -> Arrivals:
        started = time.perf_counter()
        return await timed(await client.generate(dict(PREPROCESSED)), started, float("nan"))

    try:
        await run(one)
    finally:
        runtime.shutdown()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(label: str, found: list[Arrivals]) -> None:
    heads, firsts, lasts = [a[0] for a in found], [a[1] for a in found], [a[-1] for a in found]
    together = sum(1 for a in found if a[-1] - a[1] < 2.0)
    head = "" if math.isnan(heads[0]) else f"headers p50 {statistics.median(heads):5.1f}   "
    print(
        f"{label}: {head}TTFT p50 {percentile(firsts, 0.5):5.1f} p99 {percentile(firsts, 0.99):5.1f}   "
        f"latency p50 {percentile(lasts, 0.5):5.1f} p99 {percentile(lasts, 0.99):5.1f} ms   "
        f"first piece with the last: {together}/{len(found)}"
    )
    for arrivals in found[:3]:
        print("    " + " ".join(f"{t:.0f}" for t in arrivals[1:]))


async def measure(label: str, one: OneRequest, requests: int, concurrency: int) -> None:
    limit = asyncio.Semaphore(concurrency)

    async def limited() -> Arrivals:
        async with limit:
            return await one()

    await asyncio.gather(*(limited() for _ in range(2 * concurrency)))  # warm-up, not counted
    report(label, list(await asyncio.gather(*(limited() for _ in range(requests)))))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["http", "dynamo"])
    parser.add_argument("target", help="the frontend's URL, or the endpoint NS.COMPONENT.ENDPOINT")
    parser.add_argument("model", nargs="?", help="the model to ask the frontend for (http)")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--label", help="the line's name (default: the target)")
    args = parser.parse_args()
    label = args.label or args.target

    async def run(one: OneRequest) -> None:
        await measure(label, one, args.requests, args.concurrency)

    if args.kind == "http":
        async with httpx.AsyncClient() as client:  # one client: connections kept alive, as most clients do
            await run(http_request(client, args.target, args.model))
    else:
        await dynamo_requests(args.target, run)


if __name__ == "__main__":
    asyncio.run(main())
