"""How a command ends when it does not succeed: bad input exits 2, a failed deployment 1, an interrupt
130 (SIGINT) or 143 (SIGTERM); each with one paragraph on stderr and no traceback."""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar, cast

import httpx
import typer

from ..errors import DeploymentFailed, Interrupted, UserError
from .output import stderr

INTERRUPT_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as shells report it

Command = TypeVar("Command", bound=Callable[..., Any])


def clean_errors(command: Command) -> Command:
    """Bad input: one paragraph, exit 2, no traceback. A deployment that failed: exit 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as error:
            stderr.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(2) from None
        except DeploymentFailed as error:
            stderr.print(f"[bold red]deployment failed:[/] {error}", highlight=False)
            raise typer.Exit(1) from None
        except httpx.HTTPError as error:
            stderr.print(f"[bold red]deployment failed:[/] {error.request.url}: {error}", highlight=False)
            raise typer.Exit(1) from None

    return cast(Command, wrapper)


@contextmanager
def stopped_on_interrupt(command: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM: what the command started is stopped (deploy raises Interrupted saying what),
    one line, exit 130 (SIGINT) or 143 (SIGTERM). A second signal does not cut that cleanup short."""
    received: list[int] = []

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in INTERRUPT_EXIT}
    try:
        yield
    except KeyboardInterrupt as error:
        signum = signal.Signals(received[0] if received else signal.SIGINT)
        done = str(error) if isinstance(error, Interrupted) else "nothing had started"
        stderr.print(
            f"[bold red]{command} interrupted[/] ({signum.name}, exit {INTERRUPT_EXIT[signum]}): {done}",
            highlight=False,
        )
        raise typer.Exit(INTERRUPT_EXIT[signum]) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def said_on_interrupt(line: str) -> Iterator[None]:
    """Ctrl-C, or a TERM made one: what the command started is stopped on the way out (deploy sees to it),
    then `line`, exit 130."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        stderr.print(line)
        raise typer.Exit(130) from None
