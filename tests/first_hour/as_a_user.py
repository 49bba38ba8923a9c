"""The CLI as a person runs it: its own process, a terminal of 80 columns, output to a pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def user_runs(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "slurmserve", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"COLUMNS": "80"},
        cwd=cwd,
    )


def words(text: str) -> str:
    """Text as a person reads it: the terminal's (or rich's) line breaks undone."""
    return " ".join(text.split())
