"""Many readiness URLs probed at once, within a time budget: what the supervisor asks every tick.

A pool of threads with a blocking HTTP client costs a thread per probe in flight, and a hung endpoint
holds its thread for the whole timeout: at a few hundred processes "twice a second" became seconds.
Here one asyncio loop on a thread of its own keeps one connection per endpoint alive, sends every probe
at once, and takes what answered within the budget: an endpoint that has not answered by then counts as
not answering this time (its answer, late, is read and counted for no one).

A task and an h11 exchange per probe cost about 90 us each, most of the tick at thousands of processes.
So each connection is an asyncio.Protocol: its request is bytes encoded once, and an answer is read as it
arrives by a parser of just what our processes' /health answers (an HTTP/1.1 status line, headers,
Content-Length). Anything else (chunked, read-until-close, 1xx, HTTP/1.0) is handed whole to h11.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

from .answers import Answer, answer_for

Endpoint = tuple[str, int]
Answered = Callable[[bool], None]  # told whether the endpoint answered 200

# Connections made at once, at most: thousands started together starve the loop, and each one's connect
# timeout runs out before its turn (at 4,096 endpoints none was ever made).
CONNECTING_AT_ONCE = 256
# Probes waiting on one connection, at most, when another is asked: the one late from the tick before is
# waited for; more means the endpoint hangs, and the connection is made again.
LATE_AT_MOST = 2
WAIT_SLACK_S = 5.0  # the caller's own limit beyond the budget: only a loop that is gone takes it


@dataclass(frozen=True)
class Target:
    """A readiness URL, parsed and its request encoded once."""

    endpoint: Endpoint
    host: str
    path: str
    request: bytes

    @classmethod
    def of(cls, url: str) -> Target:
        parts = urlsplit(url)
        endpoint = (parts.hostname or "", parts.port or 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = f"{endpoint[0]}:{endpoint[1]}"
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n".encode()
        return cls(endpoint, host, path, request)


class _Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection to an endpoint: its probes one after another (never pipelined),
    each told of its answer as the reply's last byte arrives."""

    def __init__(self, endpoint: Endpoint, on_lost: Callable[[_Connection], None]):
        self.endpoint, self.on_lost = endpoint, on_lost
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.queue: deque[tuple[Target, Answered]] = deque()  # the first one is in flight, the rest wait
        self.answer: Answer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def ask(self, target: Target, answered: Answered) -> None:
        self.queue.append((target, answered))
        if len(self.queue) == 1:
            self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.answer = None
        self.transport.write(self.queue[0][0].request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            self._read_answers()
        except (ValueError, h11.ProtocolError):  # not HTTP as we know it: this connection is done
            self.abort()

    def _read_answers(self) -> None:
        while self.queue:
            if self.answer is None:
                target = self.queue[0][0]
                self.answer = answer_for(self.buffer, target.host, target.path)
                if self.answer is None:
                    return  # the head is not all here yet
            status = self.answer.read(self.buffer)
            if status is None:
                return
            self._finish(status, self.answer.reusable)

    def _finish(self, status: int, reusable: bool) -> None:
        _, answered = self.queue.popleft()
        self.answer = None
        answered(status == 200)
        if not reusable:
            self.abort()
        elif self.queue:
            self._send()

    def eof_received(self) -> bool | None:
        if self.answer is not None and self.queue:
            try:  # a body that ends with the connection
                status = self.answer.closed(self.buffer)
            except (ValueError, h11.ProtocolError):
                status = None
            if status is not None:
                self._finish(status, reusable=False)
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost(self)
        waiting, self.queue = self.queue, deque()
        for _, answered in waiting:
            answered(False)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows, on the loop's next turn


@dataclass
class _Round:
    """One probe(): every URL's answer, done when all have answered or the budget is spent."""

    targets: dict[str, Target]
    done: concurrent.futures.Future[dict[str, bool]] = field(default_factory=concurrent.futures.Future)
    answers: dict[str, bool] = field(default_factory=dict)

    def answered(self, url: str) -> Answered:
        def take(ok: bool) -> None:
            if not self.done.done():
                self.answers[url] = ok
                if len(self.answers) == len(self.targets):
                    self.finish()

        return take

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result({url: self.answers.get(url, False) for url in self.targets})


@dataclass
class _Waiting:
    """A probe waiting for its endpoint's connection to be made."""

    url: str
    target: Target
    probing: _Round


class Prober:
    def __init__(self, connect_timeout_s: float = 1.0):
        self.connect_timeout_s = connect_timeout_s
        self.targets: dict[str, Target] = {}
        self.connections: dict[Endpoint, _Connection] = {}
        self.connecting: dict[Endpoint, list[_Waiting]] = {}
        self.connect_slots: asyncio.Semaphore | None = None  # made on the loop's thread
        self.connect_tasks: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="prober", daemon=True).start()

    def probe(self, urls: Iterable[str], budget_s: float) -> dict[str, bool]:
        """url -> answered 200 within `budget_s` (all of them probed at once)."""
        probing = _Round({url: self._target(url) for url in urls})
        self.loop.call_soon_threadsafe(self._start, probing, budget_s)
        return probing.done.result(timeout=budget_s + WAIT_SLACK_S)

    def _target(self, url: str) -> Target:
        target = self.targets.get(url)
        if target is None:
            target = self.targets[url] = Target.of(url)
        return target

    def _start(self, probing: _Round, budget_s: float) -> None:
        if not probing.targets:
            probing.finish()
            return
        timer = self.loop.call_later(budget_s, self._over_budget, probing)
        probing.done.add_done_callback(lambda _: timer.cancel())
        for url, target in probing.targets.items():
            self._ask(_Waiting(url, target, probing))

    def _ask(self, waiting: _Waiting) -> None:
        endpoint = waiting.target.endpoint
        connection = self.connections.get(endpoint)
        if connection is not None and connection.usable() and len(connection.queue) >= LATE_AT_MOST:
            connection.abort()  # still not done with the tick before last's probe: hung, start afresh
            connection = None
        if connection is not None and connection.usable():
            connection.ask(waiting.target, waiting.probing.answered(waiting.url))
        elif endpoint in self.connecting:
            self.connecting[endpoint].append(waiting)
        else:
            self.connecting[endpoint] = [waiting]
            task = self.loop.create_task(self._connect(endpoint))
            self.connect_tasks.add(task)
            task.add_done_callback(self.connect_tasks.discard)

    def _over_budget(self, probing: _Round) -> None:
        """What has not answered did not answer this time. Its connection is kept: the late answer is
        read when it comes (and counted for no one), the next probe sent after it. Dropping it instead
        made a slow moment (the endpoints busy with a scrape) a storm of reconnections the tick after."""
        probing.finish()

    async def _connect(self, endpoint: Endpoint) -> None:
        self.connect_slots = self.connect_slots or asyncio.Semaphore(CONNECTING_AT_ONCE)
        try:
            async with self.connect_slots:
                made = self.loop.create_connection(lambda: _Connection(endpoint, self._lost), *endpoint)
                _, connection = await asyncio.wait_for(made, self.connect_timeout_s)
        except (OSError, asyncio.TimeoutError):
            for waiting in self.connecting.pop(endpoint, []):
                waiting.probing.answered(waiting.url)(False)
            return
        self.connections[endpoint] = connection
        for waiting in self.connecting.pop(endpoint, []):
            if not waiting.probing.done.done():  # one past its budget is not sent: the connection waits idle
                self._ask(waiting)

    def _lost(self, connection: _Connection) -> None:
        if self.connections.get(connection.endpoint) is connection:
            del self.connections[connection.endpoint]

    def close(self) -> None:
        def close_all() -> None:
            for connection in list(self.connections.values()):
                connection.abort()
            self.loop.call_soon(self.loop.stop)

        self.loop.call_soon_threadsafe(close_all)
