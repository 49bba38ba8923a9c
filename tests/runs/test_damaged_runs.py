"""One damaged or unreadable run never breaks the others: the readers skip what they cannot read, the run
list names a run whose plan it cannot read as unreadable, and the supervisor's checks each run on their own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from slurmserve.deploy import load_inputs, plan_for
from slurmserve.runs import RunDir, Verdict, create_run
from slurmserve.runtime.supervision import Supervisor

from ..conftest import HOSTS
from ..helpers import slurmserve


def local_run(name: str) -> RunDir:
    """A run directory as submit makes it (nothing started: the readers are what is tested)."""
    return create_run(plan_for(load_inputs("mocker-agg", str(HOSTS / "local.yaml"), []), name))


def test_a_byte_that_is_not_utf8_in_one_run_breaks_no_status():
    events_run, state_run = local_run("bad-events"), local_run("bad-state")
    with open(events_run.path / "events.jsonl", "ab") as events:
        events.write(b'{"version": 1, "time": "2026-12-07T00:00:00", "event": "cancelled", "reason": "\xff"}\n')
    (state_run.path / "state.json").write_bytes(b'{"version": 1, "verdict": "\xff"}')
    listed = slurmserve("status", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(run["run"] for run in json.loads(listed.stdout)) == ["bad-events", "bad-state"]
    for name in ("bad-events", "bad-state"):
        shown = slurmserve("status", name, "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["verdict"] != "stopped"  # the damaged line is skipped, not half-read


def test_a_plan_json_that_is_not_utf8_is_named_damaged_not_a_traceback():
    (local_run("bad-plan").path / "plan.json").write_bytes(b'{"recipe": "\xff"}')
    shown = slurmserve("status", "bad-plan")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert "plan.json is damaged" in " ".join(shown.stdout.split())
    listed = slurmserve("status", "--all", "--json")
    assert [(run["run"], run["verdict"]) for run in json.loads(listed.stdout)] == [("bad-plan", "unreadable")]


# Root without the capabilities that pass over file permissions: a run directory owned by another user is
# as closed to it as to any user (the tests run as root, whom no permission stops).
WITHOUT_ROOT_POWERS = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def without_root_powers(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*WITHOUT_ROOT_POWERS, sys.executable, "-m", "slurmserve", *argv], capture_output=True, text=True, timeout=120
    )


def test_a_run_directory_of_another_user_is_listed_as_unreadable_and_blocks_no_submit():
    local_run("mine")
    shutil.chown(local_run("theirs").path, "nobody", "nogroup")  # 0700, as every run directory
    listed = without_root_powers("status", "--json")
    assert listed.returncode == 0, listed.stderr
    verdicts = {run["run"]: run["verdict"] for run in json.loads(listed.stdout)}
    assert verdicts.keys() == {"mine", "theirs"} and verdicts["theirs"] == "unreadable", verdicts
    table = without_root_powers("status")
    assert table.returncode == 0 and "unreadable" in table.stdout, table.stdout + table.stderr
    by_name = without_root_powers("status", "theirs")
    assert by_name.returncode == 2 and "run 'theirs': cannot be read (Permission denied" in by_name.stderr
    dry_run = without_root_powers("submit", "--recipe", "mocker-agg", "--hosts", str(HOSTS / "local.yaml"), "--dry-run")
    assert dry_run.returncode == 0, dry_run.stderr


def test_one_check_that_raises_leaves_the_others_to_run():
    """A directory where a restart request would be (requests/restart-x) raises on every tick; the
    frontend, canary and verdict checks still run: a frontend that stopped answering is seen."""
    run = local_run("frozen-verdict")
    (run.path / "requests" / "restart-x").mkdir(parents=True)
    supervisor = Supervisor(run)
    try:
        supervisor.verdict, supervisor.served_once = Verdict.READY, True  # it served; now nothing answers
        supervisor.guarded_tick()
        supervisor.guarded_tick()  # the same error again: counted, not recorded again
    finally:
        supervisor.threads.shutdown(wait=True)
    state = run.supervisor_state()
    assert state is not None and state.verdict == Verdict.DEGRADED and state.errors == 2, state
    errors = [event.error for event in run.events() if event.event == "supervisor error"]
    assert len(errors) == 1 and "restart-x" in errors[0], errors
