"""What `slurmserve scale` accepts (an autoscaled role, a count within its min and max, the local backend),
the counts the supervisor meets, and a removed worker's drain bound."""

from __future__ import annotations

import re

import pytest

from slurmserve.errors import UserError
from slurmserve.runs import SupervisorState
from slurmserve.runs.events import ScaleAsked
from slurmserve.runtime.scaling import (
    asked_counts,
    counts_met,
    decision_counts,
    decision_reason,
    drain_bound_s,
    unmeetable,
    wanted_counts,
)

from ..conftest import local_run, plan_of
from ..helpers import slurmserve_in_process


def test_counts_within_the_bounds_of_an_autoscaled_role_are_taken():
    plan = plan_of("mocker-disagg-autoscale", "local.yaml")
    assert asked_counts(plan, ["decode=3"]) == {"decode": 3}
    assert wanted_counts(plan, {}) == {"prefill": 1, "decode": 1}  # each role at its min until asked
    assert wanted_counts(plan, {"decode": 2}) == {"prefill": 1, "decode": 2}


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("decode=4", "'decode=4': decode takes a count from 1 to 3 (autoscale.decode)"),
        ("decode=0", "decode takes a count from 1 to 3"),
        ("decode=two", "decode takes a count from 1 to 3"),
        ("prefill=2", "'prefill=2': run test-run autoscales decode, not 'prefill'"),
        ("decoder=2", "autoscales decode, not 'decoder'"),
    ],
)
def test_a_count_outside_the_bounds_or_a_role_not_autoscaled_is_refused(assignment, expected):
    with pytest.raises(UserError, match=re.escape(expected)):
        asked_counts(plan_of("mocker-disagg-autoscale", "local.yaml"), [assignment])


def test_scale_is_refused_for_a_recipe_that_does_not_autoscale_and_asked_on_every_backend():
    with pytest.raises(UserError, match="its recipe mocker-disagg does not autoscale"):
        asked_counts(plan_of("mocker-disagg", "local.yaml"), ["decode=2"])
    assert asked_counts(plan_of("mocker-disagg-autoscale", "ssh-two-hosts.yaml"), ["decode=2"]) == {"decode": 2}


def test_a_removed_worker_drains_within_its_grace_period_and_a_margin():
    plan = plan_of("mocker-disagg-autoscale", "local.yaml")
    assert drain_bound_s(plan.process("decode-2")) == 35.0  # the recipe's 30 s grace, 5 s to exit


def test_a_planner_decision_becomes_counts_of_the_autoscaled_roles_within_their_bounds():
    plan = plan_of("mocker-disagg-autoscale", "local.yaml")
    assert decision_counts(plan, prefill=1, decode=2) == {"decode": 2}  # prefill is not autoscaled
    assert decision_counts(plan, prefill=-1, decode=7) == {"decode": 3}
    assert decision_counts(plan, prefill=-1, decode=-1) == {}  # nothing decided yet
    agg = plan_of("mocker-agg", "local.yaml", "autoscale.agg.min=1", "autoscale.agg.max=2")
    assert decision_counts(agg, prefill=-1, decode=2) == {"agg": 2}


def supervisor_state(actual: int, seen: int, startable: int | None = None) -> SupervisorState:
    """The state of a supervisor with `actual` decode workers ready, `seen` of them counted by the frontend."""
    counts = {"min": 1, "max": 3, "desired": 2, "actual": actual, "startable": startable}
    return SupervisorState.model_validate(
        {
            "updated": 0,
            "final": False,
            "pid": 1,
            "host": "h",
            "identity": {"pid": 1, "start_time": "1", "boot_id": "b", "pid_namespace": None},
            "heartbeat": 1,
            "verdict": "ready",
            "reason": "",
            "processes": {},
            "frontend": {"decode": [seen, 2]},
            "autoscale": {"decode": counts},
        }
    )


def test_a_decision_is_met_once_its_workers_are_ready_and_counted_by_the_frontend():
    assert counts_met(supervisor_state(2, 2), {"decode": 2})
    assert not counts_met(supervisor_state(2, 1), {"decode": 2})  # ready, not yet routed to


def test_a_decision_beyond_the_workers_that_can_still_start_is_unmeetable():
    """A standby worker that failed to start is never tried again: a decision that needs it is acknowledged
    as failed rather than waited for forever."""
    assert unmeetable(supervisor_state(1, 1, startable=2), {"decode": 3}) == "decode 3 asked, at most 2 can start"
    assert unmeetable(supervisor_state(1, 1, startable=2), {"decode": 2}) is None
    assert unmeetable(supervisor_state(1, 1), {"decode": 3}) is None  # an older state.json: not known
    assert unmeetable(None, {"decode": 3}) is None


def test_scale_asks_the_supervisor_through_the_run_directory_and_pauses_the_planner():
    run = local_run("mocker-disagg-autoscale", "scale-asks")
    assert slurmserve_in_process("scale", "scale-asks", "decode=2").returncode == 0
    assert run.scale_request() == {"decode": 2}
    assert [(e.role, e.count) for e in run.events() if isinstance(e, ScaleAsked)] == [("decode", 2)]
    paused = slurmserve_in_process("scale", "scale-asks", "--pause")
    assert paused.returncode == 0 and "the planner's decisions are not followed" in paused.stdout
    assert run.planner_paused
    assert slurmserve_in_process("scale", "scale-asks", "--resume").returncode == 0
    assert not run.planner_paused
    both = slurmserve_in_process("scale", "scale-asks", "--pause", "--resume")
    assert both.returncode == 2 and "--pause or --resume, not both" in both.stderr
    beyond = slurmserve_in_process("scale", "scale-asks", "decode=4")
    assert beyond.returncode == 2 and "decode takes a count from 1 to 3" in beyond.stderr
    assert run.scale_request() == {"decode": 2}


PLANNER_LOG = """\
2026-12-07T21:37:45.135179Z  INFO load_scaling._decode_easy_decision: Easy decode 18925:dp0: sched_kv=14890, util=0.014
2026-12-07T21:37:45.135210Z  INFO load_scaling._decode_easy_decision: Easy decode: engine(s) above scale-up threshold (0.01), scaling up to 2
2026-12-07T21:37:45.137342Z  INFO _core::planner: Updated scaling decision decision_id=4 num_prefill=None num_decode=Some(2)
2026-12-07T21:37:50.136008Z  INFO load_scaling._decode_easy_decision: Easy decode: all engines below scale-down threshold (0.005), -> 1
2026-12-07T21:37:50.137685Z  INFO _core::planner: Updated scaling decision decision_id=5 num_prefill=None num_decode=Some(1)
"""  # Dynamo 1.6.1's planner log, as a mock run wrote it


def test_a_decisions_reason_is_read_from_the_planners_log():
    assert decision_reason(PLANNER_LOG, 4) == "Easy decode: engine(s) above scale-up threshold (0.01), scaling up to 2"
    assert decision_reason(PLANNER_LOG, 5) == "Easy decode: all engines below scale-down threshold (0.005), -> 1"
    assert decision_reason(PLANNER_LOG, 6) is None  # not logged (yet)
    assert decision_reason("", 4) is None
