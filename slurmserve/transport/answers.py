"""Reading a probe's answer off a connection as its bytes arrive: what Prober's connections parse.

Our processes' /health answers are small HTTP/1.1 replies with a Content-Length; reading just the status
line and that header costs a few microseconds, where h11 took tens. An answer that is anything else
(chunked, a body that ends with the connection, a 1xx first, HTTP/1.0) is handed whole to h11.
"""

from __future__ import annotations

import re
from typing import Protocol

import h11

HEAD_END = b"\r\n\r\n"
LONGEST_HEAD = 65536  # a head longer than this is not one of our processes' answers
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*\r\n")
CLOSES = re.compile(rb"\r\nconnection:[^\r]*\bclose\b")
FAST_PREFIX = b"http/1.1 "


class Answer(Protocol):
    reusable: bool

    def read(self, buffer: bytearray) -> int | None:
        """The status once the whole answer is in `buffer` (taken off it), else None."""

    def closed(self, buffer: bytearray) -> int | None:
        """The status when the peer closed with `buffer` as the answer's last bytes, else None."""


class FastAnswer:
    """An HTTP/1.1 answer of Content-Length bytes (every /health of ours)."""

    def __init__(self, status: int, length: int, reusable: bool):
        self.status, self.length, self.reusable = status, length, reusable

    @classmethod
    def of(cls, head: bytes) -> FastAnswer | None:
        """The answer whose head (through its blank line) is `head`; None when it is not that simple."""
        lowered = head.lower()
        lengths = CONTENT_LENGTH.findall(lowered)
        code = lowered[9:12]
        if not lowered.startswith(FAST_PREFIX) or len(lengths) != 1 or not code.isdigit() or code < b"200":
            return None
        if b"\r\ntransfer-encoding:" in lowered or lowered[12:13] not in (b" ", b"\r"):
            return None
        return cls(int(code), len(head) + int(lengths[0]), CLOSES.search(lowered) is None)

    def read(self, buffer: bytearray) -> int | None:
        if len(buffer) < self.length:
            return None
        del buffer[: self.length]
        return self.status

    def closed(self, buffer: bytearray) -> int | None:
        return None  # cut short: not an answer


class H11Answer:
    """Any other answer, read by h11 from its first byte."""

    def __init__(self, host: str, path: str):
        self.http = h11.Connection(our_role=h11.CLIENT)
        self.http.send(h11.Request(method="GET", target=path, headers=[("Host", host), ("Connection", "keep-alive")]))
        self.http.send(h11.EndOfMessage())  # h11 now waits for the answer to the request we sent
        self.status = 0
        self.reusable = True

    def read(self, buffer: bytearray) -> int | None:
        self.http.receive_data(bytes(buffer))
        buffer.clear()
        return self._events(buffer)

    def closed(self, buffer: bytearray) -> int | None:
        status = self.read(buffer)
        if status is not None:
            return status
        self.http.receive_data(b"")  # the end of a body that lasts until the connection closes
        self.reusable = False
        return self._events(buffer)

    def _events(self, buffer: bytearray) -> int | None:
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Response):
                self.status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                return self._done(buffer)
            elif isinstance(event, h11.ConnectionClosed):
                raise ValueError("closed by the endpoint before its answer ended")

    def _done(self, buffer: bytearray) -> int:
        leftover, _ = self.http.trailing_data
        buffer[:0] = leftover  # bytes past this answer (none, from our own processes)
        try:
            self.http.start_next_cycle()
        except h11.ProtocolError:  # the endpoint closes the connection after each answer
            self.reusable = False
        return self.status


def answer_for(buffer: bytearray, host: str, path: str) -> Answer | None:
    """How to read the answer that starts `buffer`; None while its head has not all arrived."""
    end = buffer.find(HEAD_END)
    if end < 0:
        if len(buffer) > LONGEST_HEAD:
            raise ValueError("an answer's head too long")
        return None
    return FastAnswer.of(bytes(buffer[: end + len(HEAD_END)])) or H11Answer(host, path)
