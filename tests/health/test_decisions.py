"""The supervisor's decisions as pure functions: restart backoff, the window, the budget, fail_fast,
per-role frontend counts, a failed canary turning the verdict degraded, states without a supervisor."""

from __future__ import annotations

from slurmserve.config.recipe import RestartPolicy
from slurmserve.health.decisions import (
    SILENT_TICKS,
    DeploymentView,
    Observation,
    RestartKind,
    Watch,
    abandoned,
    decide_restart,
    decide_verdict,
    direct_state,
    direct_verdict,
    frontend_counts,
    judge_answer,
    next_state,
    nothing_left,
)
from slurmserve.runs import CanaryResult, ProcessState, Verdict

POLICY = RestartPolicy(max_restarts=3, backoff_s=1.0, window_s=600.0)
NOW = 10_000.0


def view(**changes) -> DeploymentView:
    values = {
        "frontend": {"decode": (1, 1)},
        "model_listed": True,
        "canary": None,
        "node_problems": {},
        "model": "m",
        "endpoint": "http://h:1",
    }
    return DeploymentView(**(values | changes))


def ready_watches(*names: str) -> dict[str, Watch]:
    return {name: Watch(since=0.0, state=ProcessState.READY, served=True) for name in names}


# -- restarts ---------------------------------------------------------------------------------------


def test_backoff_doubles_with_each_restart_in_the_window():
    delays = []
    restarts: list[float] = []
    for _ in range(3):
        decision = decide_restart(True, restarts, POLICY, NOW)
        assert decision.kind == RestartKind.RESTART
        delays.append(decision.delay_s)
        restarts.append(NOW)
    assert delays == [1.0, 2.0, 4.0]


def test_the_budget_spent_within_the_window_gives_up():
    decision = decide_restart(True, [NOW - 30, NOW - 20, NOW - 10], POLICY, NOW)
    assert decision.kind == RestartKind.GIVE_UP and decision.recent == 3 and not decision.cancel_deployment


def test_restarts_older_than_the_window_no_longer_count():
    decision = decide_restart(True, [NOW - 700, NOW - 650, NOW - 10], POLICY, NOW)
    assert decision.kind == RestartKind.RESTART and decision.recent == 1 and decision.delay_s == 2.0


def test_fail_fast_cancels_the_deployment_once_the_budget_is_spent():
    policy = POLICY.model_copy(update={"fail_fast": True, "max_restarts": 1})
    assert decide_restart(True, [NOW - 1], policy, NOW).cancel_deployment


def test_a_process_that_never_served_is_a_start_up_failure_not_restarted():
    assert decide_restart(False, [], POLICY, NOW).kind == RestartKind.STARTUP_FAILURE


def test_a_restarted_process_that_dies_before_serving_again_is_still_restarted():
    assert decide_restart(False, [NOW - 5], POLICY, NOW).kind == RestartKind.RESTART


def test_no_restarts_allowed_gives_up_at_once():
    policy = POLICY.model_copy(update={"max_restarts": 0})
    assert decide_restart(True, [], policy, NOW).kind == RestartKind.GIVE_UP


# -- process states -------------------------------------------------------------------------------


def test_states_follow_liveness_and_readiness():
    fresh = Watch(since=0.0)
    assert next_state(fresh, Observation(alive=None, answers=False)) == (ProcessState.PENDING, None)
    assert next_state(fresh, Observation(alive=True, answers=False)) == (ProcessState.STARTING, None)
    assert next_state(fresh, Observation(alive=True, answers=True)) == (ProcessState.READY, None)
    gone = next_state(fresh, Observation(alive=False, answers=False, exit_reason="exited; its log: boom"))
    assert gone == (ProcessState.FAILED, "exited; its log: boom")


def test_a_served_process_that_stops_answering_is_unhealthy_naming_the_url_or_the_node():
    served = Watch(since=0.0, state=ProcessState.READY, served=True)
    url = Observation(alive=True, answers=False, ready_url="http://n:1/health")
    assert next_state(served, url) == (ProcessState.UNHEALTHY, "http://n:1/health does not answer")
    node = Observation(alive=None, answers=False, node_problem="node n2: slurmd does not answer")
    assert next_state(served, node) == (ProcessState.UNHEALTHY, "node n2: slurmd does not answer")


def test_nothing_left_only_when_all_ended_none_pending_restart_and_one_failed():
    ended = {"a": Watch(since=0, state=ProcessState.FAILED), "b": Watch(since=0, state=ProcessState.STOPPED)}
    assert nothing_left(ended)
    ended["a"].restart_at = NOW + 1
    assert not nothing_left(ended)
    assert not nothing_left({"a": Watch(since=0, state=ProcessState.STOPPED)})


# -- the frontend and the verdict -----------------------------------------------------------------


def test_frontend_counts_per_role_against_the_plan():
    counts = frontend_counts(["prefill", "decode", "decode"], {"prefill": 1, "decode": 3})
    assert counts == {"prefill": (1, 1), "decode": (2, 3)}


def test_ready_when_nothing_is_wrong_and_the_frontend_sees_its_workers():
    assert decide_verdict(ready_watches("decode-0"), view(), served_once=False, now=NOW)[0] == Verdict.READY


def test_a_failed_canary_turns_a_served_deployment_degraded_with_its_reason():
    canary = CanaryResult(ok=False, at=NOW, latency_s=10.0, error="no completion")
    verdict, reason = decide_verdict(ready_watches("decode-0"), view(canary=canary), served_once=True, now=NOW)
    assert verdict == Verdict.DEGRADED and "canary: no completion" in reason


def test_a_missing_worker_in_the_frontend_is_named_per_role():
    verdict, reason = decide_verdict(ready_watches("decode-0"), view(frontend={"decode": (1, 2)}), True, NOW)
    assert verdict == Verdict.DEGRADED and "frontend sees decode 1/2" in reason


def test_before_it_ever_served_the_verdict_is_starting():
    watches = {"decode-0": Watch(since=0.0, state=ProcessState.STARTING)}
    verdict, reason = decide_verdict(watches, view(frontend={}), served_once=False, now=NOW)
    assert verdict == Verdict.STARTING and "decode-0 starting" in reason


def test_a_process_given_up_fails_the_deployment():
    watches = ready_watches("etcd")
    watches["decode-0"] = Watch(since=0.0, state=ProcessState.FAILED, given_up=True, last_error="restart budget spent")
    verdict, reason = decide_verdict(watches, view(), served_once=True, now=NOW)
    assert verdict == Verdict.FAILED and reason == "decode-0 failed for good: restart budget spent"


def test_a_pending_restart_is_shown_with_its_countdown():
    watches = ready_watches("etcd")
    watches["decode-0"] = Watch(since=0.0, state=ProcessState.FAILED, restart_at=NOW + 2)
    assert "decode-0 failed, restart in 2.0 s" in decide_verdict(watches, view(), True, NOW)[1]


# -- without a supervisor -------------------------------------------------------------------------


def test_direct_states_from_the_backend():
    assert direct_state(None, False, stopped=False) == ProcessState.PENDING
    assert direct_state(False, False, stopped=False) == ProcessState.FAILED
    assert direct_state(False, False, stopped=True) == ProcessState.STOPPED
    assert direct_state(True, True, stopped=False) == ProcessState.READY


def test_direct_verdicts():
    ready = {"etcd": ("etcd", ProcessState.READY), "decode-0": ("decode", ProcessState.READY)}
    assert direct_verdict(ready, cancelled=False, ended=None)[0] == Verdict.READY
    worker_down = ready | {"decode-0": ("decode", ProcessState.FAILED)}
    assert direct_verdict(worker_down, cancelled=False, ended=None)[0] == Verdict.DEGRADED
    etcd_down = ready | {"etcd": ("etcd", ProcessState.FAILED)}
    assert direct_verdict(etcd_down, cancelled=False, ended=None)[0] == Verdict.FAILED
    verdict, reason = direct_verdict(ready, cancelled=False, ended="Slurm job 42 CANCELLED")
    assert verdict == Verdict.STOPPED and reason.startswith("Slurm job 42 CANCELLED")


# -- silence and an abandoned launch --------------------------------------------------------------------


def test_a_slow_answer_keeps_a_ready_process_ready_for_a_few_ticks_a_refusal_does_not():
    silent = 0
    for _ in range(SILENT_TICKS - 1):
        answers, silent = judge_answer(ProcessState.READY, silent, None)
        assert answers
    assert judge_answer(ProcessState.READY, silent, None) == (False, SILENT_TICKS)
    assert judge_answer(ProcessState.READY, 0, False) == (False, 0)
    assert judge_answer(ProcessState.STARTING, 0, None) == (False, 1)


def test_a_launch_that_ended_with_processes_never_started_is_abandoned():
    watches = {"etcd": Watch(since=0, state=ProcessState.FAILED), "decode-0": Watch(since=0)}
    assert abandoned(False, False, False, watches) == "the launch ended before starting decode-0"
    assert abandoned(False, False, True, watches) is None  # still starting things
    assert abandoned(False, False, False, ready_watches("etcd")) is None  # all started: it is just done
    assert abandoned(True, True, True, ready_watches("etcd")) == "the Slurm job's batch script has ended"
    assert abandoned(True, False, True, watches) is None
