"""Slurm's client commands (sbatch, squeue, sacct, scancel, sinfo, scontrol), and reading what they print."""

from __future__ import annotations

import functools
import re
import subprocess

from ..errors import UserError

SLURM_TIMEOUT_S = 60
DEFAULT_SLURMD_PORT = 6818
TERMINAL_STATES = frozenset(
    {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT"}
)


def slurm(*args: str, check: bool = True, umask: int = -1) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client command. With `check`, a failure is the user's to fix (exit 2), with Slurm's words."""
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=SLURM_TIMEOUT_S, umask=umask)
    except FileNotFoundError:
        raise UserError(f"hosts: backend slurm, but {args[0]} is not installed on this machine") from None
    except subprocess.TimeoutExpired:
        raise UserError(
            f"hosts: backend slurm, but `{' '.join(args[:2])}` got no answer from the Slurm controller "
            f"in {SLURM_TIMEOUT_S} s"
        ) from None
    if check and result.returncode != 0:
        raise UserError(f"`{' '.join(args)}` failed: {' '.join((result.stderr or result.stdout).split())}")
    return result


def gpus_in_gres(gres: str) -> int:
    """`gpu:8`, `gpu:h100:8(S:0-1)`, `gpu:8,shard:4` -> 8."""
    return sum(int(match) for match in re.findall(r"gpu(?::[^:,()]+)?:(\d+)", gres))


def node_gres(partition: str | None = None) -> dict[str, str]:
    """Each node's GRES as Slurm schedules them (`node1 -> gpu:8`), of a partition or the whole cluster."""
    listing = ["sinfo", "-h", "-N", "-o", "%N %G"] + (["-p", partition] if partition else [])
    return dict(line.split(maxsplit=1) for line in slurm(*listing).stdout.splitlines() if line.strip())


def partitions() -> list[str]:
    return slurm("sinfo", "-h", "-o", "%R").stdout.split()


def key_values(line: str) -> dict[str, str]:
    """`scontrol show ... -o` lines: `NodeName=node1 NodeAddr=10.0.0.1 Gres=gpu:8 ...`."""
    return dict(re.findall(r"(\w+)=(\S*)", line))


def scontrol_records(kind: str) -> list[dict[str, str]]:
    """`scontrol show partition|node -o`, one mapping per record."""
    return [key_values(line) for line in slurm("scontrol", "show", kind, "-o").stdout.splitlines() if line.strip()]


def expand_hostlist(hostlist: str) -> list[str]:
    """`node[1-3],gpu07` -> node1 node2 node3 gpu07, as Slurm itself expands it."""
    return slurm("scontrol", "show", "hostnames", hostlist).stdout.split() if hostlist else []


@functools.cache
def slurmd_port() -> int:
    for line in slurm("scontrol", "show", "config", check=False).stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "SlurmdPort" and value.strip().isdigit():
            return int(value)
    return DEFAULT_SLURMD_PORT


def _first_word(command: list[str]) -> str | None:
    result = slurm(*command, check=False)
    words = result.stdout.split()
    return words[0] if result.returncode == 0 and words else None  # "CANCELLED by 0" -> CANCELLED


def squeue_state(job_id: str) -> str | None:
    """While slurmctld remembers the job (MinJobAge after it ends)."""
    return _first_word(["squeue", "-h", "-j", job_id, "-o", "%T"])


def sacct_state(job_id: str) -> str | None:
    """From slurmdbd; None where accounting is disabled."""
    return _first_word(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"])


def jobcomp_state(job_id: str) -> str | None:
    """From the job completion file: clusters without accounting, once the job has ended."""
    return _first_word(["sacct", "-c", "-n", "-P", "-j", job_id, "-o", "State"])


def job_state(job_id: str) -> str | None:
    """squeue while Slurm remembers the job, then sacct, then the jobcomp file."""
    for source in (squeue_state, sacct_state, jobcomp_state):
        state = source(job_id)
        if state:
            return state
    return None


def running_steps(job_id: str) -> set[str] | None:
    """The names of the job's running steps; None when squeue could not say."""
    result = slurm("squeue", "-h", "--steps", "-j", job_id, "-o", "%j", check=False)
    return set(result.stdout.split()) if result.returncode == 0 else None


def steps_named(job_id: str, name: str) -> list[str]:
    """The ids (JOB.STEP) of the job's running steps of that name."""
    result = slurm("squeue", "-h", "--steps", "-j", job_id, "-o", "%i %j", check=False)
    return [step for step, _, found in (line.partition(" ") for line in result.stdout.splitlines()) if found == name]


def jobs_named(name: str) -> list[str]:
    """Ids of this user's jobs of this name that slurmctld still knows (another user's job of the same
    name is none of ours to adopt or cancel)."""
    return slurm("squeue", "-h", "--me", "--name", name, "-o", "%i", check=False).stdout.split()
