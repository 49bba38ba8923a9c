"""Long streamed chat completions against a scaled deployment, and a worker's own count of those in flight:
what the scaling tests send while a worker is removed."""

from __future__ import annotations

import time

import httpx

from slurmserve.bench.workload import replayed_chat

TOKENS = 2048  # the replay trace's answer (`output_replay_id:osl-2048`): about 20 s at speedup 1 here

Outcome = tuple[int, int, str | None, float]  # HTTP status, data chunks, the last finish_reason, when it ended


def in_flight(endpoint: str) -> float:
    """Requests a worker is serving now, from its own /metrics."""
    text = httpx.get(endpoint, timeout=5).text
    lines = [line for line in text.splitlines() if line.startswith("dynamo_component_inflight_requests{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def stream(endpoint: str, outcomes: list[Outcome]) -> None:
    """One streamed chat completion of TOKENS tokens; its outcome appended."""
    body = replayed_chat("tiny-mock", TOKENS)
    chunks, finish = 0, None
    with httpx.stream("POST", f"{endpoint}/v1/chat/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunks += 1
                if '"finish_reason":"' in line:
                    finish = line.split('"finish_reason":"')[1].split('"')[0]
        outcomes.append((response.status_code, chunks, finish, time.time()))


def all_whole(outcomes: list[Outcome]) -> bool:
    """Every stream answered 200 and ran to its length."""
    return bool(outcomes) and all(
        code == 200 and finish == "length" and chunks >= TOKENS for code, chunks, finish, _ in outcomes
    )
