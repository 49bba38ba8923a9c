"""Files of a run are the user's alone: plan.json and the scripts hold every process's environment, and
run directories often sit on a shared filesystem. Directories 0700, files 0600, written whole."""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_opener(path: str, flags: int) -> int:
    """For `open(..., opener=private_opener)`: a file this creates is 0600."""
    return os.open(path, flags, FILE_MODE)


def make_private_dir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    path.chmod(DIR_MODE)


def write_private(path: Path, text: str) -> None:
    """Write a 0600 file whole: a reader sees the old one or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", opener=private_opener) as file:
        file.write(text)
    os.chmod(temporary, FILE_MODE)  # an earlier temporary of another mode, left by a crash
    temporary.replace(path)
