"""Waiting without fixed sleeps or unbounded joins: poll a check until it holds or a deadline passes;
run one piece of work per item at once and take what finished by a deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item", bound=Hashable)
Value = TypeVar("Value")

POLL_INTERVAL_S = 0.1


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    still_worth_waiting: Callable[[], bool] = lambda: True,
    poll_s: float = POLL_INTERVAL_S,
) -> bool:
    """Poll `check` until it holds (True), the deadline passes, or waiting became pointless (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if not still_worth_waiting():
            return False
        time.sleep(poll_s)
    return False


def throttled(check: Callable[[], Value], interval: float) -> Callable[[], Value]:
    """`check`, called at most every `interval` seconds; in between, its last answer."""
    last: list[tuple[float, Value]] = []  # when it was last called, and its answer

    def wrapper() -> Value:
        if not last or time.monotonic() - last[0][0] >= interval:
            last[:] = [(time.monotonic(), check())]
        return last[0][1]

    return wrapper


@dataclass
class Outcome(Generic[Value]):
    """What one item's work came to: its value, the error it raised, or unfinished at the deadline."""

    value: Value | None = None
    error: BaseException | None = None
    finished: bool = False

    @property
    def ok(self) -> bool:
        return self.finished and self.error is None


def fan_out(items: list[Item], work: Callable[[Item], Value], deadline_s: float) -> dict[Item, Outcome[Value]]:
    """`work(item)` for every item at once, each in a daemon thread; returns item -> Outcome after at
    most `deadline_s`. One hung item (a host that never answers) is reported unfinished and waited on
    no longer: a thread pool's join would wait for it."""
    outcomes: dict[Item, Outcome[Value]] = {item: Outcome() for item in items}

    def run(item: Item) -> None:
        try:
            outcomes[item].value = work(item)
        except BaseException as error:  # reported to the caller, item by item
            outcomes[item].error = error
        outcomes[item].finished = True

    threads = [threading.Thread(target=run, args=(item,), daemon=True) for item in items]
    for thread in threads:
        thread.start()
    end = time.monotonic() + deadline_s
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    return outcomes
