"""`python -m slurmserve.node.stage_model`: stage a model into the shared cache (what a Slurm step runs)."""

from __future__ import annotations

import argparse
import logging
import sys

from huggingface_hub import constants

from ..config.recipe import ModelSpec
from ..errors import UserError
from ..modelcache.lock import STALE_AFTER_S
from ..modelcache.snapshots import MAX_PARALLEL_FILES
from ..modelcache.staging import fetch_to_cache


def main(argv: list[str] | None = None) -> int:
    """`python -m slurmserve.node.stage_model`: what a Slurm step (or a submitit job) runs; prints the snapshot path."""
    parser = argparse.ArgumentParser(prog="python -m slurmserve.node.stage_model", description=main.__doc__)
    parser.add_argument("--repo", required=True, help="Hugging Face repo id, ORG/NAME")
    parser.add_argument("--revision", default=None, help="branch, tag or commit sha (default: main)")
    parser.add_argument("--allow", action="append", default=[], help="glob of files to fetch (repeatable)")
    parser.add_argument("--ignore", action="append", default=[], help="glob of files to skip (repeatable)")
    parser.add_argument("--cache", required=True, help="model cache root (the hosts file's model_cache)")
    parser.add_argument(
        "--stale-after",
        type=float,
        default=STALE_AFTER_S,
        help="seconds a lock holder whose heartbeat stands still is waited for",
    )
    parser.add_argument("--parallel", type=int, default=MAX_PARALLEL_FILES, help="files fetched at once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("slurmserve.modelcache").setLevel(logging.INFO)
    # A stage talks to the hub about the model only: no daily fetch of huggingface_hub's agent registry.
    constants.HF_HUB_DISABLE_TELEMETRY = True
    model = ModelSpec(repo=args.repo, revision=args.revision, allow=args.allow, ignore=args.ignore)
    try:
        print(fetch_to_cache(model, args.cache, stale_after=args.stale_after, parallel=max(1, args.parallel)))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
