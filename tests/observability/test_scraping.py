"""The scraper of live metrics, fast parts: expositions cut down to the families live figures read (on
real Dynamo 1.6.1 captures, the benchmark's data), workers scraped in rounds of bounded size, each
worker's figures from its own readings, the summary file the supervisor reads, and a scrape of local
endpoints serving the captures."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from slurmserve.observability.live import (
    FRONTEND_FAMILIES,
    WORKER_FAMILIES,
    LiveFigures,
    WorkerReading,
    frontend_reading,
    worker_reading,
)
from slurmserve.observability.metrics import only_families, parsed
from slurmserve.observability.scraping import WORKERS_PER_S, LiveFile, LiveScraper, Rounds, save_live

from ..conftest import plan_of

CAPTURES = Path(__file__).resolve().parents[2] / "benchmarks" / "data"
FRONTEND = (CAPTURES / "dynamo-1.6.1-frontend-metrics.txt").read_text()
WORKERS = [(CAPTURES / f"dynamo-1.6.1-mocker-{role}-metrics.txt").read_text() for role in ("prefill", "decode")]


def kept(text: str, prefixes: tuple[str, ...]) -> list[tuple]:
    return [(s.name, s.labels, s.value) for s in parsed(text) if s.name.startswith(prefixes)]


@pytest.mark.parametrize("text", WORKERS, ids=["prefill", "decode"])
def test_a_workers_exposition_cut_to_the_families_read_gives_the_same_samples_and_reading(text):
    cut = only_families(text, WORKER_FAMILIES)
    assert kept(cut, WORKER_FAMILIES) == kept(text, WORKER_FAMILIES) != []
    assert worker_reading(parsed(cut)) == worker_reading(parsed(text))
    assert worker_reading(parsed(text)).requests > 0  # the capture was taken after requests were served
    assert len(cut.splitlines()) * 10 < len(text.splitlines())  # what the parser is handed: a few lines


def test_the_frontends_exposition_cut_to_the_families_read_gives_the_same_reading():
    cut = only_families(FRONTEND, FRONTEND_FAMILIES)
    assert kept(cut, FRONTEND_FAMILIES) == kept(FRONTEND, FRONTEND_FAMILIES)
    reading = frontend_reading(parsed(cut))
    assert reading == frontend_reading(parsed(FRONTEND))
    assert reading.requests > 0 and reading.output_tokens > 0 and reading.ttft and reading.itl
    assert len(cut.splitlines()) * 4 < len(FRONTEND.splitlines())


def scraped_in(rounds: Rounds, seconds: int) -> dict[str, list[float]]:
    """When each worker was scraped, stepping once a second as the scraper does."""
    times: dict[str, list[float]] = {}
    for now in range(seconds):
        names = rounds.due(float(now), WORKERS_PER_S)
        assert len(names) <= WORKERS_PER_S
        rounds.scraped(names, float(now))
        for name in names:
            times.setdefault(name, []).append(float(now))
    return times


def test_a_small_deployments_workers_are_each_scraped_every_interval():
    times = scraped_in(Rounds([f"w-{i}" for i in range(40)], 5.0, 0.0), 21)
    assert all(at == [0.0, 5.0, 10.0, 15.0, 20.0] for at in times.values()) and len(times) == 40


def test_at_scale_workers_are_scraped_in_rounds_each_in_turn():
    count = 4096
    times = scraped_in(Rounds([f"w-{i}" for i in range(count)], 5.0, 0.0), 100)
    assert len(times) == count  # every worker came round
    full_round = count / WORKERS_PER_S
    gaps = [b - a for at in times.values() for a, b in itertools.pairwise(at)]
    assert gaps and all(full_round - 1 <= gap <= full_round + 1 for gap in gaps)


def test_a_worker_read_less_often_than_the_frontend_has_its_rate_from_its_own_readings():
    figures = LiveFigures()
    front = frontend_reading(parsed(FRONTEND))
    figures.worker_read("decode-0", 100.0, WorkerReading(requests=10, kv_cache_usage=0.5))
    figures.frontend_read(100.0, front)
    figures.frontend_read(105.0, front)
    figures.worker_read("decode-0", 140.0, WorkerReading(requests=90, kv_cache_usage=0.25))
    live = figures.frontend_read(140.0, front)
    assert live is not None and live.window_s == 40.0 and live.requests_per_s == 0.0
    assert live.workers["decode-0"].requests_per_s == 2.0  # 80 requests in its own 40 s
    assert live.workers["decode-0"].kv_cache_usage == 0.25
    figures.worker_read("decode-0", 145.0, None)  # it did not answer: no figures until it has two readings
    later = figures.frontend_read(145.0, front)
    assert later is not None and later.workers == {} and len(later.trend) == 3


def test_the_supervisor_reads_the_scrapers_summary_file_and_keeps_the_last_good_one(tmp_path):
    live = LiveFile(tmp_path)
    assert live.read() is None  # no scrape yet
    figures = LiveFigures()
    front = frontend_reading(parsed(FRONTEND))
    figures.frontend_read(1.0, front)
    summary = figures.frontend_read(6.0, front)
    assert summary is not None
    save_live(tmp_path, summary)
    assert live.read() == summary
    assert (tmp_path / "metrics" / "live.json").stat().st_mode & 0o777 == 0o600
    (tmp_path / "metrics" / "live.json").write_text("{torn")
    assert live.read() == summary


@pytest.fixture
def endpoints() -> Iterator[str]:
    """A frontend's and a worker's /metrics (the captures) on one local HTTP/1.1 server."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # kept-alive connections, as Dynamo's

        def do_GET(self) -> None:
            body = (FRONTEND if self.path == "/frontend/metrics" else WORKERS[1]).encode()
            self.send_response(200 if self.path != "/gone/metrics" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_scraper_summarizes_what_the_endpoints_serve(endpoints):
    scraper = LiveScraper(plan_of("mocker-disagg", "local.yaml"), 0.0)
    assert sorted(scraper.workers) == ["decode-0", "prefill-0"]
    scraper.frontend = f"{endpoints}/frontend/metrics"
    scraper.workers = {"decode-0": f"{endpoints}/decode/metrics", "prefill-0": f"{endpoints}/gone/metrics"}
    assert not scraper.step(0.0)  # one reading: no window yet
    assert not scraper.step(1.0)  # the frontend answered: next due an interval later
    assert scraper.step(5.0)
    live = scraper.latest
    assert live is not None and live.requests_per_s == 0.0 and live.in_flight == 0.0
    assert list(live.workers) == ["decode-0"]  # prefill-0's endpoint answers 404: no figures
