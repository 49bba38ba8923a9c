"""Slurm's client commands (sbatch, squeue, sacct, scancel, sinfo, scontrol), and reading what they print."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from enum import Enum
from pathlib import Path

from ..errors import DeploymentFailed, UserError

SLURM_TIMEOUT_S = 60
DEFAULT_SLURMD_PORT = 6818


class JobState(str, Enum):
    """A Slurm job's state: Slurm's own (squeue's long names), GONE for a job no source knows (any
    more), UNKNOWN for a state this version of slurmserve has no name for."""

    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    STOPPED = "STOPPED"
    SIGNALING = "SIGNALING"
    RESIZING = "RESIZING"
    STAGE_OUT = "STAGE_OUT"
    COMPLETING = "COMPLETING"
    REQUEUED = "REQUEUED"
    REQUEUE_FED = "REQUEUE_FED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    REVOKED = "REVOKED"  # a federated sibling job, run elsewhere
    GONE = "GONE"
    UNKNOWN = "UNKNOWN"

    @property
    def terminal(self) -> bool:
        """Slurm ended the job: it will not run (again) by itself."""
        return self in TERMINAL_STATES

    @property
    def over(self) -> bool:
        """Ended, or forgotten by Slurm: nothing of the job is left to wait for."""
        return self.terminal or self is JobState.GONE


TERMINAL_STATES = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.NODE_FAIL,
        JobState.OUT_OF_MEMORY,
        JobState.PREEMPTED,
        JobState.BOOT_FAIL,
        JobState.DEADLINE,
    }
)
# squeue's `%t` and sinfo-style short codes, for the same states.
COMPACT_STATES = {
    "PD": JobState.PENDING,
    "CF": JobState.CONFIGURING,
    "R": JobState.RUNNING,
    "S": JobState.SUSPENDED,
    "ST": JobState.STOPPED,
    "SI": JobState.SIGNALING,
    "RS": JobState.RESIZING,
    "SO": JobState.STAGE_OUT,
    "CG": JobState.COMPLETING,
    "RQ": JobState.REQUEUED,
    "RF": JobState.REQUEUE_FED,
    "RH": JobState.REQUEUE_HOLD,
    "RD": JobState.RESV_DEL_HOLD,
    "SE": JobState.SPECIAL_EXIT,
    "CD": JobState.COMPLETED,
    "F": JobState.FAILED,
    "CA": JobState.CANCELLED,
    "TO": JobState.TIMEOUT,
    "NF": JobState.NODE_FAIL,
    "OOM": JobState.OUT_OF_MEMORY,
    "PR": JobState.PREEMPTED,
    "BF": JobState.BOOT_FAIL,
    "DL": JobState.DEADLINE,
    "RV": JobState.REVOKED,
}


def parse_job_state(text: str) -> JobState:
    """The one reading of a state Slurm prints: squeue's `RUNNING` or `R`, sacct's `CANCELLED by 0`
    (who cancelled it), `CANCELLED+` (sacct cut the word short) and scontrol's `JobState=RUNNING`.
    A state handle.json kept (a JobState value) reads back as itself."""
    words = text.strip().removeprefix("JobState=").split()
    word = words[0].rstrip("+").upper() if words else ""
    if word in JobState.__members__:
        return JobState(word)
    return COMPACT_STATES.get(word, JobState.UNKNOWN)


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


def _state_from(command: list[str]) -> JobState | None:
    """None when the command knows no such job (it failed, or printed nothing)."""
    result = slurm(*command, check=False)
    return parse_job_state(result.stdout) if result.returncode == 0 and result.stdout.strip() else None


def squeue_state(job_id: str) -> JobState | None:
    """While slurmctld remembers the job (MinJobAge after it ends)."""
    return _state_from(["squeue", "-h", "-j", job_id, "-o", "%T"])


def pending_reason(job_id: str) -> str | None:
    """Why a pending job waits, as squeue's %r says it (Priority, Resources, QOSMaxGRESPerUser...); None
    when squeue does not know the job or gives no reason."""
    result = slurm("squeue", "-h", "-j", job_id, "-o", "%r", check=False)
    reason = result.stdout.strip() if result.returncode == 0 else ""
    return reason if reason and reason != "None" else None


def sacct_state(job_id: str) -> JobState | None:
    """From slurmdbd; None where accounting is disabled."""
    return _state_from(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"])


def jobcomp_state(job_id: str) -> JobState | None:
    """From the job completion file: clusters without accounting, once the job has ended."""
    return _state_from(["sacct", "-c", "-n", "-P", "-j", job_id, "-o", "State"])


def job_state(job_id: str) -> JobState:
    """squeue while Slurm remembers the job, then sacct, then the jobcomp file; GONE when none knows it."""
    for source in (squeue_state, sacct_state, jobcomp_state):
        state = source(job_id)
        if state is not None:
            return state
    return JobState.GONE


def states_of(job_ids: list[str]) -> dict[str, JobState] | None:
    """The states of these jobs in one squeue (a job it no longer lists is left out); None when squeue could
    not say."""
    if not job_ids:
        return {}
    result = slurm("squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T", check=False)
    if result.returncode != 0 and "Invalid job id" not in result.stderr:
        return None
    return {
        job: parse_job_state(state) for job, _, state in (line.partition(" ") for line in result.stdout.splitlines())
    }


def minutes_left(job_id: str) -> int | None:
    """Whole minutes the running job has left before its time limit (squeue's %L: [D-]HH:MM:SS, MM:SS);
    None when squeue does not say (the job is not running, or has no limit)."""
    result = slurm("squeue", "-h", "-j", job_id, "-o", "%L", check=False)
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", result.stdout.strip())
    if result.returncode != 0 or match is None:
        return None
    days, hours, minutes, _ = (int(part or 0) for part in match.groups())
    return (days * 24 + hours) * 60 + minutes


def running_steps(job_id: str) -> set[str] | None:
    """The names of the job's running steps; None when squeue could not say."""
    result = slurm("squeue", "-h", "--steps", "-j", job_id, "-o", "%j", check=False)
    return set(result.stdout.split()) if result.returncode == 0 else None


def steps_named(job_id: str, name: str) -> list[str]:
    """The ids (JOB.STEP) of the job's running steps of that name (none when squeue could not say)."""
    return steps_named_or_unknown(job_id, name) or []


def steps_named_or_unknown(job_id: str, name: str) -> list[str] | None:
    """The ids (JOB.STEP) of the job's running steps of that name; None when squeue could not say."""
    result = slurm("squeue", "-h", "--steps", "-j", job_id, "-o", "%i %j", check=False)
    if result.returncode != 0:
        return None
    return [step for step, _, found in (line.partition(" ") for line in result.stdout.splitlines()) if found == name]


def jobs_named(name: str) -> list[str]:
    """Ids of this user's jobs of this name that slurmctld still knows (another user's job of the same
    name is none of ours to adopt or cancel)."""
    return slurm("squeue", "-h", "--me", "--name", name, "-o", "%i", check=False).stdout.split()


def sbatch_objection(script: Path) -> str | None:
    """`sbatch --test-only`: Slurm's own objection to the script, None when it would accept it."""
    result = slurm("sbatch", "--test-only", str(script), check=False)
    return " ".join(result.stderr.split()) if result.returncode != 0 else None


def sbatch(script: Path, *options: str) -> str:
    """Submit the script (with these options over its own); its job id. Under umask 077: the files Slurm makes
    for the job (its output, each step's log) are the user's alone."""
    result = slurm("sbatch", "--parsable", *options, str(script), check=False, umask=0o077)
    if result.returncode != 0:
        raise DeploymentFailed(f"sbatch failed: {' '.join(result.stderr.split())}")
    return result.stdout.strip().split(";")[0]


def scancel(*ids: str, signal: str | None = None) -> None:
    """Cancel jobs or steps (JOB or JOB.STEP), or with `signal` only send it to their tasks; one already gone
    is no error."""
    slurm("scancel", *([f"--signal={signal}"] if signal else []), *ids, check=False)


def show_topology() -> list[dict[str, str]]:
    """`scontrol show topology`, one mapping per switch; none on clusters without topology/tree."""
    result = slurm("scontrol", "show", "topology", check=False)
    return [key_values(line) for line in result.stdout.splitlines()] if result.returncode == 0 else []


def sbatch_installed() -> bool:
    return shutil.which("sbatch") is not None
