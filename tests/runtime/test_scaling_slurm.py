"""Autoscaling on the real test cluster (mocker-disagg-autoscale, `reserved`: the job holds GPUs for 3 decode
workers): Dynamo's planner, inside the job, scales decode up under a client load; its standby workers start
as srun steps of the allocation and serve. Then, by hand, all three, and the latest added one removed while
it streams (SIGTERM to its step: it leaves discovery and drains); followed again with the load gone, the
planner takes decode back to its min. No stream fails; cancel leaves nothing."""

from __future__ import annotations

import threading
import time

import pytest

from slurmserve.runs import open_run
from slurmserve.transport.slurm import jobs_named, steps_named
from slurmserve.waiting import wait_until

from ..backends.test_slurm import assert_cancel_leaves_nothing
from ..helpers import completion_tokens, decode_at, events_of, scaled_events, slurmserve, status_of
from .streams import Outcome, all_whole, in_flight, stream

pytestmark = pytest.mark.slow

RUN = "lab-autoscale"
STREAMS = 9
# As in test_scaling_local: thresholds low enough for the tiny model's KV cache that 9 long streams cross them.
SETS = ["mocker.speedup_ratio=1", "autoscale.planner.decode_scale_up_kv_rate=1"]
SETS += ["autoscale.planner.decode_scale_down_kv_rate=0.5"]


def test_the_planner_scales_decode_in_the_allocation_and_a_removed_worker_drains(slurm_lab, cancel_later):
    cancel_later(RUN)
    hosts = str(slurm_lab.hosts_file("slurm"))
    sets = [word for assignment in SETS for word in ("--set", assignment)]
    submitted = slurmserve("submit", "--recipe", "mocker-disagg-autoscale", "--hosts", hosts, *sets, "--name", RUN)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    # Ready once the planner, started last, answers too.
    assert wait_until(lambda: status_of(RUN)["verdict"] == "ready", timeout=60, poll_s=1.0), status_of(RUN)
    status = status_of(RUN)
    plan = open_run(RUN).plan()
    job_id = open_run(RUN).handle().job_id
    assert not steps_named(job_id, "decode-1") and not steps_named(job_id, "decode-2")  # standby: not started

    outcomes: list[Outcome] = []
    load_until = time.time() + 600  # until the by-hand removal below is over

    def client() -> None:
        while time.time() < load_until:
            stream(status["endpoint"], outcomes)

    clients = [threading.Thread(target=client) for _ in range(STREAMS)]
    for each in clients:
        each.start()
    try:
        assert wait_until(lambda: decode_at(RUN, 2) or decode_at(RUN, 3), timeout=90, poll_s=1.0), status_of(RUN)
        # By hand from here: all three, then the latest added (decode-2) removed while it streams.
        for args in (["--pause"], ["decode=3"]):
            scale = slurmserve("scale", RUN, *args)
            assert scale.returncode == 0, scale.stderr
        assert wait_until(lambda: decode_at(RUN, 3), timeout=60, poll_s=1.0), status_of(RUN)
        latest = plan.process("decode-2")
        assert steps_named(job_id, latest.name)  # an srun step of the allocation
        metrics = f"http://{plan.host_node(latest).address}:{latest.ports['system']}/metrics"
        assert wait_until(lambda: in_flight(metrics) >= 3, timeout=40, poll_s=0.2), in_flight(metrics)
        scale = slurmserve("scale", RUN, "decode=2")
        assert scale.returncode == 0, scale.stderr
        assert wait_until(lambda: not steps_named(job_id, latest.name), timeout=60, poll_s=1.0)
    finally:
        load_until = 0
        for each in clients:
            each.join(timeout=150)
    assert all_whole(outcomes), outcomes

    # Followed again, the planner takes the idle deployment back to its min.
    assert slurmserve("scale", RUN, "--resume").returncode == 0
    assert wait_until(lambda: decode_at(RUN, 1), timeout=120, poll_s=1.0), status_of(RUN)

    # Counted out when it leaves discovery; its stop is recorded once it drained.
    assert wait_until(lambda: ("decode-1", "remove", "stopped") in scaled_events(RUN), timeout=60, poll_s=1.0), (
        scaled_events(RUN)
    )
    assert ("decode-2", "remove", "stopped") in scaled_events(RUN) and not steps_named(job_id, "decode-1"), (
        scaled_events(RUN)
    )
    decided = [e["counts"]["decode"] for e in events_of(RUN) if e["event"] == "planner decided"]
    assert max(decided) >= 2 and decided[-1] == 1, decided
    assert_cancel_leaves_nothing(RUN)


ELASTIC = "lab-elastic"


def test_an_elastic_worker_is_a_slurm_job_of_its_own_while_it_serves(slurm_lab, cancel_later):
    """`capacity: elastic`: the deployment's job holds its min; `scale decode=2` submits decode-1's own job
    (a second job in squeue) whose worker joins the running deployment and serves; `scale decode=1` drains
    it and its job ends, its GPUs back to the cluster; cancel ends a worker's job with the deployment."""
    cancel_later(ELASTIC)
    hosts = str(slurm_lab.hosts_file("slurm"))
    sets = ["--set", "autoscale.capacity=elastic"]
    submitted = slurmserve("submit", "--recipe", "mocker-disagg-autoscale", "--hosts", hosts, *sets, "--name", ELASTIC)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    main_job = open_run(ELASTIC).handle().job_id
    worker_job = f"slurmserve-{ELASTIC}+decode-1"
    assert not jobs_named(worker_job)
    for args in (["--pause"], ["decode=2"]):
        scale = slurmserve("scale", ELASTIC, *args)
        assert scale.returncode == 0, scale.stderr

    assert wait_until(lambda: jobs_named(worker_job), timeout=30, poll_s=0.5)
    (job,) = jobs_named(worker_job)
    assert job != main_job
    assert wait_until(lambda: decode_at(ELASTIC, 2), timeout=90, poll_s=1.0), status_of(ELASTIC)
    assert completion_tokens(status_of(ELASTIC)["endpoint"], "tiny-mock") > 0

    assert slurmserve("scale", ELASTIC, "decode=1").returncode == 0
    assert wait_until(lambda: not jobs_named(worker_job), timeout=60, poll_s=1.0)
    assert wait_until(lambda: decode_at(ELASTIC, 1), timeout=30, poll_s=1.0), status_of(ELASTIC)

    assert wait_until(lambda: ("decode-1", "remove", "stopped") in scaled_events(ELASTIC), timeout=30, poll_s=1.0), (
        scaled_events(ELASTIC)
    )
    assert ("decode-1", "add", "serving") in scaled_events(ELASTIC), scaled_events(ELASTIC)

    # Added again, then the whole deployment cancelled: its worker's job ends with it.
    assert slurmserve("scale", ELASTIC, "decode=2").returncode == 0
    assert wait_until(lambda: decode_at(ELASTIC, 2), timeout=90, poll_s=1.0), status_of(ELASTIC)
    assert_cancel_leaves_nothing(ELASTIC)
    assert not jobs_named(worker_job)
