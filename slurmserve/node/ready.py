"""`python -m slurmserve.node.ready`: the readiness wait the rendered scripts run between stages.

    python -m slurmserve.node.ready [--slurm | --pids DIR] [--logs DIR] NAME URL TIMEOUT [NAME URL TIMEOUT ...]

Waits for every process of a stage at once, each until its URL answers HTTP 200. One program a stage, not
one a process: the next stage starts as soon as the last of them answers, with no second interpreter to
start after the first one returned (a third of a second at every hand-off). When a process waited for dies
first (its Slurm step, or its PID file, says so), it stops at once and shows the end of that process's log,
instead of waiting out the timeout.

It runs at every stage hand-off, so it imports little: the standard library's HTTP client, and no package
that pulls in pydantic or httpx (their import alone took longer than the probe).
"""

from __future__ import annotations

import argparse
import http.client
import os
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from ..transport.procfs import pid_file_alive
from ..transport.slurm import running_steps
from ..waiting import throttled, wait_until

LOG_TAIL_LINES = 30
STEP_CHECK_INTERVAL_S = 2.0  # squeue asks slurmctld: not on every poll
PROBE_TIMEOUT_S = 1.0
POLL_S = 0.02  # a stage hand-off waits half of this on average; a local /health answers in a millisecond


def answers_200(url: str) -> bool:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=PROBE_TIMEOUT_S)
    try:
        connection.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def liveness(args: argparse.Namespace) -> Callable[[str], bool]:
    """Whether the process of that name may still come up."""
    if args.slurm:
        job_id = os.environ["SLURM_JOB_ID"]
        # One squeue for the whole stage, at most every STEP_CHECK_INTERVAL_S.
        steps = throttled(lambda: running_steps(job_id), STEP_CHECK_INTERVAL_S)
        return lambda name: (found := steps()) is None or name in found  # squeue trouble is no proof of death
    if args.pids is None:
        return lambda _name: True
    return lambda name: pid_file_alive(args.pids / f"{name}.pid") is not False


def why_not(name: str, url: str, timeout: float, alive: Callable[[str], bool]) -> str | None:
    """Wait for one process: None once it answers, else why it will not."""
    if wait_until(lambda: answers_200(url), timeout, lambda: alive(name), poll_s=POLL_S):
        return None
    return "exited" if not alive(name) else f"did not answer {url} within {timeout:g} s"


def first_failure(waits: list[tuple[str, str, float]], alive: Callable[[str], bool]) -> tuple[str, str] | None:
    """Every wait at once; the first process that will not come up, with why (None: all did)."""
    outcomes: queue.Queue[tuple[str, str | None]] = queue.Queue()
    for name, url, timeout in waits:
        threading.Thread(
            target=lambda n=name, u=url, t=timeout: outcomes.put((n, why_not(n, u, t, alive))), daemon=True
        ).start()
    for _ in waits:
        name, reason = outcomes.get()
        if reason is not None:
            return name, reason
    return None


def triples(words: list[str]) -> list[tuple[str, str, float]]:
    if not words or len(words) % 3:
        raise ValueError("expected NAME URL TIMEOUT, one triple a process")
    return [(words[i], words[i + 1], float(words[i + 2])) for i in range(0, len(words), 3)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slurmserve.node.ready")
    parser.add_argument("--slurm", action="store_true", help="each process is the srun step of its name")
    parser.add_argument("--pids", type=Path, help="the folder of the processes' PID files (NAME.pid)")
    parser.add_argument("--logs", type=Path, help="the folder of the processes' logs (NAME.log)")
    parser.add_argument("waits", nargs="+", metavar="NAME URL TIMEOUT")
    args = parser.parse_args(argv)
    try:
        waits = triples(args.waits)
    except ValueError as error:
        parser.error(str(error))
    failed = first_failure(waits, liveness(args))
    if failed is None:
        return 0
    name, reason = failed
    print(f"slurmserve: {name} {reason}", file=sys.stderr)
    log = args.logs / f"{name}.log" if args.logs else None
    if log and log.exists():
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        print(f"--- last lines of {log}:", *tail, sep="\n", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
