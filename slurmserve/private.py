"""Files of a run are the user's alone: plan.json and the scripts hold every process's environment, and
run directories often sit on a shared filesystem. Directories 0700, files 0600, written whole.
What the user names with --out is theirs to share: made as their new files are (their umask), and a
folder that exists already is left as it is."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import TextIO

from .errors import UserError

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_opener(path: str, flags: int) -> int:
    """For `open(..., opener=private_opener)`: a file this creates is 0600."""
    return os.open(path, flags, FILE_MODE)


def make_private_dir(path: Path) -> None:
    """The folder, and the parents it lacks, 0700 (parents that exist are left as they are)."""
    if not path.parent.is_dir():
        make_private_dir(path.parent)
    path.mkdir(mode=DIR_MODE, exist_ok=True)
    path.chmod(DIR_MODE)


def write_private(path: Path, text: str) -> None:
    """Write a 0600 file whole: a reader sees the old one or the new one, never half of one."""
    write_whole(path, text.encode(), private=True)


def write_whole(path: Path, content: bytes, *, private: bool) -> None:
    """Write a file whole: 0600 if `private`, else as the user's new files are (their umask)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)  # an earlier temporary of another mode, left by a crash
    with open(temporary, "wb", opener=private_opener if private else None) as file:
        file.write(content)
    temporary.replace(path)


def make_folder(path: Path, *, private: bool) -> None:
    """A folder (and the parents it lacks): 0700 if `private`, else made as the user's new folders are."""
    if private:
        make_private_dir(path)
    else:
        path.mkdir(parents=True, exist_ok=True)


def make_out_dir(path: Path, *, private: bool = False) -> None:
    """A folder the user named: one that exists is left as it is; a new one is 0700 if `private` (a run
    directory), else made as their new folders are. UserError (one line) if it cannot be made or written."""
    try:
        if not path.is_dir():
            make_folder(path, private=private)
    except OSError as error:
        raise UserError(f"--out {path}: cannot write there ({error.strerror}: {error.filename})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"--out {path}: cannot write there (permission denied)")


def copy_as_new(source: Path, target: Path) -> None:
    """A folder's files copied as the user's new files are made (umask), not with their private modes."""
    for path in [source, *sorted(source.rglob("*"))]:  # a folder before what it holds
        copied = target / path.relative_to(source)
        if path.is_dir():
            copied.mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            shutil.copyfile(path, copied)


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
