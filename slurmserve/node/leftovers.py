"""`python -m slurmserve.node.leftovers PATTERN...`: remove what dead processes left behind on this node.

A SIGKILLed TRT-LLM worker leaves its shared-memory files (/dev/shm/moe_*) behind; the worker started
in its place must not find them. A file is removed only when it is ours (owned by this user: another
user's worker on a shared node is none of our business), no live process holds it open or mapped, and
it has not changed for LEFTOVER_AGE_S (a worker starting next to ours may have made it a moment ago and
not mapped it yet). Nothing is printed to stdout: the SSH launch script reads its stdout as records.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from pathlib import Path

LEFTOVER_AGE_S = 2.0


def held_files() -> set[str]:
    """Every path a live process of this machine has open or mapped (what /proc lets us see)."""
    held: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            held.update(os.readlink(fd) for fd in (entry / "fd").iterdir())
            held.update(
                line.split(None, 5)[5].strip()
                for line in (entry / "maps").read_text().splitlines()
                if len(line.split(None, 5)) == 6
            )
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return held


def removable(path: str, now: float) -> bool:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    return info.st_uid == os.geteuid() and now - info.st_mtime >= LEFTOVER_AGE_S


def remove_leftovers(patterns: list[str]) -> tuple[list[str], list[str]]:
    """Remove the files matching the patterns that are ours, unheld and settled; returns (removed, and
    what could not be removed with why). Never raises for one file: the start must go on."""
    now = time.time()
    candidates = sorted(path for pattern in patterns for path in glob.glob(pattern) if removable(path, now))
    if not candidates:
        return [], []
    held = held_files()
    removed, failed = [], []
    for path in candidates:
        if path in held:
            continue
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:  # another rank of the same worker was faster
            pass
        except OSError as error:
            failed.append(f"{path} ({error.strerror})")
    return removed, failed


def main(patterns: list[str]) -> int:
    removed, failed = remove_leftovers(patterns)
    for path in removed:
        print(f"slurmserve: removed {path}, left behind by a process that is gone", file=sys.stderr)
    for problem in failed:
        print(f"slurmserve: could not remove {problem}; starting anyway", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
