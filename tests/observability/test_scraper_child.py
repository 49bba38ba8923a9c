"""The scraper of live metrics as the supervisor's child, on a real local deployment: `status` carries
live figures through its summary file, and it ends with the supervisor, however the supervisor ends."""

from __future__ import annotations

import os
import signal

import pytest

from slurmserve.runs import open_run
from slurmserve.transport.procfs import pid_runs, read_pid_record, stat_fields

from ..helpers import slurmserve, status_of, wait_until

pytestmark = pytest.mark.slow


def parent_of(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_scraper_child_feeds_status_and_ends_with_the_supervisor(cancel_later, stop):
    run = f"scraper-{stop.name.lower()}"
    cancel_later(run)
    result = slurmserve("submit", "--recipe", "mocker-agg", "--name", run, "--timeout", "120")
    assert result.returncode == 0, result.stdout + result.stderr
    assert wait_until(lambda: status_of(run).get("metrics") is not None, 30)  # two frontend scrapes: 5 s apart
    directory = open_run(run).path
    assert (directory / "metrics" / "live.json").exists()
    supervisor, scraper = (
        read_pid_record(directory / "pids" / "supervisor.pid"),
        read_pid_record(directory / "pids" / "scraper.pid"),
    )
    assert supervisor and scraper and pid_runs(scraper[0]) and parent_of(scraper[0]) == supervisor[0]
    os.kill(supervisor[0], stop)
    assert wait_until(lambda: not pid_runs(scraper[0]), 5), f"the scraper outlived a {stop.name}ed supervisor"
    assert slurmserve("cancel", run).returncode == 0
