"""The local backend's `alive`: processes watched by pidfd, and looked up in /proc where there is none."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from slurmserve.backends import local
from slurmserve.backends.local import LocalBackend
from slurmserve.transport.procfs import start_time


class Records:
    """What `alive` reads of a run: its processes' names and PID records."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[int, str | None] | None] = {}

    def process_names(self) -> list[str]:
        return list(self.records)

    def pid_record(self, name: str) -> tuple[int, str | None] | None:
        return self.records[name]


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def sleeper(sleepers: list[subprocess.Popen]) -> tuple[subprocess.Popen, tuple[int, str | None]]:
    process = subprocess.Popen(["sleep", "60"])
    sleepers.append(process)
    return process, (process.pid, start_time(process.pid))


@pytest.mark.parametrize("pidfds", [True, False])
def test_ended_restarted_and_reused_pids(
    sleepers: list[subprocess.Popen], monkeypatch: pytest.MonkeyPatch, pidfds: bool
) -> None:
    if not pidfds:
        monkeypatch.setattr(local, "pidfd_of", lambda pid: None)
    backend, run = LocalBackend(), Records()
    first, run.records["a"] = sleeper(sleepers)
    _, run.records["b"] = sleeper(sleepers)
    run.records["c"] = None  # not started yet
    run.records["d"] = (first.pid, "1")  # the PID, but another process's start time: reused
    assert backend.alive(run) == {"a": True, "b": True, "c": None, "d": False}
    assert backend.alive(run) == {"a": True, "b": True, "c": None, "d": False}
    first.kill()
    first.wait()
    assert backend.alive(run)["a"] is False
    _, run.records["a"] = sleeper(sleepers)  # restarted in place
    assert backend.alive(run)["a"] is True
    assert len(backend.exits.watched) == 2
