"""Run names can be taken again: a stopped run is set aside (renamed with its start time, still readable);
`rm` deletes stopped runs and refuses live ones; `prune` deletes stopped runs older than a bound; `status`
lists live runs unless `--all`. Nothing of a run may still run when it is renamed or removed.

The fast tests here make run directories as `submit` does, without starting anything: a run whose launch
never began is live (a submit in progress); a cancelled one, or one whose launcher and processes all
ended, is stopped."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from slurmserve import deploy
from slurmserve.bench.measure import BenchRequest
from slurmserve.bench.sweep import sweep_points
from slurmserve.errors import UserError
from slurmserve.runs import EventKind, RunDir, create_run, open_run, runs_root
from slurmserve.runtime.names import take_name
from slurmserve.transport.procfs import start_time

from ..helpers import slurmserve, status_of

DAY_S = 86400


def local_hosts(folder: Path, run_root: Path | None = None) -> str:
    path = folder / f"hosts-{run_root.name if run_root else 'home'}.yaml"
    lines = ["backend: local", "hosts: [{name: here, address: 127.0.0.1}]"]
    path.write_text("\n".join([*lines, f"run_root: {run_root}" if run_root else ""]) + "\n")
    return str(path)


def made_run(name: str, hosts: str, *, cancelled: bool) -> RunDir:
    """A run directory as submit makes it; cancelled (stopped), or with no launch begun yet (live)."""
    run = create_run(deploy.plan_for(deploy.load_inputs("mocker-agg", hosts), name))
    if cancelled:
        run.record(EventKind.CANCELLED, leftovers=[])
    return run


def record_pid(run: RunDir, name: str, process: subprocess.Popen) -> None:
    (run.path / "pids" / f"{name}.pid").write_text(f"{process.pid} {start_time(process.pid)}\n")


def listed(*options: str) -> set[str]:
    result = slurmserve("status", "--json", *options)
    assert result.returncode == 0, result.stderr
    return {row["run"] for row in json.loads(result.stdout)}


def test_rm_removes_stopped_runs_and_refuses_a_live_one(tmp_path):
    hosts = local_hosts(tmp_path, tmp_path / "elsewhere")
    stopped, live = made_run("old", hosts, cancelled=True), made_run("busy", hosts, cancelled=False)
    refused = slurmserve("rm", "old", "busy")
    assert refused.returncode == 2 and "busy" in refused.stderr and "live" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert stopped.path.exists() and live.path.exists()  # nothing removed
    removed = slurmserve("rm", "old")
    assert removed.returncode == 0, removed.stderr
    assert not stopped.path.exists() and not (runs_root() / "old").is_symlink()
    assert live.path.exists()


def test_a_cancelled_run_with_a_survivor_is_live(tmp_path, cancel_later):
    run = made_run("leftover", local_hosts(tmp_path), cancelled=True)
    survivor = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record_pid(run, run.plan().processes[-1].name, survivor)  # cancel could not stop it
        assert listed() == {"leftover"}
        refused = slurmserve("rm", "leftover")
        assert refused.returncode == 2 and "leftover" in refused.stderr, refused.stderr
        assert run.path.exists()
    finally:
        survivor.kill()
        survivor.wait()


def test_a_run_whose_processes_all_ended_by_themselves_is_stopped(tmp_path):
    live = made_run("starting", local_hosts(tmp_path), cancelled=False)
    ended = made_run("ended", local_hosts(tmp_path), cancelled=False)
    for name in ("launcher", *(p.name for p in ended.plan().processes)):
        gone = subprocess.Popen(["true"])
        record_pid(ended, name, gone)
        gone.wait()
    assert listed() == {"starting"}  # live runs only
    assert listed("--all") == {"starting", "ended"}
    assert status_of("ended")["verdict"] in ("stopped", "failed")
    assert slurmserve("rm", "ended").returncode == 0 and not ended.path.exists()
    assert live.path.exists()


def age(run: RunDir, days: float) -> None:
    then = time.time() - days * DAY_S
    for path in run.path.iterdir():
        os.utime(path, (then, then))


def test_prune_removes_stopped_runs_older_than_the_bound(tmp_path):
    hosts = local_hosts(tmp_path)
    old, recent = made_run("old", hosts, cancelled=True), made_run("recent", hosts, cancelled=True)
    old_but_live = made_run("old-live", hosts, cancelled=False)
    age(old, 8)
    age(old_but_live, 8)
    age(recent, 2)
    result = slurmserve("prune")  # default: 7d
    assert result.returncode == 0 and "old" in result.stdout, result.stderr
    assert not old.path.exists() and recent.path.exists() and old_but_live.path.exists()
    result = slurmserve("prune", "--older-than", "1d")
    assert result.returncode == 0 and not recent.path.exists() and old_but_live.path.exists()
    bad = slurmserve("prune", "--older-than", "a week")
    assert bad.returncode == 2 and "--older-than" in bad.stderr and "Traceback" not in bad.stderr


def test_a_name_held_by_a_live_run_under_another_run_root_is_refused_cleanly(tmp_path):
    made_run("shared-name", local_hosts(tmp_path, tmp_path / "root-a"), cancelled=False)
    other = local_hosts(tmp_path, tmp_path / "root-b")
    result = slurmserve("submit", "--recipe", "mocker-agg", "--hosts", other, "--name", "shared-name")
    assert result.returncode == 2, result.stderr
    assert "shared-name" in result.stderr and "live" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "root-b" / "shared-name").exists()  # nothing made, no logs/ left behind


def test_a_stopped_runs_name_is_freed_and_the_old_run_kept_readable(tmp_path):
    old = made_run("again", local_hosts(tmp_path, tmp_path / "root-a"), cancelled=True)
    (old.path / "logs" / "frontend.log").write_text("the first run's words\n")
    expected = f"again-{old.started_at():%Y%m%d-%H%M%S}"
    plan = deploy.plan_for(deploy.load_inputs("mocker-agg", local_hosts(tmp_path, tmp_path / "root-b")), "again")
    take_name(plan)
    create_run(plan)  # the name is free again
    aside = [path.name for path in runs_root().iterdir() if path.name.startswith("again-")]
    assert aside == [expected]
    kept = open_run(aside[0])
    assert kept.path == tmp_path / "root-a" / aside[0]
    assert kept.plan().run_name == aside[0] and kept.plan().run_dir == str(kept.path)
    assert status_of(aside[0])["verdict"] == "stopped"
    logs = slurmserve("logs", aside[0], "frontend")
    assert logs.returncode == 0 and "the first run's words" in logs.stdout, logs.stderr
    assert open_run("again").path == tmp_path / "root-b" / "again"


@pytest.mark.slow
def test_a_cancelled_runs_name_can_be_submitted_again(cancel_later):
    """The README's `--name demo`, twice: the second submit sets the first run aside and serves."""
    cancel_later("demo")
    first = slurmserve("submit", "--recipe", "mocker-agg", "--name", "demo", "--timeout", "120")
    assert first.returncode == 0, first.stderr
    assert slurmserve("cancel", "demo").returncode == 0
    second = slurmserve("submit", "--recipe", "mocker-agg", "--name", "demo", "--timeout", "120")
    assert second.returncode == 0, second.stderr
    assert listed() == {"demo"}
    (aside,) = listed("--all") - {"demo"}
    assert aside.startswith("demo-") and status_of(aside)["verdict"] == "stopped"
    assert slurmserve("logs", aside, "frontend").stdout.strip()
    refused = slurmserve("rm", "demo", aside)
    assert refused.returncode == 2 and "demo" in refused.stderr and open_run(aside).path.exists()
    assert slurmserve("cancel", "demo").returncode == 0
    assert slurmserve("rm", "demo", aside).returncode == 0
    assert listed("--all") == set()


@pytest.mark.slow
def test_a_sweep_run_again_deploys_its_points_under_the_same_names(monkeypatch, tmp_path):
    """A sweep's point runs (`sweep-<key>-N`) were cancelled the first time: the second time their names
    are taken again (here the benchmark itself fails, so each run measures the point anew)."""

    def no_benchmark(run, request):
        raise UserError(f"no benchmark here ({run.name})")

    monkeypatch.setattr(deploy, "bench", no_benchmark)
    points = sweep_points(["env.SWEEP_POINT=a"])
    for attempt in (1, 2):
        report = deploy.sweep("mocker-agg", None, [], points, BenchRequest(), out=tmp_path / "sweep", timeout=120)
        (reason,) = report.failed.values()
        assert reason.startswith("no benchmark here"), f"attempt {attempt}: {reason}"
    assert len(listed("--all")) == 2 and listed() == set()
