"""The scraper's HTTP client: many /metrics bodies fetched at once, within a deadline, on kept-alive
connections (one per endpoint, h11 speaking HTTP/1.1 over asyncio streams), in the scraper's own thread.

Measured against the simulated endpoints of benchmarks/supervisor_scale.py: httpx from a thread per
scrape cost about 1.5 ms of CPU a worker (a thread each, and a connection pool that scans every connection
per request, each of thousands of endpoints an origin of its own); this, parsing included, about 0.4 ms.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import h11

READ_SIZE = 65536
CONNECT_TIMEOUT_S = 1.0


class Fetched(Exception):
    """Not an answer to use: an error status, or the endpoint closed the connection mid-answer."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host
        self.http = h11.Connection(our_role=h11.CLIENT)

    async def get(self, target: str) -> bytes:
        """The body of a GET that answered 200 (Fetched otherwise)."""
        request = h11.Request(method="GET", target=target, headers=[("Host", self.host), ("Connection", "keep-alive")])
        self.writer.write(self.http.send(request) + self.http.send(h11.EndOfMessage()))
        status, body = 0, bytearray()
        while not isinstance(event := self.http.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                self.http.receive_data(await self.reader.read(READ_SIZE))  # b"": the peer closed
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.ConnectionClosed):
                raise Fetched("closed by the endpoint")
        if status != 200:
            raise Fetched(f"HTTP {status}")
        return bytes(body)

    def reusable(self) -> bool:
        try:
            self.http.start_next_cycle()
        except h11.ProtocolError:  # the endpoint closes the connection after each answer
            return False
        return True


class MetricsClient:
    """Bodies of many URLs at once (`fetch`), on connections kept between calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # By URL, not by endpoint: the URLs of one fetch are scraped at once, and a connection carries one
        # exchange at a time (two URLs on one endpoint get a connection each).
        self.connections: dict[str, _Connection] = {}

    def fetch(self, urls: list[str], deadline_s: float) -> dict[str, bytes | None]:
        """url -> its body (None: no 200 answer within `deadline_s`)."""
        return self.loop.run_until_complete(self._fetch_all(urls, deadline_s))

    async def _fetch_all(self, urls: list[str], deadline_s: float) -> dict[str, bytes | None]:
        tasks = {url: asyncio.ensure_future(self._fetch(url)) for url in urls}
        if tasks:
            await asyncio.wait(tasks.values(), timeout=deadline_s)
        bodies: dict[str, bytes | None] = {}
        for url, task in tasks.items():
            if not task.done():
                task.cancel()  # past the deadline: its connection is dropped as the task unwinds
                await asyncio.gather(task, return_exceptions=True)
            bodies[url] = task.result() if task.done() and not task.cancelled() and not task.exception() else None
        return bodies

    async def _fetch(self, url: str) -> bytes:
        parts = urlsplit(url)
        try:
            connection = self.connections.get(url) or await self._connect(url, parts.hostname or "", parts.port or 80)
            body = await connection.get(parts.path or "/")
            if not connection.reusable():
                self._drop(url)
            return body
        except (OSError, Fetched, asyncio.TimeoutError, h11.ProtocolError, asyncio.CancelledError):
            self._drop(url)  # mid-exchange or broken: the next scrape connects afresh
            raise

    async def _connect(self, url: str, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
        connection = self.connections[url] = _Connection(reader, writer, f"{host}:{port}")
        return connection

    def _drop(self, url: str) -> None:
        connection = self.connections.pop(url, None)
        if connection is not None:
            connection.writer.close()
