"""The one SSH transport every part of slurmserve uses (backend, probe verb, KV preflight): fabric
connections with bounded connect times, reused per host within a process, and per-host deadlines.

fabric bounds neither the connect nor the join of a fan-out: one hung host would stall everything.
So fan-outs go through `waiting.fan_out` (a deadline for all hosts together), and every connection
has its own connect, banner and authentication timeouts.
"""

from __future__ import annotations

import io
import os
import shlex
import socket
import stat
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import fabric
import invoke
import paramiko
from invoke.exceptions import CommandTimedOut

from ..waiting import Outcome, fan_out
from .runner import Cancel, Detached, NodeRunner, Ran, timed_out
from .words import with_env

CONNECT_TIMEOUT_S = 10.0
KNOWN_HOSTS = "~/.ssh/known_hosts"
COMMAND_DEADLINE_S = 60.0


class Reachable(Protocol):
    """What the transport needs of a host: a plan node or a probed host both have it."""

    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def ssh(self) -> object: ...


def _new_connection(node: Reachable) -> fabric.Connection:
    target = node.ssh
    user, port, identity, jump = (getattr(target, field, None) for field in ("user", "port", "identity_file", "jump"))
    connect_kwargs: dict[str, object] = {"banner_timeout": CONNECT_TIMEOUT_S, "auth_timeout": CONNECT_TIMEOUT_S}
    if identity:
        connect_kwargs |= {"key_filename": identity, "look_for_keys": False, "allow_agent": False}
    gateway = verified(fabric.Connection(jump, connect_timeout=CONNECT_TIMEOUT_S)) if jump else None
    return verified(
        fabric.Connection(
            node.address,
            user=user,
            port=port,
            connect_timeout=CONNECT_TIMEOUT_S,
            connect_kwargs=connect_kwargs,
            gateway=gateway,
        )
    )


def verified(connection: fabric.Connection) -> fabric.Connection:
    """Host keys checked as ssh checks them: against ~/.ssh/known_hosts and the UserKnownHostsFile that
    ~/.ssh/config names for the host. An unknown key is refused unless the config's StrictHostKeyChecking
    says no (or accept-new); a changed key is refused always (paramiko raises BadHostKeyException)."""
    client = connection.client
    files = [KNOWN_HOSTS, *str(connection.ssh_config.get("userknownhostsfile", "")).split()]
    for name in files:
        path = os.path.expanduser(name)
        if os.path.isfile(path):
            client.load_host_keys(path)
    strict = str(connection.ssh_config.get("stricthostkeychecking", "yes")).lower()
    accept_unknown = strict in ("no", "off", "accept-new")
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy() if accept_unknown else paramiko.RejectPolicy())
    return connection


class _Pool:
    """Open connections by host, reused by every command of this process (a supervisor asks each
    host twice a second); a connection that failed is dropped and made anew on the next command."""

    def __init__(self) -> None:
        self._connections: dict[tuple[str, str, str], fabric.Connection] = {}
        self._lock = threading.Lock()

    def get(self, node: Reachable) -> fabric.Connection:
        key = (node.name, node.address, repr(node.ssh))
        with self._lock:
            connection = self._connections.get(key)
            if connection is None or not connection.is_connected:
                connection = self._connections[key] = _new_connection(node)
        return connection

    def drop(self, node: Reachable) -> None:
        with self._lock:
            connection = self._connections.pop((node.name, node.address, repr(node.ssh)), None)
        if connection is not None:
            connection.close()


_POOL = _Pool()


def remote(node: Reachable, command: str, timeout: float = COMMAND_DEADLINE_S) -> invoke.Result:
    """Run a command on a node; its exit status is in the result (no exception for a non-zero one).
    No pty (background processes must not hang on the session) and no stdin: invoke feeds a
    non-terminal stdin one character per 10 ms."""
    try:
        return _POOL.get(node).run(command, hide=True, warn=True, pty=False, timeout=timeout, in_stream=False)
    except (OSError, paramiko.SSHException, EOFError):
        _POOL.drop(node)
        raise


def remote_lines(node: Reachable, command: str) -> Iterator[str]:
    """The lines a command prints on a node, as they come (for `logs --follow`)."""
    connection = _POOL.get(node)
    connection.open()
    _stdin, stdout, _stderr = connection.client.exec_command(command)
    yield from stdout


def upload(node: Reachable, files: dict[str, str]) -> None:
    """Write files (absolute path -> text) on a node over SFTP, making their folders first."""
    folders = sorted({str(Path(path).parent) for path in files})
    connection = _POOL.get(node)
    connection.run("mkdir -p " + " ".join(map(shlex.quote, folders)), hide=True, pty=False, in_stream=False)
    for path, text in files.items():
        connection.put(io.BytesIO(text.encode()), path)


def download(node: Reachable, folder: str, into: Path) -> None:
    """A node's folder (files and subfolders) copied into a local one, over SFTP."""
    sftp = _POOL.get(node).sftp()

    def copy(remote_folder: str, local_folder: Path) -> None:
        local_folder.mkdir(parents=True, exist_ok=True)
        for entry in sftp.listdir_attr(remote_folder):
            source = f"{remote_folder}/{entry.filename}"
            if stat.S_ISDIR(entry.st_mode or 0):
                copy(source, local_folder / entry.filename)
            else:
                sftp.get(source, str(local_folder / entry.filename))

    copy(folder, into)


def why_unreachable(node: Reachable, outcome: Outcome, deadline_s: float) -> str | None:
    """None when the host answered; else one phrase on what went wrong, naming the host."""
    where = f"host {node.name} ({node.address})"
    if not outcome.finished:
        return f"{where}: no answer within {deadline_s:g} s"
    error = outcome.error
    if error is None:
        return None
    if isinstance(error, paramiko.AuthenticationException):
        return f"{where}: SSH authentication failed (wrong key or user?)"
    if isinstance(error, paramiko.BadHostKeyException):
        return (
            f"{where}: its SSH host key has changed (it is not the one known_hosts holds for it). If the change "
            f"is expected, remove the old key with `ssh-keygen -R {node.address}` and connect once with ssh"
        )
    if isinstance(error, paramiko.SSHException) and "known_hosts" in str(error):
        return (
            f"{where}: its SSH host key is unknown (not in {KNOWN_HOSTS} nor a UserKnownHostsFile of ~/.ssh/config); "
            f"accept it by connecting once with `ssh {node.address}`"
        )
    if isinstance(error, (socket.timeout, TimeoutError)):
        return f"{where}: unreachable (connection timed out)"
    if isinstance(error, (OSError, paramiko.SSHException)):
        return f"{where}: unreachable ({error})"
    return f"{where}: {type(error).__name__}: {error}"


class SshRunner(NodeRunner):
    """A host over SSH, through this process's pool of connections (the hosts file's user, port, key and
    jump host; host keys checked as ssh checks them). A run that is cancelled goes on until its own timeout
    (the KV-path check runs each side under `timeout` on the node)."""

    def __init__(self, node: Reachable):
        self.node = node

    @property
    def where(self) -> str:
        return f"host {self.node.name} ({self.node.address})"

    def run(
        self, argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float, cancel: Cancel | None = None
    ) -> Ran:
        return self.shell(shlex.join(with_env(argv, env)), timeout=timeout)

    def shell(self, command: str, *, timeout: float = COMMAND_DEADLINE_S) -> Ran:
        """A shell command line on the host (redirections, `&&`): for what one argv cannot say."""
        try:
            result = remote(self.node, command, timeout=timeout)
        except CommandTimedOut as late:
            return timed_out(late.result.stdout, late.result.stderr, timeout)
        return Ran(int(result.exited), result.stdout, result.stderr)

    def upload(self, files: dict[str, str]) -> None:
        upload(self.node, files)

    def start_detached(self, argv: Sequence[str], *, log: str | Path, env: dict[str, str] | None = None) -> Detached:
        """In a session of its own on the host (setsid: it outlives the SSH session); its group and start
        time as the host's /proc tells them."""
        folder, into = shlex.quote(str(Path(log).parent)), shlex.quote(str(log))
        start = f"mkdir -p {folder} && {{ setsid {shlex.join(with_env(argv, env))} </dev/null >>{into} 2>&1 & }}"
        ran = self.shell(f'{start}; echo "$!" "$(cut -d" " -f22 /proc/$!/stat 2>/dev/null)"')
        pgid, _, started = ran.stdout.strip().partition(" ")
        if not ran.ok or not pgid.isdigit():
            raise OSError(f"{self.where}: could not start {argv[0]}: {' '.join(ran.stderr.split())}")
        return Detached(int(pgid), started or None)

    def check_connection(self, timeout: float) -> str | None:
        outcome = fan_out([self.node.name], lambda _: _POOL.get(self.node).open(), timeout)[self.node.name]
        return self.why_failed(outcome, timeout)

    def why_failed(self, outcome: Outcome[Any], deadline_s: float) -> str | None:
        return why_unreachable(self.node, outcome, deadline_s)

    def lines(self, argv: Sequence[str]) -> Iterator[str]:
        return remote_lines(self.node, shlex.join(argv))

    def download(self, folder: str, into: Path) -> None:
        """The host's folder copied into a local one (what a client run there wrote)."""
        download(self.node, folder, into)
