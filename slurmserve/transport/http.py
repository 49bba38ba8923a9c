"""HTTP probes of a running deployment: readiness URLs, the frontend's view of its workers, a real completion."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from ..waiting import wait_until

HTTP_TIMEOUT_S = 2.0  # an endpoint slower than this to answer a probe is not healthy


def http_ok(url: str, timeout: float = HTTP_TIMEOUT_S) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(url: str, timeout: float, still_alive: Callable[[], bool]) -> bool:
    """Until the URL answers 200 (True), the deadline passes or the process waited for is gone (False):
    the readiness wait between stages, wherever the stages run."""
    return wait_until(lambda: http_ok(url), timeout, still_alive)


def frontend_instances(endpoint: str, timeout: float = HTTP_TIMEOUT_S) -> list[dict[str, Any]] | None:
    """Every instance the frontend knows (its /health list: each worker's `generate`, and its other
    endpoints); None when it does not answer."""
    try:
        instances = httpx.get(f"{endpoint}/health", timeout=timeout).json().get("instances", [])
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return [instance for instance in instances if isinstance(instance, dict)] if isinstance(instances, list) else None


# What the frontend routes requests to: a worker's (or an agg global router's) `generate`, and a disagg
# global router's two endpoints.
SERVING_ENDPOINTS = ("generate", "prefill_generate", "decode_generate")


def serving(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The instances requests are routed to."""
    return [instance for instance in instances if instance.get("endpoint") in SERVING_ENDPOINTS]


def text_of(url: str, timeout: float = HTTP_TIMEOUT_S) -> str:
    """A URL's body ("" when it does not answer 200)."""
    try:
        reply = httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return ""
    return reply.text if reply.status_code == 200 else ""


def workers_seen(endpoint: str) -> Counter:
    """Worker instances the frontend knows, per Dynamo component (prefill, backend=decode/agg)."""
    return Counter(instance.get("component") for instance in serving(frontend_instances(endpoint) or []))


def model_listed(endpoint: str, model: str, timeout: float = HTTP_TIMEOUT_S) -> bool:
    try:
        listed = httpx.get(f"{endpoint}/v1/models", timeout=timeout).json().get("data", [])
    except (httpx.HTTPError, ValueError):
        return False
    return any(entry.get("id") == model for entry in listed)


def chat_completion(
    endpoint: str,
    model: str,
    prompt: str = "Say hello.",
    max_tokens: int = 16,
    timeout: float = 30.0,
    targets: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One real completion through the frontend; raises httpx.HTTPError when it does not answer 200.
    `targets`: SLA targets for Dynamo's global router (`ttft_target`, `itl_target` in ms)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": False,
    }
    if targets:  # only chat completions carry them to the global router (Dynamo 1.6.1)
        body["nvext"] = {"router": targets}
    response = httpx.post(f"{endpoint}/v1/chat/completions", json=body, timeout=timeout)
    response.raise_for_status()
    return response.json()


def canary_completion(endpoint: str, model: str, targets: dict[str, float] | None = None) -> dict[str, Any] | None:
    """The canary: a completion that returns 200 with at least one generated token (else None)."""
    try:
        response = chat_completion(endpoint, model, timeout=10.0, targets=targets)
    except (httpx.HTTPError, ValueError):
        return None
    usage = response.get("usage") if isinstance(response, dict) else None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return response if isinstance(tokens, int) and tokens > 0 else None
