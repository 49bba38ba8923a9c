"""Many readiness URLs probed at once, within a time budget: what the supervisor asks every tick.

A pool of threads with a blocking HTTP client costs a thread per probe in flight, and a hung endpoint
holds its thread for the whole timeout: at a few hundred processes "twice a second" became seconds.
Here one asyncio loop on a thread of its own keeps one connection per endpoint alive (h11 speaks
HTTP/1.1 on it), sends every probe at once, and takes what answered within the budget: an endpoint
that has not answered by then counts as not answering this time, and its connection is dropped.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit

import h11

Endpoint = tuple[str, int]


READ_SIZE = 65536
# Connections made at once, at most: thousands started together starve the loop, and each one's connect
# timeout runs out before its turn (at 4,096 endpoints none was ever made).
CONNECTING_AT_ONCE = 256


class _Connection:
    """One kept-alive HTTP/1.1 connection to an endpoint."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host
        self.http = h11.Connection(our_role=h11.CLIENT)
        self.reusable = True

    async def status_of(self, target: str) -> int:
        request = h11.Request(method="GET", target=target, headers=[("Host", self.host), ("Connection", "keep-alive")])
        self.writer.write(self.http.send(request) + self.http.send(h11.EndOfMessage()))
        status = 0
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                data = await self.reader.read(READ_SIZE)
                self.http.receive_data(data)  # b"" tells h11 the peer closed
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed by the endpoint")
        try:
            self.http.start_next_cycle()
        except h11.ProtocolError:  # the endpoint closes the connection after each answer
            self.reusable = False
        return status

    def close(self) -> None:
        self.writer.close()


class Prober:
    def __init__(self, connect_timeout_s: float = 1.0):
        self.connect_timeout_s = connect_timeout_s
        self.connections: dict[Endpoint, _Connection] = {}
        self.connecting: dict[Endpoint, asyncio.Future[_Connection]] = {}
        self.connect_slots: asyncio.Semaphore | None = None  # made on the loop's thread
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="prober", daemon=True).start()

    def probe(self, urls: Iterable[str], budget_s: float) -> dict[str, bool]:
        """url -> answered 200 within `budget_s` (all of them probed at once)."""
        future = asyncio.run_coroutine_threadsafe(self._probe_all(set(urls), budget_s), self.loop)
        return future.result()

    async def _probe_all(self, urls: set[str], budget_s: float) -> dict[str, bool]:
        tasks = {url: asyncio.ensure_future(self._probe(url)) for url in urls}
        if tasks:
            await asyncio.wait(tasks.values(), timeout=budget_s)
        answers = {}
        for url, task in tasks.items():
            if not task.done():
                task.cancel()  # its connection is dropped as the task unwinds
            answers[url] = task.done() and not task.cancelled() and task.exception() is None and task.result()
        return answers

    async def _probe(self, url: str) -> bool:
        parts = urlsplit(url)
        endpoint = (parts.hostname or "", parts.port or 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection = self.connections.get(endpoint)
            if connection is None:
                connection = await asyncio.shield(self._connecting(endpoint))
            status = await connection.status_of(target)
            if not connection.reusable:
                self._drop(endpoint)
            return status == 200
        except (OSError, ConnectionError, asyncio.TimeoutError, h11.ProtocolError):
            self._drop(endpoint)
            return False
        except asyncio.CancelledError:  # over the budget: the connection is mid-exchange, start afresh
            self._drop(endpoint)
            raise

    def _connecting(self, endpoint: Endpoint) -> asyncio.Future[_Connection]:
        """The connection being made to an endpoint, shared by the probes that wait for it. A probe past
        its budget leaves it going on (shielded): the next tick finds it made, not started again."""
        if endpoint not in self.connecting:
            made = self.connecting[endpoint] = asyncio.ensure_future(self._connect(endpoint))
            made.add_done_callback(lambda done: self._connected(endpoint, done))
        return self.connecting[endpoint]

    def _connected(self, endpoint: Endpoint, done: asyncio.Future[_Connection]) -> None:
        self.connecting.pop(endpoint, None)
        if not done.cancelled():
            done.exception()  # taken: a failed connect is its waiting probes' to count (asyncio logs it else)

    async def _connect(self, endpoint: Endpoint) -> _Connection:
        self.connect_slots = self.connect_slots or asyncio.Semaphore(CONNECTING_AT_ONCE)
        async with self.connect_slots:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*endpoint), self.connect_timeout_s)
        connection = self.connections[endpoint] = _Connection(reader, writer, f"{endpoint[0]}:{endpoint[1]}")
        return connection

    def _drop(self, endpoint: Endpoint) -> None:
        connection = self.connections.pop(endpoint, None)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        for endpoint in list(self.connections):
            self.loop.call_soon_threadsafe(self._drop, endpoint)
        self.loop.call_soon_threadsafe(self.loop.stop)
