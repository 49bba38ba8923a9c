"""Eight stagers at once against the local hub: each file must leave the hub once, and a second run not at all.

Serves a generated model of a few tens of MB (tests/hub_server.py) and runs `python -m
slurmserve.node.stage_model` as separate processes, as Slurm steps on eight nodes would:

1. one stager alone into an empty cache (the baseline wall time),
2. eight stagers at once into another empty cache: bytes served / model bytes (target 1.00),
3. eight stagers at once again into that cache: bytes served (target 0).

    python benchmarks/stage_concurrency.py [--stagers 8] [--shards 4] [--shard-mb 8] [--cache-dir DIR]

`--cache-dir` puts the caches on a filesystem of your choice (a shared one, say); default: a temp dir.
Wall times include each stager's interpreter start-up: run 3 (one metadata call each, nothing else)
is that floor for N processes on this machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.hub_server import FakeRepo, HubServer, tiny_model_files

MODEL = "bench/model"


def run_stagers(count: int, cache: Path) -> tuple[float, list[float]]:
    """Start `count` stagers at once; (wall time until the last is done, each one's own wall time)."""
    command = [
        sys.executable,
        "-m",
        "slurmserve.node.stage_model",
        "--repo",
        MODEL,
        "--revision",
        "main",
        "--cache",
        str(cache),
    ]
    start = time.perf_counter()
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    times = []
    for proc in procs:
        _out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"a stager failed (exit {proc.returncode}):\n{err}")
        times.append(time.perf_counter() - start)
    return time.perf_counter() - start, times


def report(label: str, hub: HubServer, wall: float, times: list[float]) -> None:
    served = hub.bytes_served
    print(
        f"{label:<34} {served / 1e6:9.1f} MB served  {served / hub.model_bytes:5.2f} x model  "
        f"wall {wall:5.2f} s  (stagers done {min(times):.2f}-{max(times):.2f} s)  requests {hub.requests}"
    )
    hub.reset_counts()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stagers", type=int, default=8)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--shard-mb", type=int, default=8)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()

    repo = FakeRepo(tiny_model_files(shards=args.shards, shard_bytes=args.shard_mb << 20))
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    with (
        tempfile.TemporaryDirectory(dir=args.cache_dir, prefix="stage-bench-") as scratch,
        HubServer({MODEL: repo}) as hub,
    ):
        os.environ["HF_ENDPOINT"] = hub.endpoint
        print(f"model {MODEL}: {len(repo.files)} files, {hub.model_bytes / 1e6:.1f} MB; caches under {scratch}")
        report("1 stager, empty cache (baseline)", hub, *run_stagers(1, Path(scratch) / "baseline"))
        cache = Path(scratch) / "shared"
        report(f"{args.stagers} stagers at once, empty cache", hub, *run_stagers(args.stagers, cache))
        report(f"{args.stagers} stagers at once, staged cache", hub, *run_stagers(args.stagers, cache))


if __name__ == "__main__":
    main()
