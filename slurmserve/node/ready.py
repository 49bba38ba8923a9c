"""`python -m slurmserve.node.ready`: the readiness wait the rendered scripts run between stages.

Polls a URL until HTTP 200. When the process being waited for dies first (its PID file, or its Slurm
step, says so), it stops at once and shows the end of the process's log, instead of waiting out the
timeout.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..backends.base import pid_file_alive
from ..transport.http import wait_ready
from ..transport.slurm import running_steps
from ..waiting import throttled

LOG_TAIL_LINES = 30
STEP_CHECK_INTERVAL_S = 2.0  # squeue asks slurmctld: not on every 0.1 s poll


def liveness(args: argparse.Namespace) -> Callable[[], bool]:
    """Whether the process waited for may still come up."""
    if args.slurm_step:
        job_id = os.environ["SLURM_JOB_ID"]

        def step_running() -> bool:
            steps = running_steps(job_id)
            return steps is None or args.slurm_step in steps  # squeue trouble is no proof of death

        return throttled(step_running, STEP_CHECK_INTERVAL_S)
    if args.pid_file is None:
        return lambda: True
    return lambda: pid_file_alive(args.pid_file) is not False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slurmserve.node.ready")
    parser.add_argument("--url", required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--name", default="process")
    parser.add_argument("--pid-file", type=Path)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--slurm-step", help="name of the srun step running the process (inside a Slurm job)")
    args = parser.parse_args(argv)
    alive = liveness(args)
    if wait_ready(args.url, args.timeout, alive):
        return 0
    reason = "exited" if not alive() else f"did not answer {args.url} within {args.timeout:g} s"
    print(f"slurmserve: {args.name} {reason}", file=sys.stderr)
    if args.log and args.log.exists():
        tail = args.log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        print(f"--- last lines of {args.log}:", *tail, sep="\n", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
