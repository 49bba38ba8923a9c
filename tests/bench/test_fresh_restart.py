"""`bench --fresh-between-points`: a restart is confirmed by the supervisor's own record, whatever the
clocks of the supervisor's machine and the bench machine say (the supervisor may run on another node)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from slurmserve.bench import measure
from slurmserve.errors import UserError
from slurmserve.runs import ProcessIdentity, ProcessState, ProcessWatch, RunDir, SupervisorState, Verdict
from slurmserve.runs.events import Restarted

from ..conftest import local_run

SKEW = timedelta(hours=1)


def serving_run() -> RunDir:
    """A run whose supervisor says every process is ready (no process runs: only its records are read)."""
    run = local_run("mocker-disagg", "fresh")
    run.save_supervisor_state(
        SupervisorState(
            updated=time.time(),
            final=False,
            pid=1,
            host="elsewhere",
            identity=ProcessIdentity(pid=1, start_time="1", boot_id="another-node", pid_namespace=None),
            heartbeat=1,
            verdict=Verdict.READY,
            reason="serving",
            processes={p.name: ProcessWatch(state=ProcessState.READY, since=time.time()) for p in run.plan().processes},
        )
    )
    return run


def record_at(run: RunDir, moment: datetime, process: str) -> None:
    """A requested restart in events.jsonl, stamped by a supervisor whose clock reads `moment`."""
    event = Restarted(time=moment.isoformat(timespec="milliseconds"), process=process, requested=True)
    with open(run.path / "events.jsonl", "ab") as events:
        events.write(event.model_dump_json().encode() + b"\n")


def workers(run: RunDir) -> list[str]:
    return sorted(p.name for p in run.plan().processes if p.is_worker)


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(measure, "FRESH_TIMEOUT_S", 3.0)
    monkeypatch.setattr(measure, "canary_completion", lambda endpoint, model: {"usage": {"completion_tokens": 1}})


def test_a_restart_by_a_supervisor_whose_clock_is_behind_is_confirmed(quick):
    run = serving_run()
    stop = threading.Event()

    def supervisor_behind() -> None:  # answers each request, its clock an hour behind this machine's
        while not stop.is_set():
            for name in run.restart_requests():
                run.restart_done(name)
                record_at(run, datetime.now(timezone.utc) - SKEW, name)
            stop.wait(0.05)

    answering = threading.Thread(target=supervisor_behind, daemon=True)
    answering.start()
    try:
        measure.start_afresh(run)  # raises UserError when the restarts are not seen as done
    finally:
        stop.set()
        answering.join()


def test_restarts_recorded_before_the_request_do_not_confirm_it(quick, monkeypatch):
    """A supervisor whose clock is ahead: its restarts of the previous point look newer than the request."""
    monkeypatch.setattr(measure, "FRESH_TIMEOUT_S", 0.5)  # the old records are there at the first look
    run = serving_run()
    for name in workers(run):
        record_at(run, datetime.now(timezone.utc) + SKEW, name)
    with pytest.raises(UserError, match="did not serve again"):
        measure.start_afresh(run)  # nobody answers this request
