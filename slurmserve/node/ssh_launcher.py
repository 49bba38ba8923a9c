"""`python -m slurmserve.node.ssh_launcher RUN_DIR`: the SSH backend's launcher, detached on the
launching machine. Runs the stages; on failure it has stopped everything, records why, and exits 1."""

from __future__ import annotations

import sys
from pathlib import Path

from ..backends.ssh import SSHBackend
from ..errors import DeploymentFailed
from ..runs import RunDir
from ..runs.events import Failed


def main(run_dir: str) -> int:
    run = RunDir(Path(run_dir))
    try:
        SSHBackend().run_stages(run.plan(), run)
    except DeploymentFailed as error:
        run.record(Failed(reason=str(error)))
        print(f"slurmserve: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
