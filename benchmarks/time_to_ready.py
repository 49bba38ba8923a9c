"""Time to ready on the lab Slurm cluster, and the share of it that is slurmserve's own overhead.

Submits mocker-disagg (prefill and decode on different nodes, etcd discovery) to the test cluster of
tests/cluster/lab.py, bringing it up if needed, and watches every milestone from this host, polling
every 10 ms:

    submit -> sbatch accepted -> job RUNNING -> etcd ready -> workers ready -> frontend up -> first 200

Slurm's scheduling is sbatch -> RUNNING. Each component's own start-up is from its process start
(each srun task records its wall-clock start) to its readiness as seen from here. What is left of the
total is overhead: slurmserve's (planning, preflight, readiness probes, stage hand-offs) plus
srun's step launches, which are shown on their own. Target: slurmserve's overhead <= 1 s.

    python benchmarks/time_to_ready.py [--runs 3] [--before CHECKOUT]

--before runs the same, alternating run by run, from another checkout (e.g. `git worktree add
/tmp/before HEAD~1`: slurmserve before the job's node preflight), and prints both side by side with the
difference of the medians (target for the node preflight: at most 0.3 s more).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab_session import lab_session  # also puts the repository on sys.path

from slurmserve.runs import open_run
from slurmserve.transport.procfs import task_records

POLL_S = 0.01


def first_time(check, deadline: float) -> float:
    while time.time() < deadline:
        if check():
            return time.time()
        time.sleep(POLL_S)
    raise TimeoutError("milestone not reached")


def http_200(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def completion_200(endpoint: str, model: str) -> bool:
    try:
        response = httpx.post(
            f"{endpoint}/v1/chat/completions",
            timeout=5,
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )
        return response.status_code == 200 and response.json()["usage"]["completion_tokens"] > 0
    except (httpx.HTTPError, KeyError, ValueError):
        return False


def job_running(job_id: str) -> bool:
    return (
        subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()
        == "RUNNING"
    )


def event_time(run, name: str) -> float:
    return next(datetime.fromisoformat(e.time).timestamp() for e in run.events() if e.event == name)


def one_run(hosts: str, name: str, checkout: Path = REPO) -> dict:
    """One submit -> first completion of mocker-disagg, with slurmserve from `checkout` (the CLI and,
    through the environment sbatch passes on, the job's own helpers)."""
    # From the checkout's own folder: `python -m` puts the current folder first on sys.path, before
    # PYTHONPATH (which the job's own helpers, started elsewhere, import from).
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    submitted_at = time.time()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "slurmserve",
            "submit",
            "--recipe",
            "mocker-disagg",
            "--hosts",
            hosts,
            "--name",
            name,
            "--no-wait",
        ],
        check=True,
        capture_output=True,
        env=env,
        cwd=checkout,
    )
    run = open_run(name)
    plan, deadline = run.plan(), time.time() + 180
    try:
        sbatch_at = event_time(run, "job submitted")
        running_at = first_time(lambda: job_running(run.handle().job_id), deadline)
        ready_at = {}
        for process in plan.processes:
            check = (
                (lambda p=process: completion_200(plan.endpoint, plan.model))
                if process.role == "frontend"
                else (lambda p=process: http_200(p.ready_url))
            )
            ready_at[process.name] = first_time(check, deadline)
        started_at = {
            p.name: min(r.started_at for r in task_records(run.path / "pids" / f"{p.name}.tasks"))
            for p in plan.processes
        }
    finally:
        subprocess.run([sys.executable, "-m", "slurmserve", "cancel", name], capture_output=True, env=env, cwd=checkout)
    workers = [p.name for p in plan.processes if p.is_worker]
    own = {
        "etcd": ready_at["etcd"] - started_at["etcd"],
        "workers": max(ready_at[w] - started_at[w] for w in workers),
        "frontend": ready_at["frontend"] - started_at["frontend"],
    }
    total = ready_at["frontend"] - submitted_at
    scheduling = running_at - sbatch_at
    overhead = total - scheduling - sum(own.values())
    # Hand-offs: a stage ready -> the next stage's first process started (probe latency + srun step launch).
    handoffs = {
        "job start -> etcd started": started_at["etcd"] - running_at,
        "etcd ready -> workers started": min(started_at[w] for w in workers) - ready_at["etcd"],
        "workers ready -> frontend started": started_at["frontend"] - max(ready_at[w] for w in workers),
    }
    return {
        "total": total,
        "before sbatch": sbatch_at - submitted_at,
        "scheduling": scheduling,
        "own": own,
        "handoffs": handoffs,
        "overhead": overhead,
        "milestones": {
            "sbatch": sbatch_at - submitted_at,
            "running": running_at - submitted_at,
            "etcd ready": ready_at["etcd"] - submitted_at,
            "workers ready": max(ready_at[w] for w in workers) - submitted_at,
            "first 200": ready_at["frontend"] - submitted_at,
        },
    }


def median_of(results: list[dict]) -> dict:
    return sorted(results, key=lambda r: r["total"])[len(results) // 2]


def report(label: str, results: list[dict]) -> dict:
    for i, result in enumerate(results):
        print(f"{label} run {i}: " + ", ".join(f"{k} {v:.2f} s" for k, v in result["milestones"].items()))
    median = median_of(results)
    handoffs = sum(median["handoffs"].values())
    print(f"\n{label}: median run (times from `slurmserve submit`): total {median['total']:.2f} s")
    print(f"  before sbatch (plan, preflight: sinfo, sbatch --test-only): {median['before sbatch']:.2f} s")
    print(f"  Slurm scheduling (sbatch -> RUNNING):                        {median['scheduling']:.2f} s")
    print("  components' own start-up: " + ", ".join(f"{k} {v:.2f} s" for k, v in median["own"].items()))
    print(
        "  stage hand-offs (node preflight, probe latency, srun step launch): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in median["handoffs"].items())
    )
    print(
        f"  overhead beyond scheduling and start-up: {median['overhead']:.2f} s "
        f"(of which srun step launches and probes at hand-offs {handoffs:.2f} s); target <= 1 s: "
        f"{'met' if median['overhead'] <= 1.0 else 'MISSED'}\n"
    )
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", type=Path, help="a checkout to compare with, run alternately with this one")
    args = parser.parse_args()
    now: list[dict] = []
    before: list[dict] = []
    with lab_session() as cluster:
        hosts = str(cluster.hosts_file("slurm"))
        for i in range(args.runs):
            if args.before:
                before.append(one_run(hosts, f"bench-before-{i}", args.before.resolve()))
            now.append(one_run(hosts, f"bench-{i}"))
    report("this checkout", now)
    if args.before:
        report(f"before ({args.before})", before)
        start = "job start -> etcd started"
        print("side by side (medians)      before   this checkout   difference")

        def middle(results: list[dict], figure) -> float:
            return sorted(map(figure, results))[len(results) // 2]

        for label, figure in (
            ("submit -> first completion", lambda r: r["total"]),
            ("  less Slurm's scheduling", lambda r: r["total"] - r["scheduling"]),
            (start, lambda r: r["handoffs"][start]),
        ):
            then, here = middle(before, figure), middle(now, figure)
            print(f"  {label:<27} {then:6.2f} s  {here:6.2f} s        {here - then:+.2f} s")
    print(json.dumps(now + before, indent=1) if os.environ.get("VERBOSE") else "", end="")


if __name__ == "__main__":
    main()
