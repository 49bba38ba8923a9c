"""`slurmserve scale` on the local backend, for real (mocker-disagg-autoscale: decode between 1 and 3, GPUs
reserved for 3): standby decode workers start in place and serve, counted by the frontend and by their own
metrics; scaling down removes the latest added one while it streams, and every stream it had finishes."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from slurmserve.backends.base import start_supervisor
from slurmserve.runs import open_run
from slurmserve.transport.procfs import pid_alive
from slurmserve.waiting import wait_until

from ..helpers import decode_at, event_time, events_of, scaled_events, slurmserve, status_of
from .streams import TOKENS, Outcome, in_flight, stream

pytestmark = pytest.mark.slow

RUN = "scale-by-hand"
STREAMS = 9  # round-robin over 3 decode workers: 3 on the one removed


def scale(*counts: str) -> None:
    result = slurmserve("scale", RUN, *counts)
    assert result.returncode == 0, result.stdout + result.stderr


def wait_for_decode(count: int) -> dict:
    """Until `count` decode workers are ready, asked, and counted by the frontend; the status then."""

    seen: list[dict] = []

    def settled() -> bool:
        seen.append(status_of(RUN))
        # A supervisor just started has not said yet: no counts.
        counts, frontend = seen[-1].get("autoscale", {}).get("decode"), seen[-1].get("frontend", {}).get("decode")
        return bool(counts) and counts["actual"] == counts["desired"] == count and frontend == [count, count]

    assert wait_until(settled, timeout=90, poll_s=1.0), seen[-1]
    return seen[-1]


def test_scaling_by_hand_starts_standby_workers_and_drains_the_latest_added(cancel_later):
    cancel_later(RUN)
    result = slurmserve(
        "submit", "--recipe", "mocker-disagg-autoscale", "--name", RUN, "--set", "mocker.speedup_ratio=1"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    plan = open_run(RUN).plan()
    assert [p.name for p in plan.processes if p.standby] == ["decode-1", "decode-2"]

    scale("--pause")  # by hand only: the planner would take an idle deployment back to its min
    scale("decode=3")
    status = wait_for_decode(3)
    ready = {p["name"]: p["state"] for p in status["processes"]}
    assert ready["decode-1"] == ready["decode-2"] == "ready"

    # Streams spread over the three; the latest added (decode-2) is removed while it streams.
    outcomes: list[Outcome] = []
    clients = [threading.Thread(target=stream, args=(status["endpoint"], outcomes)) for _ in range(STREAMS)]
    for client in clients:
        client.start()
    decode_2 = plan.process("decode-2")
    metrics = f"http://{plan.host_node(decode_2).address}:{decode_2.ports['system']}/metrics"
    assert wait_until(lambda: in_flight(metrics) >= 3, timeout=30, poll_s=0.2), in_flight(metrics)
    scale("decode=2")
    for client in clients:
        client.join(timeout=150)
    assert len(outcomes) == STREAMS
    assert all(code == 200 and finish == "length" for code, _, finish, _ in outcomes), outcomes
    assert all(chunks >= TOKENS for _, chunks, _, _ in outcomes), [chunks for _, chunks, _, _ in outcomes]
    # decode-2 still streamed when it was taken out: at least its three streams ended after that.
    leaving = next(e for e in events_of(RUN) if e["event"] == "scaled" and e["outcome"] == "leaving")
    assert sum(ended > event_time(leaving) for *_, ended in outcomes) >= 3, (outcomes, leaving)
    status = wait_for_decode(2)
    assert "decode-2" not in {p["name"] for p in status["processes"]}

    # A supervisor killed and started again adopts decode-1, which the first one added: counted, not
    # started twice, and still the one the next scale-down removes.
    run = open_run(RUN)
    supervisor = run.pid_record("supervisor")
    assert supervisor is not None
    os.kill(supervisor[0], signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(*supervisor), timeout=10)
    start_supervisor(run)
    status = wait_for_decode(2)
    decode_1 = next(p for p in status["processes"] if p["name"] == "decode-1")
    assert decode_1["state"] == "ready" and decode_1["restarts"] == 0, decode_1

    scale("decode=1")
    wait_for_decode(1)

    # Counted out once it leaves discovery; its stop is recorded after its drain. decode-2's may come from
    # either supervisor (killed while decode-2 still drained, the second finishes its stop), so after
    # decode-1's removal began: each stop follows its own leaving, the latest added leaves first.
    removals = [(name, "remove", outcome) for name in ("decode-2", "decode-1") for outcome in ("leaving", "stopped")]
    assert wait_until(lambda: set(removals) <= set(scaled_events(RUN)), timeout=60, poll_s=0.5), scaled_events(RUN)
    scaled = scaled_events(RUN)
    added = {("decode-1", "add", "started"), ("decode-2", "add", "started")}
    added |= {("decode-1", "add", "serving"), ("decode-2", "add", "serving")}
    assert set(scaled[:4]) == added, scaled
    assert sorted(scaled[4:]) == sorted(removals), scaled  # each once
    order = scaled.index
    assert order(removals[0]) < order(removals[1]) and order(removals[2]) < order(removals[3]), scaled
    assert order(removals[0]) < order(removals[2]), scaled


PLANNED = "scale-by-planner"


def test_the_planner_scales_decode_up_under_load_and_back_down_after_it(cancel_later):
    """Dynamo's planner (load-based) decides from the mock workers' forward-pass metrics; its thresholds set
    low enough for the tiny model's KV cache (1 % of 1M tokens up, 0.5 % down) that 9 streams of 2048
    tokens cross them. Its decisions are followed and acknowledged; every stream finishes whole. Killed
    once before the load, the planner is restarted in place by the supervisor."""
    cancel_later(PLANNED)
    sets = ["mocker.speedup_ratio=1", "autoscale.planner.decode_scale_up_kv_rate=1"]
    sets += ["autoscale.planner.decode_scale_down_kv_rate=0.5"]
    args = [word for assignment in sets for word in ("--set", assignment)]
    result = slurmserve("submit", "--recipe", "mocker-disagg-autoscale", "--name", PLANNED, *args)
    assert result.returncode == 0, result.stdout + result.stderr

    def planner_ready() -> bool:
        return any(p["name"] == "planner" and p["state"] == "ready" for p in status_of(PLANNED)["processes"])

    assert wait_until(planner_ready, timeout=120, poll_s=1.0), status_of(PLANNED)
    # The planner crashes: the supervisor restarts it in place, and goes on following it.
    planner = open_run(PLANNED).pid_record("planner")
    assert planner is not None
    os.killpg(planner[0], signal.SIGKILL)

    def planner_restarted() -> bool:
        return any(p["name"] == "planner" and p["restarts"] == 1 for p in status_of(PLANNED)["processes"])

    assert wait_until(lambda: planner_restarted() and planner_ready(), timeout=60, poll_s=1.0), status_of(PLANNED)
    endpoint = status_of(PLANNED)["endpoint"]
    outcomes: list[Outcome] = []
    load_until = time.time() + 40

    def client() -> None:
        while time.time() < load_until:
            stream(endpoint, outcomes)

    clients = [threading.Thread(target=client) for _ in range(STREAMS)]
    for each in clients:
        each.start()

    assert wait_until(lambda: decode_at(PLANNED, 2) or decode_at(PLANNED, 3), timeout=60, poll_s=1.0), status_of(
        PLANNED
    )
    for each in clients:
        each.join(timeout=150)
    assert outcomes and all(code == 200 and finish == "length" for code, _, finish, _ in outcomes), outcomes
    assert wait_until(lambda: decode_at(PLANNED, 1), timeout=90, poll_s=1.0), status_of(PLANNED)

    def each_decision_acknowledged() -> bool:
        events = [e["event"] for e in events_of(PLANNED)]
        return events.count("planner acknowledged") == events.count("planner decided")

    # planner-link acknowledges a decision at its first poll after the status shows it met: a moment after.
    wait_until(each_decision_acknowledged, timeout=15, poll_s=0.5)
    events = events_of(PLANNED)
    decided = [e["counts"]["decode"] for e in events if e["event"] == "planner decided"]
    acknowledged = [e["decision_id"] for e in events if e["event"] == "planner acknowledged"]
    assert max(decided) >= 2 and decided[-1] == 1, decided
    reasons = [e["reason"] for e in events if e["event"] == "planner decided"]
    assert all(reason and "threshold" in reason for reason in reasons), reasons  # from the planner's own log
    assert len(acknowledged) == len(decided), (decided, acknowledged)
    last = status_of(PLANNED)["planner"]
    assert last["counts"] == {"decode": 1} and last["acknowledged"], last
