"""`slurmserve scale` over SSH on the test cluster's hosts: a standby decode worker is started by its host's
launch script, serves, and is removed again (SIGTERM to its process group on its host, drained), while the
supervisor runs on this machine."""

from __future__ import annotations

import pytest

from slurmserve.runs import open_run
from slurmserve.transport.procfs import group_members
from slurmserve.waiting import wait_until

from ..helpers import decode_at, scaled_events, slurmserve, status_of

pytestmark = pytest.mark.slow

RUN = "ssh-autoscale"


def test_a_standby_worker_starts_on_its_host_serves_and_is_stopped_again(slurm_lab, cancel_later):
    cancel_later(RUN)
    hosts = str(slurm_lab.hosts_file("ssh"))
    result = slurmserve("submit", "--recipe", "mocker-disagg-autoscale", "--hosts", hosts, "--name", RUN)
    assert result.returncode == 0, result.stdout + result.stderr
    for args in (["--pause"], ["decode=2"]):
        scale = slurmserve("scale", RUN, *args)
        assert scale.returncode == 0, scale.stderr
    assert wait_until(lambda: decode_at(RUN, 2), timeout=60, poll_s=1.0), status_of(RUN)
    added = open_run(RUN).handle().processes["decode-1"]
    assert added.host == open_run(RUN).plan().process("decode-1").host and group_members(added.pgid)

    assert slurmserve("scale", RUN, "decode=1").returncode == 0
    assert wait_until(lambda: not group_members(added.pgid), timeout=60, poll_s=1.0)  # the lab shares our PIDs
    assert wait_until(lambda: decode_at(RUN, 1), timeout=30, poll_s=1.0), status_of(RUN)

    # Its stop is recorded a moment after its group is gone (the stop's next poll, then the supervisor's tick).
    assert wait_until(lambda: scaled_events(RUN)[-1] == ("decode-1", "remove", "stopped"), timeout=15, poll_s=0.5), (
        scaled_events(RUN)
    )
    assert scaled_events(RUN)[-2] == ("decode-1", "remove", "leaving") and all(
        o != "failed" for *_, o in scaled_events(RUN)
    ), scaled_events(RUN)
