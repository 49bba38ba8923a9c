"""Running Slurm's client commands, and reading what they print."""

from __future__ import annotations

import re
import subprocess

from .errors import UserError

SLURM_TIMEOUT_S = 60


def slurm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a Slurm client command. With `check`, a failure is the user's to fix (exit 2), with Slurm's words."""
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=SLURM_TIMEOUT_S)
    except FileNotFoundError:
        raise UserError(f"hosts: backend slurm, but {args[0]} is not installed on this machine") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"hosts: backend slurm, but `{' '.join(args[:2])}` got no answer from the Slurm controller in {SLURM_TIMEOUT_S} s") from None
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


def key_values(line: str) -> dict[str, str]:
    """`scontrol show ... -o` lines: `NodeName=node1 NodeAddr=10.0.0.1 Gres=gpu:8 ...`."""
    return dict(re.findall(r"(\w+)=(\S*)", line))


def expand_hostlist(hostlist: str) -> list[str]:
    """`node[1-3],gpu07` -> node1 node2 node3 gpu07, as Slurm itself expands it."""
    return slurm("scontrol", "show", "hostnames", hostlist).stdout.split() if hostlist else []
