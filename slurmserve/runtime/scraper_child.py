"""The supervisor's scraper of live metrics as its child process (`python -m slurmserve.node.scraper`):
at thousands of workers, their /metrics would take the tick's interpreter time. Started as the run's
other helpers are (pids/scraper.pid, logs/scraper.log); it ends with the supervisor (it watches its
parent), and is stopped by it when the supervisor stops."""

from __future__ import annotations

import sys

from ..backends.base import start_detached
from ..observability.scraping import LiveFile
from ..planning.plan import Plan
from ..runs import LiveMetrics, RunDir
from ..transport.runner import Detached


class ScraperChild:
    def __init__(self, run: RunDir, plan: Plan):
        self.run, self.plan = run, plan
        self.live = LiveFile(run.path)
        self.process: Detached | None = None

    def start(self) -> None:
        """Started when the plan scrapes at all (observability.scrape_interval_s > 0)."""
        if self.plan.scrape_interval_s > 0:
            argv = [sys.executable, "-m", "slurmserve.node.scraper", str(self.run.path)]
            self.process = start_detached(self.run, "scraper", argv)

    def latest(self) -> LiveMetrics | None:
        return self.live.read()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
