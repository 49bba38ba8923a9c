"""Elastic workers (`autoscale.capacity: elastic`, Slurm): each a job of its own, submitted when scaling adds
it and cancelled when scaling removes it, so that its GPUs go back to the cluster while it is not needed.
Its job's id is recorded in pids/NAME.job ("JOB-ID SUBMITTED-AT"); the states of all of them are asked in one
squeue, at most every STATES_EVERY_S (the supervisor asks every tick)."""

from __future__ import annotations

import time

from ..config.lifetime import slurm_time_s
from ..planning.plan import Plan, Process
from ..private import write_private
from ..render.scripts import elastic_job_name, elastic_script
from ..runs import RunDir
from ..transport.slurm import JobState, jobs_named, minutes_left, sbatch, scancel, states_of
from ..waiting import wait_until

STATES_EVERY_S = 2.0
# A worker's job still queued this long after it was submitted is cancelled: scaling reports the worker failed
# to start (and the planner's decision is acknowledged as failed), never waits for the queue forever.
QUEUE_BOUND_S = 120.0
STOP_POLL_S = 1.0
QUEUED = frozenset({JobState.PENDING, JobState.CONFIGURING})  # what the queue bound applies to


def ended(state: JobState) -> bool:
    """The job is over, or ending: squeue lists a finished job a while after (MinJobAge)."""
    return state.terminal or state is JobState.COMPLETING


class ElasticJobs:
    """The elastic workers' jobs of the runs one backend serves."""

    def __init__(self) -> None:
        self.asked_at = 0.0
        self.states: dict[str, JobState] = {}  # job id -> its state, as squeue last said (an ended job: absent)
        self.asked: set[str] = set()  # the jobs squeue was last asked about

    @staticmethod
    def record(run: RunDir, name: str) -> tuple[str, float] | None:
        """The worker's job and when it was submitted, if one was."""
        try:
            job, submitted = run.paths.pid_record(name, "job").read_text().split()
            return job, float(submitted)
        except (OSError, ValueError):
            return None

    def start(self, run: RunDir, process: Process, main_job: str | None) -> str:
        """Submit the worker's job (an earlier one of it cancelled first), within the deployment's job's time
        left (no limit when it has none); its id."""
        self.stop(run, process, grace_s=0.0)
        plan = run.plan()
        options = []
        if plan.slurm is None or slurm_time_s(plan.slurm.time) is not None:
            left = minutes_left(main_job) if main_job else None
            if left is None or left < 1:
                raise RuntimeError("the deployment's job is not running with a minute left: no elastic worker starts")
            options.append(f"--time={left}")
        job = sbatch(run.path / elastic_script(process.name), *options)
        write_private(run.paths.pid_record(process.name, "job"), f"{job} {time.time()}\n")
        return job

    def alive(self, run: RunDir, plan: Plan, supervising: bool = False) -> dict[str, bool | None]:
        """Per elastic worker: True its job runs, None it waits in the queue (or was never submitted, or squeue
        has not answered for it yet), False its job ended. For the supervisor (`supervising`), a job still
        queued QUEUE_BOUND_S after its submission is cancelled (False)."""
        records = {p.name: record for p in plan.processes if p.elastic and (record := self.record(run, p.name))}
        states = self.job_states([job for job, _ in records.values()])
        alive: dict[str, bool | None] = {p.name: None for p in plan.processes if p.elastic}
        for name, (job, submitted) in records.items():
            state = states.get(job)
            if job not in self.asked:
                continue  # squeue did not answer since it was submitted
            if state is JobState.RUNNING:
                alive[name] = True
            elif state is None or ended(state):
                alive[name] = False  # gone from the queue, or ending
            elif supervising and state in QUEUED and time.time() - submitted > QUEUE_BOUND_S:
                scancel(job)
                alive[name] = False
        return alive

    def job_states(self, jobs: list[str]) -> dict[str, JobState]:
        """The jobs' states, asked again when the last answer is older than STATES_EVERY_S or did not ask
        about one of them (an ended job, which squeue no longer lists, is not asked about every tick)."""
        if time.monotonic() - self.asked_at >= STATES_EVERY_S or set(jobs) - self.asked:
            states = states_of(jobs)
            if states is not None:  # squeue did not answer: the last answer stands
                self.states, self.asked = states, set(jobs)
                self.asked_at = time.monotonic()
        return self.states

    def stop(self, run: RunDir, process: Process, grace_s: float) -> None:
        """SIGTERM to the worker's step (a Dynamo worker leaves discovery and drains on it); its job cancelled
        when it outlives `grace_s` (with the step gone, the job ends by itself)."""
        record = self.record(run, process.name)
        if record is None:
            return
        job = record[0]

        def gone() -> bool:
            states = states_of([job])
            return states is not None and (job not in states or ended(states[job]))

        if grace_s > 0:
            scancel(job, signal="TERM")
            wait_until(gone, grace_s, poll_s=STOP_POLL_S)
        scancel(job)
        run.paths.pid_record(process.name, "job").unlink(missing_ok=True)  # never asked about again

    @staticmethod
    def cancel_all(run: RunDir, plan: Plan) -> None:
        """Every elastic worker's job of the run, recorded or found by its name."""
        elastic = [process.name for process in plan.processes if process.elastic]
        jobs = [record[0] for name in elastic if (record := ElasticJobs.record(run, name))]
        jobs += [job for name in elastic for job in jobs_named(elastic_job_name(plan.run_name, name))]
        if jobs:
            scancel(*sorted(set(jobs)))
