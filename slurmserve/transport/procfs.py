"""Processes on this machine, through /proc: is a PID alive (and still the one we started), end a
process group we started (never by name), and the records Slurm tasks write of themselves."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from ..waiting import wait_until

# Fields of /proc/PID/stat after the command name, counted from 0 (stat(5) numbers them from 3).
STATE, PGID, START_TIME = 0, 2, 19
GONE_STATES = ("Z", "X")  # a zombie is dead, though `kill -0` still says yes until it is reaped


def stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses); None when gone."""
    try:  # open() rather than pathlib: the supervisor reads thousands of these a second
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    """When the process started, in clock ticks since boot: tells a reused PID from the one we recorded."""
    fields = stat_fields(pid)
    return fields[START_TIME] if fields else None


def pid_runs(pid: int) -> bool:
    """Some process runs with this PID, whichever it is (a lock file records its holder's PID alone)."""
    fields = stat_fields(pid)
    return fields is not None and fields[STATE] not in GONE_STATES


def pid_alive(pid: int, started: str | None) -> bool:
    """The process recorded runs: its PID, with its recorded start time (not a reused PID). A record
    without a start time (written after the process had ended) matches no process: it fails closed."""
    fields = stat_fields(pid) if started else None
    return fields is not None and fields[STATE] not in GONE_STATES and fields[START_TIME] == started


def read_pid_record(path: Path) -> tuple[int, str | None] | None:
    """A PID file's record (the PID, its start time); None when there is no whole record to act on."""
    try:
        with open(path, "rb") as record:
            words = record.read().decode(errors="replace").split()
    except OSError:  # not there (yet), or not ours to read
        return None
    if not words or not words[0].isdigit():
        return None  # not written whole yet (or damaged): no PID to act on
    return int(words[0]), (words[1] if len(words) > 1 and words[1].isdigit() else None)


def pid_file_alive(path: Path) -> bool | None:
    """Whether the process a PID file names runs (the same process: its start time matches); None when
    there is no whole PID file (yet)."""
    record = read_pid_record(path)
    return pid_alive(*record) if record else None


def group_is_ours(pgid: int, started: str | None) -> bool:
    """Whether process group `pgid` is still the one we started, whose leader started at `started`.
    Its leader runs with that start time; or the leader is gone but the group has members (while it has
    any, Linux gives no new process that PID, so no other group can have that id). Without a start time
    it never is: a PID that may have been reused is never signalled."""
    if not started:
        return False
    fields = stat_fields(pgid)
    if fields is not None and fields[STATE] not in GONE_STATES:
        return started == fields[START_TIME]
    return bool(live_groups({pgid}))


def pid_namespace() -> str | None:
    """This process's PID namespace ("pid:[4026531836]"): a PID means something only within it
    (two containers on one node share a hostname, not their PIDs)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def members_of(pgids: set[int]) -> dict[int, list[int]]:
    """The live (not zombie) PIDs of each of these process groups that has any, in one pass over /proc."""
    members: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        fields = stat_fields(entry.name) if entry.name.isdigit() else None
        if fields and fields[STATE] not in GONE_STATES and int(fields[PGID]) in pgids:
            members.setdefault(int(fields[PGID]), []).append(int(entry.name))
    return members


def live_groups(pgids: set[int]) -> set[int]:
    """Those of the process groups that still have a live (not zombie) member."""
    return set(members_of(pgids))


def group_members(pgid: int) -> list[int]:
    """PIDs (not zombies) whose process group is `pgid`: what is left of a process we started with setsid."""
    return members_of({pgid}).get(pgid, [])


def stop_groups(groups: list[tuple[int, str | None]], grace_s: float = 5.0) -> list[int]:
    """SIGTERM each of our process groups (pgid, its leader's start time), wait up to `grace_s`, then
    SIGKILL what is left; returns the groups that still have a live member. A group that is no longer
    ours (its PID reused by another process) is never signalled."""
    pgids = [pgid for pgid, started in groups if group_is_ours(pgid, started)]

    def signal_all(signum: int) -> None:
        for pgid in pgids:
            try:
                os.killpg(pgid, signum)
            except ProcessLookupError:
                pass

    def surviving_groups() -> list[int]:
        return sorted(live_groups(set(pgids)))

    signal_all(signal.SIGTERM)
    if not wait_until(lambda: not surviving_groups(), grace_s):
        signal_all(signal.SIGKILL)
        wait_until(lambda: not surviving_groups(), grace_s)
    return surviving_groups()


@dataclass(frozen=True)
class TaskRecord:
    """One task of a Slurm step, as it recorded itself before becoming the process."""

    host: str
    pid: int
    start_time: str  # /proc/PID/stat field 22: tells a reused PID from ours
    pid_namespace: str
    boot_id: str
    started_at: float  # wall clock, seconds since the epoch

    @classmethod
    def parse(cls, line: str) -> TaskRecord | None:
        """None for a line that is not (yet) a whole record: the task may be writing it right now."""
        words = line.split()
        if len(words) != 6:
            return None
        host, pid, start, namespace, boot, wall = words
        try:
            return cls(host, int(pid), start, namespace, boot, float(wall))
        except ValueError:
            return None

    def visible_here(self) -> bool:
        """Whether this machine can see the task's PID (same boot, same PID namespace)."""
        return boot_id() == self.boot_id and pid_namespace() == self.pid_namespace

    def running(self) -> bool:
        fields = stat_fields(self.pid)
        return fields is not None and fields[START_TIME] == self.start_time and fields[STATE] not in GONE_STATES


def task_records(path: Path) -> list[TaskRecord]:
    if not path.exists():
        return []
    return [record for line in path.read_text().splitlines() if (record := TaskRecord.parse(line))]
