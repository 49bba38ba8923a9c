"""`python -m slurmserve.node.scraper RUN_DIR`: the supervisor's scraper of live metrics (see
observability.scraping), started by the supervisor as its child. It ends with the supervisor, however
that ends: on its TERM, or as soon as its parent is gone (a SIGKILLed supervisor sends nothing; an orphan
is adopted by another process, so a changed parent PID means the supervisor has ended)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    from ..observability.scraping import scrape_while
    from ..runs import RunDir

    supervisor = os.getppid()
    run = RunDir(Path(sys.argv[1]))
    scrape_while(run.plan(), run.path, lambda: os.getppid() == supervisor)
