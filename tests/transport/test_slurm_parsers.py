"""Reading what Slurm's client commands print, on outputs recorded from the test cluster
(tests/fixtures/slurm/, made by record.sh there): no cluster and no root needed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from slurmserve.backends.slurm import SlurmBackend
from slurmserve.config.hosts import SwitchSpec
from slurmserve.hardware import discovery
from slurmserve.runs import EventKind, Handle, RunDir
from slurmserve.transport import slurm
from slurmserve.transport.slurm import JobState, parse_job_state

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"
JOB = (RECORDED / "sbatch_parsable.txt").read_text().strip().split(";")[0]  # the recorded job with steps


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


class ReplayedSlurm:
    """Stands in for `transport.slurm.slurm`: each command line answers with its recording; one the
    test did not expect fails the test (the code asked Slurm something new)."""

    def __init__(self, answers: dict[tuple[str, ...], str | int]):
        self.answers = answers  # a fixture file's name, or the exit status of a command that printed nothing

    def __call__(self, *args: str, check: bool = True, umask: int = -1) -> subprocess.CompletedProcess[str]:
        assert args in self.answers, f"unrecorded Slurm command: {args}"
        answer = self.answers[args]
        if isinstance(answer, int):
            return subprocess.CompletedProcess(args, answer, "", "")
        return subprocess.CompletedProcess(args, 0, recorded(answer), "")


@pytest.fixture
def replay(monkeypatch):
    def install(answers: dict[tuple[str, ...], str | int]) -> None:
        monkeypatch.setattr(slurm, "slurm", ReplayedSlurm(answers))  # every Slurm command is built there

    return install


def hostnames_of(hostlist: str) -> tuple[tuple[str, ...], str]:
    """`scontrol show hostnames LIST`, and the file record.sh kept its answer in (node[1-3]: node_1-3_)."""
    kept = hostlist.replace("[", "_").replace("]", "_")
    return ("scontrol", "show", "hostnames", hostlist), f"scontrol_hostnames_{kept}.txt"


def squeue_state_of(job: str) -> tuple[str, ...]:
    return ("squeue", "-h", "-j", job, "-o", "%T")


def sacct_state_of(job: str) -> tuple[str, ...]:
    return ("sacct", "-n", "-X", "-P", "-j", job, "-o", "State")


def jobcomp_state_of(job: str) -> tuple[str, ...]:
    return ("sacct", "-c", "-n", "-P", "-j", job, "-o", "State")


@pytest.mark.parametrize(
    ("fixture", "state"),
    [
        ("squeue_state_pending.txt", JobState.PENDING),
        ("squeue_state_running.txt", JobState.RUNNING),
        ("squeue_compact_state_running.txt", JobState.RUNNING),
        ("sacct_state_cancelled.txt", JobState.CANCELLED),
        ("jobcomp_state_cancelled.txt", JobState.CANCELLED),
        ("sacct_state_pending.txt", JobState.CANCELLED),  # a pending job, cancelled before it started
        ("jobcomp_state_pending.txt", JobState.CANCELLED),
        ("sacct_state_failed.txt", JobState.FAILED),
        ("jobcomp_state_failed.txt", JobState.FAILED),
        ("sacct_state_completed.txt", JobState.COMPLETED),
        ("jobcomp_state_completed.txt", JobState.COMPLETED),
        ("sacct_state_timeout.txt", JobState.TIMEOUT),
        ("jobcomp_state_timeout.txt", JobState.TIMEOUT),
    ],
)
def test_recorded_states_read_as_slurm_meant_them(fixture, state):
    assert parse_job_state(recorded(fixture)) is state


def test_scontrol_spells_the_state_as_a_field():
    for fixture, state in (
        ("scontrol_job_running.txt", JobState.RUNNING),
        ("scontrol_job_cancelled.txt", JobState.CANCELLED),
    ):
        assert parse_job_state(slurm.key_values(recorded(fixture))["JobState"]) is state
    assert parse_job_state("JobState=RUNNING Reason=None") is JobState.RUNNING


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("CANCELLED by 0", JobState.CANCELLED),  # sacct says who
        ("CANCELLED+", JobState.CANCELLED),  # sacct cut the word to its column
        ("CG", JobState.COMPLETING),
        ("OOM", JobState.OUT_OF_MEMORY),
        ("NF", JobState.NODE_FAIL),
        ("out_of_memory\n", JobState.OUT_OF_MEMORY),
        ("PREEMPTED", JobState.PREEMPTED),
        ("SOMETHING_NEW", JobState.UNKNOWN),  # a later Slurm's state: not taken for an end
        ("", JobState.UNKNOWN),
    ],
)
def test_every_spelling_maps_once(text, state):
    assert parse_job_state(text) is state


def test_terminal_states_are_slurms_ends():
    ended = {state for state in JobState if state.terminal}
    assert ended == {
        JobState.BOOT_FAIL,
        JobState.CANCELLED,
        JobState.COMPLETED,
        JobState.DEADLINE,
        JobState.FAILED,
        JobState.NODE_FAIL,
        JobState.OUT_OF_MEMORY,
        JobState.PREEMPTED,
        JobState.TIMEOUT,
    }
    assert JobState.GONE.over and not JobState.GONE.terminal
    assert not JobState.RUNNING.over and not JobState.UNKNOWN.over and not JobState.COMPLETING.over
    assert all(parse_job_state(state.value) is state for state in JobState)  # what handle.json keeps reads back


def test_job_state_asks_squeue_then_sacct_then_the_jobcomp_file(replay):
    replay({squeue_state_of(JOB): "squeue_state_running.txt"})
    assert slurm.job_state(JOB) is JobState.RUNNING
    # Just after scancel squeue lists the job no more (and says so with exit status 0): sacct knows.
    replay({squeue_state_of(JOB): "squeue_state_after_scancel.txt", sacct_state_of(JOB): "sacct_state_cancelled.txt"})
    assert slurm.job_state(JOB) is JobState.CANCELLED
    replay({squeue_state_of(JOB): 1, sacct_state_of(JOB): 1, jobcomp_state_of(JOB): "jobcomp_state_cancelled.txt"})
    assert slurm.job_state(JOB) is JobState.CANCELLED
    replay({squeue_state_of(JOB): 1, sacct_state_of(JOB): 1, jobcomp_state_of(JOB): 0})
    assert slurm.job_state(JOB) is JobState.GONE


def test_squeue_fails_for_a_job_it_does_not_know():
    """What squeue_state relies on to ask sacct next (exit status recorded on the last line)."""
    assert recorded("squeue_unknown_job.txt").splitlines()[-1] == "exit status 1"


def test_steps_and_jobs_by_name(replay):
    replay(
        {
            ("squeue", "-h", "--steps", "-j", JOB, "-o", "%j"): "squeue_step_names.txt",
            ("squeue", "-h", "--steps", "-j", JOB, "-o", "%i %j"): "squeue_step_ids.txt",
            ("squeue", "-h", "--me", "--name", "slurmserve-record", "-o", "%i"): "squeue_jobs_named.txt",
        }
    )
    assert {"frontend", "decode-0"} <= (slurm.running_steps(JOB) or set())
    [frontend] = slurm.steps_named(JOB, "frontend")
    assert frontend.startswith(f"{JOB}.") and frontend != slurm.steps_named(JOB, "decode-0")[0]
    assert slurm.steps_named(JOB, "prefill-0") == []
    assert slurm.jobs_named("slurmserve-record") == [JOB]


def test_a_failed_squeue_says_nothing_of_steps(replay):
    replay({("squeue", "-h", "--steps", "-j", JOB, "-o", "%j"): 1})
    assert slurm.running_steps(JOB) is None


def test_cluster_listings(replay):
    replay(
        {
            ("sinfo", "-h", "-N", "-o", "%N %G"): "sinfo_node_gres.txt",
            ("sinfo", "-h", "-o", "%R"): "sinfo_partitions.txt",
            ("scontrol", "show", "config"): "scontrol_config.txt",
            **dict([hostnames_of("node[1-3]")]),
        }
    )
    gres = slurm.node_gres()
    assert sorted(gres) == ["node1", "node2", "node3"]
    assert all(slurm.gpus_in_gres(value) == 8 for value in gres.values())
    assert slurm.partitions() == ["debug"]
    assert slurm.expand_hostlist("node[1-3]") == ["node1", "node2", "node3"]
    assert slurm.expand_hostlist("") == []
    slurm.slurmd_port.cache_clear()
    assert slurm.slurmd_port() == 6818
    slurm.slurmd_port.cache_clear()


def test_discovery_reads_the_recorded_cluster(replay):
    replay(
        {
            ("scontrol", "show", "partition", "-o"): "scontrol_partition.txt",
            ("scontrol", "show", "node", "-o"): "scontrol_node.txt",
            ("scontrol", "show", "topology"): "scontrol_topology.txt",
            **dict(hostnames_of(hostlist) for hostlist in ("node[1-3]", "node[1-2]", "node3")),
        }
    )
    hosts = discovery.discover_slurm()
    assert hosts.backend == "slurm" and hosts.slurm and hosts.slurm.partition == "debug"
    assert [host.name for host in hosts.hosts] == ["node1", "node2", "node3"]
    assert hosts.node.gpus == 8
    assert [host.address for host in hosts.hosts] == ["10.77.0.11", "10.77.0.12", "10.77.0.13"]
    assert hosts.topology.switches == [  # leaf switches only: the spine lists every node below it
        SwitchSpec(name="leaf1", nodes=["node1", "node2"]),
        SwitchSpec(name="leaf2", nodes=["node3"]),
    ]


def test_submit_keeps_the_job_id_sbatch_prints(tmp_path, replay):
    replay({("sbatch", "--parsable", str(tmp_path / "slurmserve.sbatch")): "sbatch_parsable.txt"})
    run = RunDir(tmp_path)
    SlurmBackend().submit(None, run)  # type: ignore[arg-type]  # submit sends the rendered script, not the plan
    assert run.handle() == Handle(backend="slurm", job_id=JOB)
    assert run.has_event(EventKind.JOB_SUBMITTED)


def slurm_run(path: Path, **handle: str) -> RunDir:
    run = RunDir(path)
    run.save_handle(Handle(backend="slurm", job_id=JOB, **handle))
    return run


def test_the_backend_keeps_a_terminal_state_once_seen(tmp_path, replay):
    run = slurm_run(tmp_path)
    replay({squeue_state_of(JOB): "squeue_state_running.txt"})
    view = SlurmBackend().scheduler(run)
    assert (view.description, view.ended) == (f"Slurm job {JOB}: RUNNING", None)
    replay({squeue_state_of(JOB): 1, sacct_state_of(JOB): "sacct_state_cancelled.txt"})
    view = SlurmBackend().scheduler(run)
    assert (view.description, view.ended) == (f"Slurm job {JOB}: CANCELLED", f"Slurm job {JOB} CANCELLED")
    assert json.loads((tmp_path / "handle.json").read_text())["final_state"] == "CANCELLED"
    replay({})  # Slurm is not asked again
    assert SlurmBackend().job_state(run) is JobState.CANCELLED


def test_a_pending_job_says_why_it_waits(tmp_path, replay):
    run = slurm_run(tmp_path)
    reason_of = ("squeue", "-h", "-j", JOB, "-o", "%r")
    replay({squeue_state_of(JOB): "squeue_state_pending.txt", reason_of: "squeue_reason_pending.txt"})
    view = SlurmBackend().scheduler(run)
    assert view.queued and view.description == f"Slurm job {JOB}: PENDING, reason BeginTime"
    replay({squeue_state_of(JOB): "squeue_state_running.txt"})  # running: no reason asked
    assert not SlurmBackend().scheduler(run).queued


def test_a_job_slurm_forgot_is_over_once_the_run_ended(tmp_path, replay):
    run = slurm_run(tmp_path)
    (tmp_path / "plan.json").write_text("{}")  # damaged: no process of the run is known to have started
    replay({squeue_state_of(JOB): 1, sacct_state_of(JOB): 1, jobcomp_state_of(JOB): 0})
    assert SlurmBackend().scheduler(run).description == f"Slurm job {JOB}: unknown to Slurm"
    assert not SlurmBackend().finished(run)
    run.record(EventKind.CANCELLED, leftovers=[])
    assert SlurmBackend().finished(run)


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("CANCELLED", JobState.CANCELLED),
        ("CANCELLED by 0", JobState.CANCELLED),
        ("TIMEOUT", JobState.TIMEOUT),
        ("SOMETHING_NEW", None),  # no end this version knows: Slurm is asked again, the job id still read
    ],
)
def test_older_handle_files_keep_their_state(tmp_path, written, kept):
    """handle.json as 2a7c08e wrote it: the state a plain string, as Slurm printed it."""
    old = {"version": 1, "backend": "slurm", "job_id": "7", "final_state": written, "processes": {}}
    (tmp_path / "handle.json").write_text(json.dumps(old))
    assert RunDir(tmp_path).handle() == Handle(backend="slurm", job_id="7", final_state=kept)


@pytest.mark.parametrize(
    ("printed", "minutes"),
    [("1:58:31", 118), ("59:30", 59), ("2-03:04:05", 3064), ("0:30", 0), ("UNLIMITED", None), ("", None)],
)
def test_a_jobs_time_left_in_whole_minutes(monkeypatch, printed, minutes):
    """squeue's %L as it prints it: [D-]HH:MM:SS, MM:SS, UNLIMITED (no limit), nothing (no such job)."""
    answer = subprocess.CompletedProcess([], 0, printed + "\n", "")
    monkeypatch.setattr(slurm, "slurm", lambda *args, check=True, umask=-1: answer)
    assert slurm.minutes_left("42") == minutes


def test_the_states_of_several_jobs_in_one_squeue(monkeypatch):
    asked = []

    def squeue(*args: str, check: bool = True, umask: int = -1) -> subprocess.CompletedProcess[str]:
        asked.append(args)
        return subprocess.CompletedProcess(args, 0, "41 RUNNING\n43 PENDING\n", "")

    monkeypatch.setattr(slurm, "slurm", squeue)
    assert slurm.states_of(["41", "42", "43"]) == {"41": JobState.RUNNING, "43": JobState.PENDING}  # 42: gone
    assert asked == [("squeue", "-h", "-j", "41,42,43", "-o", "%i %T")]
    assert slurm.states_of([]) == {}
