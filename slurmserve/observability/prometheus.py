"""The in-job Prometheus (`observability.prometheus`): its configuration, and serving its saved data again
after the job (`metrics RUN --open`).

It scrapes the run's targets file (`prometheus/targets.json`, which the supervisor keeps, its own endpoint
included). Over SSH the supervisor runs on the launching machine, whose files the head host may not share:
there the configuration lists the plan's endpoints itself.
"""

from __future__ import annotations

import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import yaml

from ..planning.plan import PROMETHEUS_DATA, PROMETHEUS_READY_PATH, Plan
from ..runs.layout import TARGETS_FILE
from ..transport.http import wait_ready
from ..transport.runner import Detached, LocalRunner
from .targets import file_sd_targets

JOB = "slurmserve"
DEFAULT_INTERVAL_S = 5.0  # when the supervisor's own scraping is off
OPEN_READY_TIMEOUT_S = 60.0  # replaying a long run's write-ahead log takes a while


def scrape_interval(plan: Plan) -> str:
    return f"{plan.scrape_interval_s or DEFAULT_INTERVAL_S:g}s"


def job_config(plan: Plan, *, head_reads_run_dir: bool) -> str:
    """prometheus.yml for the run's own Prometheus: where the head node may not read the run directory
    (the targets file the supervisor keeps), the targets are written in it."""
    interval = scrape_interval(plan)
    job: dict[str, object] = {"job_name": JOB}
    if not head_reads_run_dir:
        job["static_configs"] = file_sd_targets(plan)
    else:
        job["file_sd_configs"] = [{"files": [f"{plan.run_dir}/{TARGETS_FILE}"], "refresh_interval": interval}]
    config = {"global": {"scrape_interval": interval, "evaluation_interval": interval}, "scrape_configs": [job]}
    return "# Written by slurmserve for this run's own Prometheus.\n" + yaml.safe_dump(config, sort_keys=False)


@dataclass
class OpenedData:
    """A Prometheus serving a finished run's saved data, on this machine, until `close`."""

    url: str
    process: Detached
    config_dir: tempfile.TemporaryDirectory[str]
    lock: TextIO | None = None  # held while it serves: one Prometheus at a time on a data folder

    def close(self) -> None:
        self.process.terminate()
        self.config_dir.cleanup()
        if self.lock:
            self.lock.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def open_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def open_saved(
    binary: str, run_dir: Path, log: Path, port: int | None = None, lock: TextIO | None = None
) -> OpenedData | None:
    """Start Prometheus on the run's data at 127.0.0.1 (on `port`, or a free one), scraping nothing; None
    if it did not become ready (its log says why). `lock`: held until it is closed."""
    port = port or free_port()
    config_dir = tempfile.TemporaryDirectory(prefix="slurmserve-prometheus-")
    config = Path(config_dir.name) / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": []}))
    url = open_url(port)
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={run_dir / PROMETHEUS_DATA}",
        "--storage.tsdb.retention.time=100y",  # never delete what it opens
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    process = LocalRunner().start_detached(argv, log=log, umask=-1)  # its data folder keeps the run's modes
    opened = OpenedData(url, process, config_dir, lock)
    if wait_ready(url + PROMETHEUS_READY_PATH, OPEN_READY_TIMEOUT_S, still_alive=lambda: process.poll() is None):
        return opened
    opened.close()
    return None
