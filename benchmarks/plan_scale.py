"""Plan + render time at cluster scale: 128 and 1,024 nodes of 8 GPUs, filled with gpt-oss-120b workers.

Every node is used: N prefill and N decode TP4 workers (2N workers, ~2N+2 processes). Prints the best
of several runs for each size and their ratio (targets: <= 1 s at 1,024 nodes, ratio <= 10).

    python benchmarks/plan_scale.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

from slurmserve.backends import traits_for
from slurmserve.config.hosts import HostEntry, Hosts, NodeSpec
from slurmserve.config.recipe import load_recipe
from slurmserve.planning.planner import make_plan
from slurmserve.render.scripts import render_script

SIZES = (128, 1024)


def cluster(nodes: int) -> Hosts:
    entries = [HostEntry(name=f"gpu{i:04d}", address=f"10.{i // 250}.{i % 250}.1") for i in range(nodes)]
    return Hosts(backend="slurm", hosts=entries, node=NodeSpec(gpus=8), model_cache="/shared/models")


def plan_and_render_seconds(nodes: int) -> tuple[float, int]:
    recipe = load_recipe("gpt-oss-120b-disagg", [f"prefill.replicas={nodes}", f"decode.replicas={nodes}"])
    hosts = cluster(nodes)
    start = time.perf_counter()
    traits = traits_for(hosts.backend)
    plan = make_plan(
        recipe, hosts, traits, run_name="scale", run_dir="/shared/runs/scale", python="/opt/venv/bin/python"
    )
    render_script(plan, traits)
    return time.perf_counter() - start, len(plan.processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    plan_and_render_seconds(8)  # warm up imports and the template cache
    best = {}
    for nodes in SIZES:
        runs = [plan_and_render_seconds(nodes) for _ in range(args.repeat)]
        best[nodes] = min(seconds for seconds, _ in runs)
        print(
            f"{nodes:>5} nodes x 8 GPUs: {runs[0][1]:>5} processes, "
            f"plan+render {best[nodes]:.3f} s (best of {args.repeat})"
        )
    ratio = best[SIZES[1]] / best[SIZES[0]]
    print(f"ratio {SIZES[1]}/{SIZES[0]} nodes: {ratio:.2f} (node ratio {SIZES[1] // SIZES[0]}; target <= 10)")
    print(f"target <= 1 s at {SIZES[1]} nodes: {'met' if best[SIZES[1]] <= 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
