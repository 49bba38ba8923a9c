"""A lock for a filesystem without flock (Lustre without its flock mount option): exclusive creation
of a file naming its holder, a heartbeat, and takeover from a holder that is provably gone or silent."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ..transport.procfs import pid_namespace, pid_runs

log = logging.getLogger(__name__)

# A lock whose heartbeat stood still this long is presumed dead. Above NFS's attribute cache (60 s by
# default), so a live holder's heartbeat is always seen in time.
STALE_AFTER_S = 120.0
POLL_S = 0.5


class SharedLock:
    """A lock for a filesystem without flock: exclusive creation of a file naming its holder.

    The holder touches the file every `stale_after / 4` seconds. A waiter takes the lock over when the
    holder is provably gone (same host and PID namespace, PID dead), or when the file (inode, mtime,
    content) has not changed for `stale_after` seconds of the waiter's monotonic clock.
    """

    def __init__(self, path: Path, stale_after: float = STALE_AFTER_S):
        self.path, self.stale_after = path, stale_after
        self.nonce = uuid.uuid4().hex
        self.record = {
            "host": socket.gethostname(),
            "pidns": pid_namespace(),
            "pid": os.getpid(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "nonce": self.nonce,
        }
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @property
    def tag(self) -> str:
        """Names what this holder owns (its staging folder): host, PID namespace, PID, nonce."""
        namespace = "".join(ch for ch in str(self.record["pidns"]) if ch.isdigit()) or "0"
        return f"{self.record['host']}.{namespace}.{self.record['pid']}.{self.nonce}"

    def owner_gone(self, tag: str) -> bool:
        """Whether the holder a tag names is provably gone: on this host and PID namespace, PID not running."""
        parts = tag.rsplit(".", 3)
        if len(parts) != 4 or not parts[2].isdigit():
            return False
        mine = self.tag.rsplit(".", 3)
        return parts[:2] == mine[:2] and not pid_runs(int(parts[2]))

    def __enter__(self) -> SharedLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._acquire()
        self._heartbeat = threading.Thread(target=self._beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._heartbeat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self.holds():
            self.path.unlink(missing_ok=True)

    def _acquire(self) -> None:
        watched: tuple[tuple, float] | None = None  # (what the lock file looked like, since when)
        while not self._try_create():
            seen = self._look()
            if seen is None:
                continue  # released between our create and our look
            key, holder = seen
            if watched is None or watched[0] != key:
                if watched is None:
                    log.info("waiting for %s, which holds %s", _describe_holder(holder), self.path.name)
                watched = (key, time.monotonic())
            if self._holder_dead(holder):
                self._take_over(key, holder, "its process is gone")
                watched = None
            elif time.monotonic() - watched[1] >= self.stale_after:
                self._take_over(key, holder, f"its heartbeat stood still for {self.stale_after:g} s")
                watched = None
            else:
                time.sleep(min(POLL_S, self.stale_after / 4))

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(self.record, file)
        except BaseException:
            self.path.unlink()  # an empty lock (disk full) would hold everyone off for stale_after
            raise
        return True

    def _look(self) -> tuple[tuple, dict | None] | None:
        """(identity of the file's current state, its record if readable), or None if it is gone."""
        try:
            stat = os.stat(self.path)
            content = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(content)
        except ValueError:
            holder = None  # being written right now, or garbage: only the heartbeat rule applies
        return (stat.st_ino, stat.st_mtime_ns, content), holder

    def _holder_dead(self, holder: dict | None) -> bool:
        return (
            isinstance(holder, dict)
            and holder.get("host") == self.record["host"]
            and holder.get("pidns") == self.record["pidns"]
            and isinstance(holder.get("pid"), int)
            and not pid_runs(holder["pid"])
        )

    def _take_over(self, judged: tuple[object, ...], holder: dict[str, Any] | None, reason: str) -> None:
        """Remove a lock judged dead. One waiter at a time (an exclusive-create guard file), and only if
        the lock is still the very file judged: a waiter that judged an older lock must not remove the
        lock a new holder made meanwhile (that is how two stagers would come to fetch the same files)."""
        guard = self.path.with_name(f"{self.path.name}.takeover")
        try:
            os.close(os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:  # another waiter is at it; a guard left by one that died goes after a while
            try:
                if time.time() - guard.stat().st_mtime > self.stale_after:
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return
        try:
            seen = self._look()
            if seen is not None and seen[0] == judged:
                self.path.unlink(missing_ok=True)
                log.warning("took over %s from %s: %s", self.path.name, _describe_holder(holder), reason)
        finally:
            guard.unlink(missing_ok=True)

    def holds(self) -> bool:
        """Whether the lock file is still ours (a waiter may have taken it over while we were silent)."""
        try:
            return json.loads(self.path.read_text()).get("nonce") == self.nonce
        except (OSError, ValueError):
            return False

    def _beat(self) -> None:
        while not self._stop.wait(self.stale_after / 4):
            try:
                if self.holds():
                    os.utime(self.path)
            except OSError:
                pass  # a hiccup of the filesystem: the next beat tries again


def _describe_holder(holder: dict | None) -> str:
    if not isinstance(holder, dict):
        return "an unknown process"
    return f"PID {holder.get('pid')} on {holder.get('host')} (since {holder.get('time')})"
