"""What the lab benchmarks share: the test cluster, borrowed, and a fresh slurmserve home for their runs."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.cluster import lab


@contextlib.contextmanager
def lab_session():
    """The lab (brought up if needed, left as found) with runs in a fresh temporary home."""
    home = tempfile.mkdtemp(prefix="slurmserve-bench-")
    os.environ.update(SLURMSERVE_HOME=home, HOME=home)
    with lab.borrowed() as cluster:
        yield cluster
