"""`python -m slurmserve.node.groups [--signal SIG] NAME=PGID[:START]|NAME=@PIDFILE ...`: on this host,
which of these process groups are still ours and have a live member (their NAMEs are printed); with
--signal, those get the signal first. A group is ours while its leader runs with the recorded start
time, or, the leader gone, while it has members: a group whose PID was reused is never signalled.
`@PIDFILE` reads "PID START" from a launch script's PID file, so that a process whose start never
reached the launcher is still found. What the SSH backend runs on each host."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from ..transport.procfs import group_is_ours, live_groups, read_pid_record


def parse_group(word: str) -> tuple[str, tuple[int, str | None] | None]:
    name, _, spec = word.partition("=")
    if spec.startswith("@"):
        return name, read_pid_record(Path(spec[1:]))
    pgid, _, started = spec.partition(":")
    return name, (int(pgid), started or None) if pgid.isdigit() else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m slurmserve.node.groups")
    parser.add_argument("--signal", choices=("TERM", "KILL"))
    parser.add_argument("groups", nargs="*", type=parse_group)
    args = parser.parse_args(argv)
    ours = {name: group[0] for name, group in args.groups if group and group_is_ours(*group)}
    if args.signal:
        for pgid in set(ours.values()):
            try:
                os.killpg(pgid, signal.Signals[f"SIG{args.signal}"])
            except ProcessLookupError:
                pass
    alive = live_groups(set(ours.values()))
    print(" ".join(sorted(name for name, pgid in ours.items() if pgid in alive)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
