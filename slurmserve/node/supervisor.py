"""`python -m slurmserve.node.supervisor RUN_DIR`: the deployment's supervisor (see health.supervisor)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..health.supervisor import supervise
from ..runs import RunDir

if __name__ == "__main__":
    supervise(RunDir(Path(sys.argv[1])))
