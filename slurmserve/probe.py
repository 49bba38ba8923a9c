"""`python -m slurmserve.probe`: the readiness wait the rendered scripts call between stages.

Polls a URL until HTTP 200. When the process being waited for dies first (its PID file says which),
it stops at once and shows the end of the process's log, instead of waiting out the timeout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .health import http_ok, throttled, wait_until
from .procs import pid_alive

LOG_TAIL_LINES = 30
STEP_CHECK_INTERVAL_S = 2.0  # squeue asks slurmctld: not on every 0.1 s poll


def slurm_step_running(name: str) -> bool:
    result = subprocess.run(["squeue", "-h", "--steps", "-j", os.environ["SLURM_JOB_ID"], "-o", "%j"],
                            capture_output=True, text=True, timeout=30)
    return result.returncode != 0 or name in result.stdout.split()  # squeue trouble is no proof of death


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slurmserve.probe")
    parser.add_argument("--url", required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--name", default="process")
    parser.add_argument("--pid-file", type=Path)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--slurm-step", help="name of the srun step running the process (inside a Slurm job)")
    args = parser.parse_args(argv)
    step_running = throttled(lambda: slurm_step_running(args.slurm_step), STEP_CHECK_INTERVAL_S)

    def alive() -> bool:
        if args.slurm_step:
            return step_running()
        if args.pid_file is None or not args.pid_file.exists():
            return True
        return pid_alive(int(args.pid_file.read_text()))

    if wait_until(lambda: http_ok(args.url), args.timeout, alive):
        return 0
    reason = "exited" if not alive() else f"did not answer {args.url} within {args.timeout:g} s"
    print(f"slurmserve: {args.name} {reason}", file=sys.stderr)
    if args.log and args.log.exists():
        tail = args.log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        print(f"--- last lines of {args.log}:", *tail, sep="\n", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
