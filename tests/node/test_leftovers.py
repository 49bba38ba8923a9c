"""`python -m slurmserve.node.leftovers`: only our own, unheld, settled files go; nothing on stdout."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

from slurmserve.node import leftovers


def make(path: Path, age_s: float = 10.0, owner: int | None = None) -> Path:
    path.write_bytes(b"\0" * 4096)
    then = time.time() - age_s
    os.utime(path, (then, then))
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def test_removes_only_what_is_ours_unheld_and_settled(tmp_path):
    dead = make(tmp_path / "moe_dead")
    other_user = make(tmp_path / "moe_other", owner=65534)  # nobody's: another user's worker
    fresh = make(tmp_path / "moe_fresh", age_s=0.0)  # a neighbour starting right now
    held = make(tmp_path / "moe_held")
    with open(held, "r+b") as file, mmap.mmap(file.fileno(), 4096):
        result = subprocess.run(
            [sys.executable, "-m", "slurmserve.node.leftovers", str(tmp_path / "moe_*")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0 and result.stdout == ""
    assert f"removed {dead}" in result.stderr
    assert not dead.exists() and other_user.exists() and fresh.exists() and held.exists()


def test_a_file_that_cannot_be_removed_does_not_stop_the_start(tmp_path, monkeypatch):
    stuck = make(tmp_path / "moe_stuck")

    def refuse(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(leftovers.os, "unlink", refuse)
    removed, failed = leftovers.remove_leftovers([str(tmp_path / "moe_*")])
    assert removed == [] and failed == [f"{stuck} (Permission denied)"]
