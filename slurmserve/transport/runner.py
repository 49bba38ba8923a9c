"""The one way slurmserve runs a command on a node: a `NodeRunner` per node (or node set), whatever
reaches it. `LocalRunner` is this machine, `SrunRunner` (transport/srun.py) a Slurm step, `SshRunner`
(transport/ssh.py) a host over SSH. Callers ask the backend for runners and never switch on how a node
is reached.

Every run is bounded by its timeout, and can be stopped early from another thread through a `Cancel`
(a failed side of a KV-path check stops the other side at once instead of leaving it to its timeout);
whatever a runner still runs here when this process exits is stopped too.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..private import private_opener, write_private
from ..waiting import Outcome, fan_out
from .procfs import start_time, stop_groups

TIMED_OUT = 124  # as timeout(1) says it
STOP_GRACE_S = 3.0  # after SIGTERM (srun cancels its step, which ends the command on the node), SIGKILL

Item = TypeVar("Item")
Runner = TypeVar("Runner", bound="NodeRunner")


@dataclass(frozen=True)
class Ran:
    """What a command came to: its exit status (TIMED_OUT when it ran past its timeout) and its output."""

    exited: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exited == 0


def timed_out(stdout: str, stderr: str, timeout: float) -> Ran:
    """A command stopped at its timeout: what it printed, and a line saying so."""
    return Ran(TIMED_OUT, stdout, stderr + f"\nno answer within {timeout:g} s", timed_out=True)


class Cancel:
    """Stops a run from another thread: `cancel()` ends what the runner started for it, where the runner
    can (a process here, an srun step); elsewhere the run's own timeout ends it."""

    def __init__(self) -> None:
        self._stop: Callable[[], None] | None = None
        self._cancelled = False
        self._lock = threading.Lock()

    def attach(self, stop: Callable[[], None]) -> None:
        with self._lock:
            self._stop = stop
            cancelled = self._cancelled
        if cancelled:  # cancelled before the run began: it ends at once
            stop()

    def detach(self) -> None:
        with self._lock:
            self._stop = None

    def cancel(self) -> None:
        with self._lock:
            self._cancelled, stop = True, self._stop
        if stop:
            stop()


@dataclass
class Detached:
    """A process started in a session (process group) of its own: its group id and its leader's start time
    (the record `stop_groups` and pids/NAME.pid take), and, on this machine, the process itself."""

    pgid: int
    started: str | None
    process: subprocess.Popen[bytes] | None = None

    @property
    def record(self) -> tuple[int, str | None]:
        return self.pgid, self.started

    def poll(self) -> int | None:
        """Its exit status once it ended; None while it runs (or where it is not a child of this process)."""
        return self.process.poll() if self.process else None

    def wait(self, timeout: float | None = None) -> int | None:
        """Its exit status, waiting at most `timeout` seconds; None if it still runs then."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self) -> None:
        """SIGTERM to the process, and wait for it to end."""
        if self.process:
            self.process.terminate()
            self.process.wait()

    def write_record(self, path: Path) -> None:
        """The group's record, "PID START-TIME" (the PID being its group), written privately at `path`."""
        write_private(path, f"{self.pgid} {self.started or ''}\n")


class NodeRunner(ABC):
    """Runs commands on one node (or, for a Slurm step, a set of nodes at once)."""

    @property
    @abstractmethod
    def where(self) -> str:
        """The node as messages name it ("host node1 (10.0.0.1)", "this machine")."""

    @abstractmethod
    def run(
        self, argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float, cancel: Cancel | None = None
    ) -> Ran:
        """Run argv (with `env` added to its environment) and wait for it, at most `timeout` seconds. A node
        that cannot be reached raises (OSError, the transport's own errors): see `check_connection`."""

    @abstractmethod
    def upload(self, files: dict[str, str]) -> None:
        """Write files (absolute path -> text) on the node, their folders made first, readable by the user only."""

    @abstractmethod
    def start_detached(self, argv: Sequence[str], *, log: str | Path, env: dict[str, str] | None = None) -> Detached:
        """Start argv in a session of its own, its output appended to `log`, and return at once."""

    @abstractmethod
    def check_connection(self, timeout: float) -> str | None:
        """None when the node answers within `timeout`; else one phrase on what is wrong, naming the node."""

    @abstractmethod
    def lines(self, argv: Sequence[str]) -> Iterator[str]:
        """The lines argv prints on the node, as they come (`logs --follow`)."""

    def why_failed(self, outcome: Outcome[Any], deadline_s: float) -> str | None:
        """None when the work given to this node (in a fan-out) finished; else a phrase naming the node."""
        if not outcome.finished:
            return f"{self.where}: no answer within {deadline_s:g} s"
        error = outcome.error
        return None if error is None else f"{self.where}: {type(error).__name__}: {error}"


def stop_process(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM its whole session (it was started in one of its own), SIGKILL after grace_s."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        process.send_signal(signum)


class LocalRunner(NodeRunner):
    """This machine: each command a child process in a session of its own."""

    # Every process a LocalRunner (or SrunRunner) waits on: stopped when this process exits.
    _running: set[subprocess.Popen] = set()
    _running_lock = threading.Lock()

    @property
    def where(self) -> str:
        return "this machine"

    def command(self, argv: Sequence[str], env: dict[str, str] | None) -> tuple[list[str], dict[str, str] | None]:
        """The argv and full environment that run argv with `env` added (a subclass wraps it in a launcher)."""
        return list(argv), {**os.environ, **env} if env else None

    def run(
        self, argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float, cancel: Cancel | None = None
    ) -> Ran:
        command, full_env = self.command(argv, env)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            start_new_session=True,
        )
        with self._tracked(process, cancel):
            try:
                out, err = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop_process(process)
                out, err = process.communicate()
                return timed_out(out, err, timeout)
        return Ran(process.returncode, out, err)

    def run_logged(self, argv: Sequence[str], *, env: dict[str, str] | None = None, log: Path, timeout: float) -> int:
        """argv in a session of its own, its output appended to `log`; its exit status (TIMED_OUT past
        `timeout`). Its whole group is stopped at the timeout, or when this process is interrupted (Ctrl-C,
        or a TERM made KeyboardInterrupt): in a session of its own, it would not hear the terminal's Ctrl-C."""
        process = self._spawn(argv, env, log)
        group = [(process.pid, start_time(process.pid))]
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_groups(group, grace_s=5.0)
            process.wait()
            return TIMED_OUT
        except BaseException:
            stop_groups(group, grace_s=5.0)
            raise

    def upload(self, files: dict[str, str]) -> None:
        for path, text in files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write_private(Path(path), text)

    def start_detached(
        self, argv: Sequence[str], *, log: str | Path, env: dict[str, str] | None = None, umask: int = 0o077
    ) -> Detached:
        """Under umask 077 unless told otherwise (-1: this process's): what it writes is the user's alone."""
        process = self._spawn(argv, env, log, umask)
        return Detached(process.pid, start_time(process.pid), process)

    def _spawn(
        self, argv: Sequence[str], env: dict[str, str] | None, log: str | Path, umask: int = -1
    ) -> subprocess.Popen[bytes]:
        """argv in a session of its own, no stdin, its output appended to `log` (made private)."""
        command, full_env = self.command(argv, env)
        with open(log, "a", opener=private_opener) as output:
            return subprocess.Popen(
                command,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=umask,
            )

    def check_connection(self, timeout: float) -> str | None:
        return None

    def lines(self, argv: Sequence[str]) -> Iterator[str]:
        command, full_env = self.command(argv, None)
        with subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, env=full_env, errors="replace"
        ) as process:
            assert process.stdout is not None
            try:
                yield from process.stdout
            finally:
                stop_process(process)

    @staticmethod
    @contextmanager
    def _tracked(process: subprocess.Popen, cancel: Cancel | None) -> Iterator[None]:
        """While a process runs: known to `cancel` and to the stop at exit."""
        with LocalRunner._running_lock:
            LocalRunner._running.add(process)
        if cancel:
            cancel.attach(lambda: stop_process(process))
        try:
            yield
        finally:
            if cancel:
                cancel.detach()
            with LocalRunner._running_lock:
                LocalRunner._running.discard(process)


@atexit.register
def _stop_all() -> None:
    """Nothing a runner started and waits on outlives this process."""
    with LocalRunner._running_lock:
        running = list(LocalRunner._running)
    for process in running:
        stop_process(process)


def fan_out_runs(
    runners: Mapping[str, Runner], work: Callable[[Runner], Item], deadline_s: float
) -> dict[str, Outcome[Item]]:
    """`work(runner)` for every node at once; node -> its Outcome after at most `deadline_s`."""
    return fan_out(list(runners), lambda node: work(runners[node]), deadline_s)


def unreachable(runners: Mapping[str, NodeRunner], outcomes: dict[str, Outcome[Item]], deadline_s: float) -> list[str]:
    """For each node that did not answer (in time): a phrase naming it and what went wrong."""
    return [
        reason
        for node, runner in runners.items()
        if (reason := runner.why_failed(outcomes[node], deadline_s)) is not None
    ]
