"""Slurm steps: the words of an srun command line (for this machine's runners and for the job scripts
render writes), and `SrunRunner`, which runs commands as srun steps from this machine."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from .runner import LocalRunner
from .words import with_env

SCHEDULING_FIELDS = ("partition", "account", "qos", "reservation")


def scheduling_flags(settings: object) -> list[str]:
    """`--partition=...` etc. for what the hosts file's slurm section sets (a step that is a job of its own)."""
    return [f"--{name}={value}" for name in SCHEDULING_FIELDS if (value := getattr(settings, name, None))]


@dataclass(frozen=True)
class SrunStep:
    """One srun step over `nodes`. Inside an allocation (`overlap`) it shares the job's resources beside
    its running steps; outside, it is a small job of its own that may run `minutes`. `job_id` joins a
    running job from outside it. Every step states its own nodes and tasks, whatever job-wide defaults
    (the hosts file's extra_sbatch) say."""

    nodes: tuple[str, ...]
    tasks: int | None = None  # one per node unless told
    overlap: bool = True
    minutes: int = 1
    job_id: str | None = None
    one_per_node: bool = False
    export_all: bool = False
    job_name: str | None = None
    options: tuple[str, ...] = ()  # --quiet, -l, container and scheduling flags

    def words(self) -> list[str]:
        words = ["srun", *([f"--jobid={self.job_id}"] if self.job_id else [])]
        words.append("--overlap" if self.overlap else f"--time={self.minutes}")
        words += [f"--nodes={len(self.nodes)}", f"--ntasks={self.tasks or len(self.nodes)}"]
        words += ["--ntasks-per-node=1"] if self.one_per_node else []
        words.append(f"--nodelist={','.join(self.nodes)}")
        words += ["--export=ALL"] if self.export_all else []
        words += [f"--job-name={self.job_name}"] if self.job_name else []
        return [*words, *self.options]


def shell_words(words: Sequence[str]) -> str:
    """Words as a shell line, each `--flag=value`'s value quoted on its own (as a person would write it)."""
    quoted = []
    for word in words:
        flag, equals, value = word.partition("=")
        quoted.append(f"{flag}={shlex.quote(value)}" if equals and flag.startswith("--") else shlex.quote(word))
    return " ".join(quoted)


def in_allocation() -> bool:
    """Whether this process runs inside a Slurm job (the batch script, a step): steps then overlap it."""
    return "SLURM_JOB_ID" in os.environ


class SrunRunner(LocalRunner):
    """Commands run as an srun step launched from this machine (its srun is the local process that a
    cancel or this process's exit stops: srun then cancels the step, which ends the command on the nodes).
    The nodes share this machine's filesystem (a Slurm cluster's run directories do), so uploads and
    logs are written here."""

    def __init__(self, step: SrunStep):
        self.step = step

    @property
    def where(self) -> str:
        return f"node {','.join(self.step.nodes)}"

    def command(self, argv: Sequence[str], env: dict[str, str] | None) -> tuple[list[str], dict[str, str] | None]:
        return [*self.step.words(), *with_env(argv, env)], None

    def check_connection(self, timeout: float) -> str | None:
        """srun itself says when a node cannot be reached (its exit status and words)."""
        return None
