"""Pools behind Dynamo's global router for real (ai-dynamo 1.6.1's dynamo.global_router and dynamo.router),
locally and on the test cluster: requests with tight SLA targets are served by the fast pool and loose ones
by the slow pool (counted on each pool's workers' own /metrics); a SIGKILLed pool worker, local router
and global router are each restarted and every pool serves again; `status` shows each pool."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from slurmserve.health.pools import served_by
from slurmserve.planning.plan import Plan
from slurmserve.runs import open_run

from ..helpers import ClientLoop, events_of, kill_and_recover, slurmserve, status_of, wait_until
from ..observability.test_prometheus import local_pid
from ..runtime.test_recovery_slurm import task_pid

pytestmark = pytest.mark.slow

TIGHT = {"ttft_target": 100, "itl_target": 10}  # under the fast tier's limits (500 ms TTFT, 50 ms ITL)
LOOSE = {"ttft_target": 900, "itl_target": 90}


def ask(plan: Plan, targets: dict[str, float] | None, api: str = "chat/completions") -> int:
    body: dict = {"model": plan.model, "max_tokens": 4}
    body |= {"messages": [{"role": "user", "content": "hi"}]} if api == "chat/completions" else {"prompt": "hi"}
    if targets:
        body["nvext"] = {"router": targets}
    return httpx.post(f"{plan.endpoint}/v1/{api}", json=body, timeout=30.0).status_code


def served(plan: Plan) -> dict[str, float]:
    counts = {pool.name: served_by(plan, pool) for pool in plan.pools}
    assert all(count is not None for count in counts.values()), counts
    return counts  # type: ignore[return-value]


def check_routing(plan: Plan, requests: dict[str, tuple[dict[str, float] | None, int]]) -> None:
    """Send each pool its requests (targets, how many); each pool's workers served exactly those (give or
    take the supervisor's own canaries, one per pool every 10 s)."""
    before = served(plan)
    for targets, count in requests.values():
        assert all(ask(plan, targets) == 200 for _ in range(count))
    grew = {name: served(plan)[name] - before[name] for name in before}
    for name, (_, count) in requests.items():
        assert count <= grew[name] <= count + 2, grew


def every_pool_serves(plan: Plan) -> bool:
    before = served(plan)
    for pool in plan.pools:
        if ask(plan, pool.canary_targets) != 200:
            return False
    after = served(plan)
    return all(after[name] > before[name] for name in before)


def check_two_pools(run: str, pid_of: Callable[[str, str], int], *argv: str) -> None:
    result = slurmserve("submit", "--recipe", "mocker-two-pools", *argv, "--name", run, "--timeout", "180")
    assert result.returncode == 0, result.stdout + result.stderr
    plan = open_run(run).plan()
    check_routing(plan, {"fast": (TIGHT, 6), "slow": (LOOSE, 4)})
    check_routing(plan, {"slow": (None, 3)})  # no targets: the loosest tier
    # Dynamo 1.6.1's /v1/completions drops nvext.router: tight targets there reach the loosest tier too.
    before = served(plan)
    assert all(ask(plan, TIGHT, api="completions") == 200 for _ in range(3))
    assert 3 <= served(plan)["slow"] - before["slow"] <= 5 and served(plan)["fast"] - before["fast"] <= 2
    assert wait_until(lambda: set(status_of(run)["pool_canaries"]) == {"fast", "slow"}, 20)
    shown = slurmserve("status", run).stdout
    assert "pool fast: fast-agg-0 ready, fast-router ready" in shown and "pool slow:" in shown
    with ClientLoop(plan.endpoint, plan.model) as client:
        for process in ("fast-agg-0", "fast-router", "global-router"):
            kill_and_recover(run, process, pid_of(run, process), client)
            assert wait_until(lambda: every_pool_serves(plan), 30), f"a pool does not serve after {process} died"
    restarts = {p["name"]: p["restarts"] for p in status_of(run)["processes"]}
    killed = {"fast-agg-0", "fast-router", "global-router"}
    # Each restarted once; nothing else restarted with them (the global router and the frontend reconnect).
    assert restarts == {name: 1 if name in killed else 0 for name in restarts}, restarts
    failed = {e["process"] for e in events_of(run) if e["event"] == "state" and e["state"] == "failed"}
    assert {"fast-agg-0", "fast-router", "global-router"} <= failed
    assert wait_until(lambda: all(c["ok"] for c in status_of(run)["pool_canaries"].values()), 30)
    check_routing(plan, {"fast": (TIGHT, 3), "slow": (LOOSE, 3)})


def test_two_pools_route_by_sla_targets_and_heal_locally(cancel_later):
    cancel_later("pools-local")
    check_two_pools("pools-local", local_pid)
    assert slurmserve("cancel", "pools-local").returncode == 0


def test_disaggregated_pools_route_prefill_by_ttft_target(cancel_later):
    cancel_later("pools-disagg")
    result = slurmserve("submit", "--recipe", "mocker-two-pools-disagg", "--name", "pools-disagg", "--timeout", "180")
    assert result.returncode == 0, result.stdout + result.stderr
    plan = open_run("pools-disagg").plan()
    # Every request is one prefill hop (the pool its TTFT target picks) and one decode hop.
    before = served(plan)
    assert all(ask(plan, {"ttft_target": 100}) == 200 for _ in range(4))
    assert all(ask(plan, {"ttft_target": 900}) == 200 for _ in range(3))
    grew = {name: served(plan)[name] - before[name] for name in before}
    assert 4 <= grew["prefill-fast"] <= 6 and 3 <= grew["prefill-slow"] <= 5 and grew["decode"] >= 7, grew
    assert slurmserve("cancel", "pools-disagg").returncode == 0


def test_two_pools_on_the_test_cluster(slurm_lab, cancel_later):
    cancel_later("pools-lab")
    check_two_pools("pools-lab", task_pid, "--hosts", str(slurm_lab.hosts_file("slurm")))
    assert slurmserve("cancel", "pools-lab").returncode == 0
