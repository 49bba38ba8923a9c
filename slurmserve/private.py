"""Files of a run are the user's alone: plan.json and the scripts hold every process's environment, and
run directories often sit on a shared filesystem. Directories 0700, files 0600, written whole."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TextIO

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


def take_lock(path: Path, record: str) -> TextIO | None:
    """An exclusive flock on `path` (0600), held until the returned file is closed or this process ends
    (a holder that died holds nothing), with `record` (who holds it) written in it for those refused;
    None when another process holds it."""
    file = open(path, "a+", opener=private_opener)  # noqa: SIM115 (held open: the lock lives as long as it)
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        return None
    except OSError:  # a filesystem without flock (Lustre mounted without it): it excludes nothing there
        pass
    file.truncate(0)
    file.write(record)
    file.flush()
    return file


def lock_record(path: Path) -> str:
    """What the holder of a lock taken with `take_lock` wrote in it ("" while it is writing it)."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""
