"""`python -m slurmserve.node.kvcheck PLAN_JSON`: the KV-path preflight, run inside the Slurm job (srun
steps) or by the SSH driver: every prefill->decode pair of the plan, a line each; exit 1 if any failed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..backends import backend_for
from ..kvpath.checks import checks_for_plan
from ..kvpath.perftest import PERFTEST, RUN_TIMEOUT_S
from ..kvpath.transfers import CheckResult, failures, run_checks
from ..planning.plan import Plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slurmserve.node.kvcheck", description=__doc__)
    parser.add_argument("plan", type=Path, help="the run's plan.json")
    parser.add_argument("--via", choices=("slurm", "ssh"), help="how to reach the nodes (default: the plan's backend)")
    parser.add_argument("--latency", action="store_true", help="also run an 8-byte latency test per pair")
    parser.add_argument(
        "--perftest", help=f"ucx_perftest on the nodes (default: the container's, else {PERFTEST} on PATH)"
    )
    parser.add_argument(
        "--timeout", type=float, default=RUN_TIMEOUT_S, help="seconds one transfer may take, launch included"
    )
    args = parser.parse_args(argv)

    plan = Plan.model_validate_json(args.plan.read_text())
    checks = checks_for_plan(plan)
    backend = backend_for(args.via or plan.backend)
    if not checks or backend.traits.runs_on_this_machine:
        print("kvpath: no prefill -> decode pair crosses nodes; nothing to check", flush=True)
        return 0

    def report(result: CheckResult) -> None:
        print(f"kvpath: {result.line()}", file=sys.stdout if result.ok else sys.stderr, flush=True)

    results = run_checks(
        checks,
        # Inside the plan's container, where it has one: the UCX the workers use.
        backend.runners(plan, job_name="kvpath", container=True),
        on_result=report,
        latency=args.latency,
        perftest=args.perftest or (plan.container.ucx_perftest if plan.container else PERFTEST),
        timeout_s=args.timeout,
    )
    problems = failures(results)
    if problems:
        print(
            f"kvpath: {sum(not r.ok for r in results)} of {len(results)} KV path(s) failed; do not start the workers",
            file=sys.stderr,
            flush=True,
        )
        return 1
    print(f"kvpath: all {len(results)} KV path(s) passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
