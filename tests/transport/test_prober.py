"""The prober against endpoints that answer as ours do, and as others might: each answer's reading."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from slurmserve.transport.prober import Prober

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
Reply = Callable[[bytes], tuple[list[bytes], float, bool]]  # request -> (chunks, delay before them, close after)


class Endpoints:
    """Endpoints on loopback, served by one asyncio loop on a thread: each port's reply, the connections it took."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.connections: dict[int, int] = {}
        self.servers: dict[int, asyncio.base_events.Server] = {}
        self.writers: dict[int, set[asyncio.StreamWriter]] = {}
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def add(self, reply: Reply) -> str:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            port = writer.get_extra_info("sockname")[1]
            self.connections[port] = self.connections.get(port, 0) + 1
            self.writers.setdefault(port, set()).add(writer)
            try:
                while True:
                    chunks, delay, close = reply(await reader.readuntil(b"\r\n\r\n"))
                    await asyncio.sleep(delay)
                    for chunk in chunks:
                        writer.write(chunk)
                        await writer.drain()
                    if close:
                        break
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                pass
            writer.close()

        server = asyncio.run_coroutine_threadsafe(asyncio.start_server(answer, "127.0.0.1", 0), self.loop).result()
        port = server.sockets[0].getsockname()[1]
        self.servers[port] = server
        return f"http://127.0.0.1:{port}/health"

    def stop(self, url: str) -> None:
        """The endpoint goes away: its port closed, its connections too."""
        port = port_of(url)
        self.loop.call_soon_threadsafe(self.servers[port].close)
        for writer in self.writers.get(port, ()):
            self.loop.call_soon_threadsafe(writer.close)
        time.sleep(0.1)

    def taken(self, url: str) -> int:
        return self.connections.get(port_of(url), 0)

    def close(self) -> None:
        async def cancel_all() -> None:
            for server in self.servers.values():
                server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def always(*chunks: bytes, delay: float = 0.0, close: bool = False) -> Reply:
    return lambda _request: (list(chunks), delay, close)


@pytest.fixture
def endpoints() -> Iterator[Endpoints]:
    served = Endpoints()
    yield served
    served.close()


@pytest.fixture
def prober() -> Iterator[Prober]:
    made = Prober()
    yield made
    made.close()


def test_a_kept_alive_connection_answers_every_probe(endpoints: Endpoints, prober: Prober) -> None:
    url = endpoints.add(always(OK))
    for _ in range(3):
        assert prober.probe([url], 1.0) == {url: True}
    assert endpoints.taken(url) == 1


def test_answers_other_than_200_are_not_ready(endpoints: Endpoints, prober: Prober) -> None:
    url = endpoints.add(always(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"))
    assert prober.probe([url], 1.0) == {url: False}
    assert prober.probe([url], 1.0) == {url: False}
    assert endpoints.taken(url) == 1  # a 503 is an answer: the connection stays


def test_answers_in_pieces_and_unusual_forms(endpoints: Endpoints, prober: Prober) -> None:
    urls = [
        endpoints.add(always(*[bytes([byte]) for byte in OK])),  # a byte at a time
        endpoints.add(always(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")),
        endpoints.add(always(b"HTTP/1.1 100 Continue\r\n\r\n", OK)),
        endpoints.add(always(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nok until closed", close=True)),
        endpoints.add(always(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", close=True)),
    ]
    for _ in range(2):  # the ones that close are connected to again
        assert prober.probe(urls, 1.0) == dict.fromkeys(urls, True)
    assert [endpoints.taken(url) for url in urls] == [1, 1, 1, 2, 2]


def test_what_is_not_http_does_not_answer(endpoints: Endpoints, prober: Prober) -> None:
    url = endpoints.add(always(b"SSH-2.0-OpenSSH\r\n\r\n"))
    assert prober.probe([url], 1.0) == {url: False}


def test_a_slow_endpoint_answers_within_the_budget_or_not_at_all(endpoints: Endpoints, prober: Prober) -> None:
    quick, slow = endpoints.add(always(OK, delay=0.1)), endpoints.add(always(OK, delay=0.6))
    started = time.monotonic()
    assert prober.probe([quick, slow], 0.4) == {quick: True, slow: False}
    assert time.monotonic() - started < 0.6
    assert prober.probe([slow], 1.5) == {slow: True}  # sent once the late answer came: never taken for this one
    assert endpoints.taken(slow) == 1


def test_an_endpoint_that_hangs_is_connected_to_again(endpoints: Endpoints, prober: Prober) -> None:
    hung = endpoints.add(always(OK, delay=30))
    for _ in range(3):
        assert prober.probe([hung], 0.1) == {hung: False}
    assert endpoints.taken(hung) == 2  # the third probe found two waiting on the first connection


def test_a_gone_or_refusing_endpoint_does_not_answer(endpoints: Endpoints, prober: Prober) -> None:
    url = endpoints.add(always(OK))
    assert prober.probe([url], 1.0) == {url: True}
    endpoints.stop(url)
    refused = "http://127.0.0.1:1/health"
    assert prober.probe([url, refused], 1.0) == {url: False, refused: False}


def test_an_idle_connection_closed_by_the_endpoint_is_made_again(endpoints: Endpoints, prober: Prober) -> None:
    url = endpoints.add(lambda request: ([OK], 0.0, True))  # answers, then closes while idle
    for _ in range(3):
        assert prober.probe([url], 1.0) == {url: True}
        time.sleep(0.05)
    assert endpoints.taken(url) == 3


def test_urls_of_one_endpoint_are_asked_in_turn(endpoints: Endpoints, prober: Prober) -> None:
    url = endpoints.add(lambda request: ([OK if b"/health" in request else OK.replace(b"200", b"404")], 0.0, False))
    other = url.replace("/health", "/ready")
    assert prober.probe([url, other], 1.0) == {url: True, other: False}
    assert endpoints.taken(url) == 1


def test_many_endpoints_at_once(endpoints: Endpoints, prober: Prober) -> None:
    urls = [endpoints.add(always(OK)) for _ in range(300)]
    assert prober.probe(urls, 2.0) == dict.fromkeys(urls, True)
    assert prober.probe(urls, 1.0) == dict.fromkeys(urls, True)
    assert prober.probe([], 1.0) == {}
