"""Dynamo's Prometheus metrics, read with prometheus_client's parser of the exposition format."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ..planning.plan import Plan

SCRAPE_TIMEOUT_S = 2.0
WORKER_REQUESTS = "dynamo_component_requests_total"  # a worker's, by endpoint: `generate` counts requests


def samples(url: str, client: httpx.Client | None = None) -> list[Sample] | None:
    """Every sample a /metrics endpoint exposes now (None: it did not answer). A scraper that comes back
    passes its own client: its connections stay open, and a new client costs more than the scrape."""
    try:
        response = (client or httpx).get(url, timeout=SCRAPE_TIMEOUT_S)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return parsed(response.text)


def parsed(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def only_families(text: str, prefixes: tuple[str, ...]) -> str:
    """The sample lines of an exposition whose metric names start with one of `prefixes`, without its
    comments. A worker exposes hundreds of series and live figures read a handful: prometheus_client's
    parser costs per line, and a prefix test per line (in C) costs next to nothing. Each kept line is
    still a sample of its own name, untyped: the names and labels the parser gives are the same."""
    return "".join(line for line in text.splitlines(keepends=True) if line.startswith(prefixes))


def total(found: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    return sum(
        sample.value
        for sample in found
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


@dataclass(frozen=True)
class FrontendCounters:
    """What the frontend has counted for a model since it started: streamed requests that succeeded,
    output tokens, and unary (not streamed) requests that succeeded: the supervisor's canaries."""

    streamed_ok: float
    output_tokens: float
    unary_ok: float = 0.0

    def __sub__(self, earlier: FrontendCounters) -> FrontendCounters:
        return FrontendCounters(
            self.streamed_ok - earlier.streamed_ok,
            self.output_tokens - earlier.output_tokens,
            self.unary_ok - earlier.unary_ok,
        )


def frontend_counters(endpoint: str, model: str) -> FrontendCounters | None:
    found = samples(f"{endpoint}/metrics")
    if found is None:
        return None
    return FrontendCounters(
        streamed_ok=total(
            found, "dynamo_frontend_requests_total", model=model, request_type="stream", status="success"
        ),
        output_tokens=total(found, "dynamo_frontend_output_sequence_tokens_sum", model=model),
        unary_ok=total(found, "dynamo_frontend_requests_total", model=model, request_type="unary", status="success"),
    )


def requests_served(plan: Plan, role: str) -> dict[str, float]:
    """Each worker of `role`'s requests so far, by its own /metrics (its generate endpoint's
    dynamo_component_requests_total): where the router sent them."""
    return {
        worker.name: total(
            samples(f"http://{plan.host_node(worker).address}:{worker.ports['system']}/metrics") or [],
            WORKER_REQUESTS,
            dynamo_endpoint="generate",
        )
        for worker in plan.processes
        if worker.role == role
    }
