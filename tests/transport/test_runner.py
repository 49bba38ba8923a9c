"""The one node runner: LocalRunner with real (quick) local processes, SrunRunner's command lines
without a cluster. SshRunner against the lab's sshd: test_runner_lab.py."""

from __future__ import annotations

import stat
import sys
import threading
import time

from slurmserve.transport.procfs import pid_alive
from slurmserve.transport.runner import TIMED_OUT, Cancel, LocalRunner, _stop_all, fan_out_runs, unreachable
from slurmserve.transport.srun import SrunRunner, SrunStep, shell_words

PY = sys.executable


def test_run_gives_exit_status_and_output():
    ran = LocalRunner().run(
        [PY, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"], timeout=30
    )
    assert (ran.exited, ran.stdout, ran.stderr, ran.timed_out, ran.ok) == (3, "out\n", "err\n", False, False)


def test_env_is_added_to_this_process_environment(monkeypatch):
    monkeypatch.setenv("RUNNER_KEPT", "kept")
    code = "import os; print(os.environ['RUNNER_KEPT'], os.environ['RUNNER_ADDED'])"
    assert LocalRunner().run([PY, "-c", code], env={"RUNNER_ADDED": "a,b"}, timeout=30).stdout == "kept a,b\n"


def test_a_run_past_its_timeout_is_stopped_and_says_so():
    started = time.monotonic()
    ran = LocalRunner().run([PY, "-c", "print('begun', flush=True); import time; time.sleep(60)"], timeout=1)
    assert ran.timed_out and ran.exited == TIMED_OUT and ran.stdout == "begun\n"
    assert ran.stderr.endswith("no answer within 1 s") and time.monotonic() - started < 10


def test_a_run_is_stopped_from_another_thread():
    cancel, results = Cancel(), []
    code = "import time; print('up', flush=True); time.sleep(60)"
    thread = threading.Thread(
        target=lambda: results.append(LocalRunner().run([PY, "-c", code], timeout=60, cancel=cancel))
    )
    started = time.monotonic()
    thread.start()
    while not LocalRunner._running and time.monotonic() - started < 10:  # it has begun
        time.sleep(0.01)
    cancel.cancel()
    thread.join(10)
    assert results and results[0].exited == -15 and time.monotonic() - started < 10


def test_a_run_cancelled_before_it_began_ends_at_once():
    cancel = Cancel()
    cancel.cancel()
    started = time.monotonic()
    ran = LocalRunner().run([PY, "-c", "import time; time.sleep(60)"], timeout=60, cancel=cancel)
    assert ran.exited != 0 and time.monotonic() - started < 10


def test_what_runs_at_exit_is_stopped():
    results = []
    thread = threading.Thread(
        target=lambda: results.append(LocalRunner().run([PY, "-c", "import time; time.sleep(60)"], timeout=60))
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not LocalRunner._running and time.monotonic() < deadline:
        time.sleep(0.01)
    _stop_all()
    thread.join(10)
    assert results and results[0].exited == -15


def test_upload_writes_private_files_and_makes_folders(tmp_path):
    target = tmp_path / "a" / "b" / "script.sh"
    LocalRunner().upload({str(target): "echo hi\n"})
    assert target.read_text() == "echo hi\n" and stat.S_IMODE(target.stat().st_mode) == 0o600


def test_start_detached_runs_in_a_session_of_its_own_and_logs(tmp_path):
    log = tmp_path / "helper.log"
    code = "import os; print(os.getpgid(0) == os.getpid(), os.environ['HELPER'], flush=True)"
    started = LocalRunner().start_detached([PY, "-c", code], log=log, env={"HELPER": "yes"})
    assert started.wait(30) == 0 and log.read_text() == "True yes\n"
    started.write_record(tmp_path / "helper.pid")
    assert (tmp_path / "helper.pid").read_text() == f"{started.pgid} {started.started}\n"


def test_a_detached_process_can_be_waited_on_and_terminated(tmp_path):
    started = LocalRunner().start_detached([PY, "-c", "import time; time.sleep(60)"], log=tmp_path / "log")
    assert started.wait(0.1) is None and started.poll() is None and pid_alive(*started.record)
    started.terminate()
    assert started.poll() == -15


def test_run_logged_appends_output_and_stops_at_its_timeout(tmp_path):
    log = tmp_path / "client.log"
    assert LocalRunner().run_logged([PY, "-c", "print('one')"], log=log, timeout=30) == 0
    assert LocalRunner().run_logged([PY, "-c", "import time; time.sleep(60)"], log=log, timeout=0.5) == TIMED_OUT
    assert log.read_text() == "one\n"


def test_lines_follow_what_a_command_prints():
    assert list(LocalRunner().lines([PY, "-c", "print('a'); print('b')"])) == ["a\n", "b\n"]


def test_fan_out_names_the_nodes_that_failed():
    runners = {"here": LocalRunner(), "there": LocalRunner()}

    def work(runner):
        if runner is runners["there"]:
            raise OSError("no route")
        return runner.run(["true"], timeout=10)

    outcomes = fan_out_runs(runners, work, 10)
    assert outcomes["here"].value.ok
    assert unreachable(runners, outcomes, 10) == ["this machine: OSError: no route"]
    assert LocalRunner().check_connection(1) is None


# ---------------------------------------------------------------------------------------------
# SrunRunner: the command lines it launches


def test_a_step_inside_the_allocation_overlaps_its_running_steps():
    runner = SrunRunner(SrunStep(("node2",), job_name="kvpath", options=("--quiet",)))
    assert runner.command(["ucx_perftest"], {"UCX_TLS": "tcp"}) == (
        [
            "srun",
            "--overlap",
            "--nodes=1",
            "--ntasks=1",
            "--nodelist=node2",
            "--job-name=kvpath",
            "--quiet",
            "env",
            "UCX_TLS=tcp",
            "ucx_perftest",
        ],
        None,  # srun hands this process's environment to the step
    )


def test_a_step_outside_is_a_job_of_its_own_with_its_scheduling_and_container():
    options = ("--quiet", "--container-image=img", "--partition=gpu", "--qos=high")
    step = SrunStep(("node1",), overlap=False, job_name="kvpath", options=options)
    assert step.words() == [
        "srun",
        "--time=1",
        "--nodes=1",
        "--ntasks=1",
        "--nodelist=node1",
        "--job-name=kvpath",
        *options,
    ]


def test_a_step_joins_a_running_job_by_its_id():
    step = SrunStep(("gpu01",), job_id="42", export_all=True, job_name="bench")
    assert SrunRunner(step).command(["aiperf"], None)[0] == [
        "srun",
        "--jobid=42",
        "--overlap",
        "--nodes=1",
        "--ntasks=1",
        "--nodelist=gpu01",
        "--export=ALL",
        "--job-name=bench",
        "aiperf",
    ]


def test_a_step_over_a_node_set_runs_a_task_per_node():
    step = SrunStep(("a", "b", "c"), overlap=False, minutes=5, one_per_node=True, options=("-l",))
    assert step.words() == [
        "srun",
        "--time=5",
        "--nodes=3",
        "--ntasks=3",
        "--ntasks-per-node=1",
        "--nodelist=a,b,c",
        "-l",
    ]


def test_a_step_as_script_text_quotes_each_value():
    step = SrunStep(("gpu01", "gpu02"), tasks=16, export_all=True, job_name="decode 0")
    assert shell_words(step.words()) == (
        "srun --overlap --nodes=2 --ntasks=16 --nodelist=gpu01,gpu02 --export=ALL --job-name='decode 0'"
    )
