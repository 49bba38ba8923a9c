"""Local process bookkeeping: is a PID alive, end a process group we started (never by name)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from .health import wait_until


def pid_alive(pid: int) -> bool:
    """True while the process runs. Reads /proc, since `kill -0` also says yes to an unreaped zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return fields[0] not in ("Z", "X")


def pid_namespace() -> str | None:
    """This process's PID namespace ("pid:[4026531836]"): a PID means something only within it
    (two containers on one node share a hostname, not their PIDs)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def group_members(pgid: int) -> list[int]:
    """PIDs (not zombies) whose process group is `pgid`: what is left of a process we started with setsid."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def stop_groups(pgids: list[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM each process group, wait up to `grace_s`, then SIGKILL what is left; returns the groups
    that still have a live member."""
    def signal_all(signum: int) -> None:
        for pgid in pgids:
            try:
                os.killpg(pgid, signum)
            except ProcessLookupError:
                pass

    def surviving_groups() -> list[int]:
        return [pgid for pgid in pgids if group_members(pgid)]

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
    def parse(cls, line: str) -> TaskRecord:
        host, pid, start, namespace, boot, wall = line.split()
        return cls(host, int(pid), start, namespace, boot, float(wall))

    def visible_here(self) -> bool:
        """Whether this machine can see the task's PID (same boot, same PID namespace)."""
        return (Path("/proc/sys/kernel/random/boot_id").read_text().strip() == self.boot_id
                and pid_namespace() == self.pid_namespace)

    def running(self) -> bool:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        return fields[19] == self.start_time and fields[0] not in ("Z", "X")


def task_records(path: Path) -> list[TaskRecord]:
    return [TaskRecord.parse(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
