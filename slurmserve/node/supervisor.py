"""`python -m slurmserve.node.supervisor RUN_DIR`: the deployment's supervisor (see runtime.supervision)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

early: list[int] = []  # SIGTERM/SIGINT that came while the supervisor was still starting


def remember(signum: int, _frame: FrameType | None) -> None:
    early.append(signum)


if __name__ == "__main__":
    # Before the imports (a second or more on a loaded node): a job cancelled while its supervisor is still
    # starting gets a supervisor that records its stop, instead of one killed without a word.
    signal.signal(signal.SIGTERM, remember)
    signal.signal(signal.SIGINT, remember)
    from ..runs import RunDir
    from ..runtime.supervision import supervise

    supervise(RunDir(Path(sys.argv[1])), early)
