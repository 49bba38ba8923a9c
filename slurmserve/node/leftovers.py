"""`python -m slurmserve.node.leftovers PATTERN...`: remove what dead processes left behind on this node.

A SIGKILLed TRT-LLM worker leaves its shared-memory files (/dev/shm/moe_*) behind; the worker started
in its place must not find them. A file some live process still has open or mapped belongs to another
worker on the node and is kept.
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path


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


def remove_leftovers(patterns: list[str]) -> list[str]:
    """Remove the files matching the patterns that no live process holds; returns what was removed."""
    candidates = sorted({path for pattern in patterns for path in glob.glob(pattern)})
    if not candidates:
        return []
    held = held_files()
    removed = []
    for path in candidates:
        if path in held:
            continue
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:  # another rank of the same worker was faster
            pass
    return removed


if __name__ == "__main__":
    for path in remove_leftovers(sys.argv[1:]):
        # stderr: the SSH launch script reads its stdout as "NAME PID" lines
        print(f"slurmserve: removed {path}, left behind by a process that is gone", file=sys.stderr)
