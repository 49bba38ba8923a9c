"""The supervisor's scraper of live metrics: a process of its own (`python -m slurmserve.node.scraper
RUN_DIR`, the supervisor's child), so that reading thousands of /metrics never takes the supervisor's
tick's interpreter time. Its summary goes to metrics/live.json in the run directory, written whole; the
supervisor reads it when it writes state.json.

Scraping is bounded: the frontend every plan.scrape_interval_s (each second until it first answers);
up to WORKERS_PER_S workers, every worker with it, in the same window, as the supervisor's thread always
did; more, in rounds of at most WORKERS_PER_S a second, so that each is read about every
max(interval, N / WORKERS_PER_S) seconds: the work per second stays the same however large the
deployment. Each worker's figures then cover its own last readings (a span of its own, up to a minute
and one round: the rate is right, the figure may be a round older than the frontend's)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.samples import Sample

from ..planning.plan import Plan
from ..private import make_private_dir, write_private
from ..runs import LiveMetrics
from ..runs.layout import RunPaths
from .live import FRONTEND_FAMILIES, WORKER_FAMILIES, LiveFigures, frontend_reading, worker_reading
from .metrics import only_families, parsed
from .scrape_client import MetricsClient
from .targets import metrics_url

SLICE_S = 1.0  # the scraper's beat: what is due is scraped once a second
# Workers scraped a second, at most. Measured (benchmarks/supervisor_scale.py, a Dynamo mock worker's
# exposition): a worker's scrape, fetched and parsed, costs the scraper about 0.4 ms of CPU, so this holds
# it near 0.04 of a core at any size, and a worker of 4,096 is read every 41 s.
WORKERS_PER_S = 100
SCRAPE_DEADLINE_S = 3.0


class Rounds:
    """Which workers are due: each at most every `interval`, at most `most` a slice, the longest waiting
    first, so that every worker comes round in turn."""

    def __init__(self, names: list[str], interval: float, now: float):
        self.interval = interval
        self.due_at = dict.fromkeys(names, now)

    def due(self, now: float, most: int) -> list[str]:
        waiting = sorted((at, name) for name, at in self.due_at.items() if at <= now)
        return [name for _, name in waiting[:most]]

    def scraped(self, names: list[str], now: float) -> None:
        for name in names:
            self.due_at[name] = now + self.interval


class LiveScraper:
    """One deployment's scrapes, a slice at a time (`step`); `latest` is the last summary."""

    def __init__(self, plan: Plan, now: float):
        self.every_s = plan.scrape_interval_s
        self.frontend = f"{plan.endpoint}/metrics"
        self.workers = {p.name: url for p in plan.processes if p.is_worker and (url := metrics_url(plan, p))}
        self.rounds = Rounds(sorted(self.workers), self.every_s, now)
        self.frontend_due = now
        self.figures = LiveFigures()
        self.latest: LiveMetrics | None = None
        self.client = MetricsClient()

    def step(self, now: float) -> bool:
        """Scrape what is due; True when there is a new summary in `latest`."""
        front = now >= self.frontend_due
        names = self.due_workers(now, front)
        bodies = self.client.fetch([self.workers[name] for name in names] + [self.frontend] * front, SCRAPE_DEADLINE_S)
        at = time.time()
        got = samples_of(bodies[self.frontend], FRONTEND_FAMILIES) if front else None
        if got is not None or not self.with_frontend():  # read with the frontend: kept when it answered
            for name in names:
                found = samples_of(bodies[self.workers[name]], WORKER_FAMILIES)
                self.figures.worker_read(name, at, worker_reading(found) if found is not None else None)
        if not front:
            return False
        # Until the frontend first answers, it is asked each second: a window starts as soon as it can.
        self.frontend_due = now + (self.every_s if got is not None or self.figures.frontend.readings else SLICE_S)
        summary = self.figures.frontend_read(at, frontend_reading(got)) if got is not None else None
        if summary is not None:
            self.latest = summary
        return summary is not None

    def with_frontend(self) -> bool:
        """Whether every worker is read with the frontend (few enough for one slice), in its window."""
        return len(self.workers) <= int(WORKERS_PER_S * SLICE_S)

    def due_workers(self, now: float, front: bool) -> list[str]:
        """A slice's workers. As many as one slice takes: all of them with the frontend, in the same window
        (the figures each worker's rate covers are the frontend's, as `status` always showed them).
        More: in rounds."""
        if self.with_frontend():
            return sorted(self.workers) if front else []
        names = self.rounds.due(now, int(WORKERS_PER_S * SLICE_S))
        self.rounds.scraped(names, now)
        return names


def samples_of(body: bytes | None, families: tuple[str, ...]) -> list[Sample] | None:
    """The samples of the families live figures read, from a /metrics body (None: there was none)."""
    return None if body is None else parsed(only_families(body.decode(errors="replace"), families))


def live_path(run_dir: Path) -> Path:
    return RunPaths(run_dir).live_metrics


def save_live(run_dir: Path, live: LiveMetrics) -> None:
    make_private_dir(live_path(run_dir).parent)
    write_private(live_path(run_dir), live.model_dump_json() + "\n")


def scrape_while(plan: Plan, run_dir: Path, wanted: Callable[[], bool]) -> None:
    """Scrape the deployment, a slice each SLICE_S, while `wanted()` (the supervisor still runs)."""
    scraper = LiveScraper(plan, time.monotonic())
    while wanted():
        started = time.monotonic()
        if scraper.step(started) and scraper.latest is not None:
            save_live(run_dir, scraper.latest)
        time.sleep(max(0.0, SLICE_S - (time.monotonic() - started)))


class LiveFile:
    """The supervisor's side: the scraper's latest summary, read again only when the file changed (one
    stat a state write)."""

    def __init__(self, run_dir: Path):
        self.path = live_path(run_dir)
        self.stamp: tuple[int, int] | None = None
        self.latest: LiveMetrics | None = None

    def read(self) -> LiveMetrics | None:
        try:
            status = self.path.stat()
        except OSError:  # none yet
            return self.latest
        stamp = (status.st_mtime_ns, status.st_ino)
        if stamp != self.stamp:
            try:
                self.latest = LiveMetrics.model_validate_json(self.path.read_bytes())
                self.stamp = stamp
            except (OSError, ValueError):  # replaced between the stat and the read: the next write reads it
                pass
        return self.latest
