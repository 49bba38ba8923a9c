"""The Slurm backend: the plan's sbatch script, submitted with sbatch; state from squeue, then sacct.

Job state comes from `squeue` while Slurm remembers the job, then `sacct` (accounting) or `sacct -c`
(the jobcomp file, on clusters without accounting). A terminal state, once seen, is kept in the run
directory, so later `status` calls need not ask Slurm again.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from ..config.hosts import Hosts, concrete_nodes
from ..errors import UserError
from ..hardware.inventory import with_scheduled_gpus
from ..planning.needs import NodeNeeds, needs_of
from ..planning.plan import Plan, Process
from ..render.scripts import render_script
from ..runs import Handle, RunDir
from ..runs.events import JobSubmitted
from ..transport.procfs import pid_file_alive, task_records
from ..transport.runner import LocalRunner, NodeRunner
from ..transport.slurm import (
    SLURM_TIMEOUT_S,
    JobState,
    gpus_in_gres,
    job_state,
    jobs_named,
    node_gres,
    partitions,
    pending_reason,
    running_steps,
    sbatch,
    sbatch_installed,
    sbatch_objection,
    scancel,
    slurmd_port,
    steps_named,
    steps_named_or_unknown,
)
from ..transport.srun import SrunRunner, SrunStep, in_allocation, scheduling_flags
from ..waiting import fan_out, wait_until
from .base import Backend, Launch, SchedulerView, client_groups_argv, unanswering_daemons
from .elastic import ElasticJobs
from .preflight import check_here
from .traits import SLURM_TRAITS

CANCEL_WAIT_S = 60
STEP_STOP_S = 15.0  # a step that ignores SIGTERM gets SIGKILL after the cluster's KillWait
BENCH_STEP = "bench"  # the name of the step a client of the deployment (aiperf) runs in
PROBE_MINUTES = 5  # the probe's one job: every node at once, a task each
# Each check has its own limit (Slurm's client timeout, the interpreter check's): this only bounds the wait.
PREFLIGHT_DEADLINE_S = 2 * SLURM_TIMEOUT_S


def job_name(run_name: str) -> str:
    return f"slurmserve-{run_name}"  # as the sbatch template names the job


def check_cluster_fits(plan: Plan) -> None:
    """The partition exists and has the planned nodes, with at least the planned GPUs each."""
    partition = plan.slurm.partition if plan.slurm else None
    if partition:
        known = partitions()
        if partition not in known:
            raise UserError(
                f"slurm.partition: partition {partition!r} does not exist (partitions: {', '.join(known) or 'none'})"
            )
    gres_of = node_gres(partition)
    for node in plan.nodes:
        where = f"partition {partition}" if partition else "the cluster"
        if node.name not in gres_of:
            raise UserError(
                f"hosts: node {node.name} is not in {where} (nodes: {', '.join(sorted(gres_of)) or 'none'})"
            )
        has = gpus_in_gres(gres_of[node.name])
        if has < node.gpus:
            raise UserError(
                f"node.gpus: the hosts file gives {node.name} {node.gpus} GPUs, Slurm has {has} "
                f"(Gres={gres_of[node.name]})"
            )


def check_sbatch_accepts(plan: Plan) -> None:
    """`sbatch --test-only`: Slurm's own verdict on the script, without submitting anything."""
    with tempfile.NamedTemporaryFile("w", suffix=".sbatch") as script:
        script.write(render_script(plan, SLURM_TRAITS))
        script.flush()
        objection = sbatch_objection(Path(script.name))
    if objection is not None:
        raise UserError(f"sbatch rejects the job: {objection}")


def head_step(job_id: str, plan: Plan, name: str, *, export_all: bool = False) -> SrunRunner:
    """One task in the job on the deployment's head node, beside its running steps."""
    step = SrunStep((plan.nodes[0].name,), job_id=job_id, export_all=export_all, job_name=name)
    return SrunRunner(step)


class JobLaunch(Launch):
    """The batch script starts everything inside the allocation: the launch failed when the job ended."""

    def __init__(self, backend: SlurmBackend, run: RunDir):
        self.backend, self.run = backend, run

    def failure(self) -> str | None:
        ended = self.backend.scheduler(self.run).ended
        if ended is None:
            return None
        log = self.run.paths.launcher_log
        return f"{ended}" + (f"\n{log.read_text(errors='replace').strip()}" if log.exists() else "")


class SlurmBackend(Backend):
    traits = SLURM_TRAITS

    def __init__(self) -> None:
        self.elastic = ElasticJobs()

    def preflight(self, plan: Plan) -> None:
        if not sbatch_installed():
            raise UserError("hosts: backend slurm, but sbatch is not installed on this machine")
        # Three questions to three programs (sinfo, sbatch --test-only, the nodes' interpreter), asked at
        # once: they are on the way to every job's first answer. The first objection in this order wins.
        checks = [check_cluster_fits, check_sbatch_accepts, self.check_interpreter]
        outcomes = fan_out(checks, lambda check: check(plan), PREFLIGHT_DEADLINE_S)
        for check in checks:
            outcome = outcomes[check]
            if not outcome.finished:
                raise UserError(f"hosts: backend slurm, but {check.__name__} got no answer in {PREFLIGHT_DEADLINE_S} s")
            if outcome.error is not None:
                raise outcome.error

    def check_interpreter(self, plan: Plan) -> None:
        """The nodes run the interpreter slurmserve runs in (same path on the shared filesystem): when it is
        visible here, check at once that it imports what the plan runs (the job's node preflight checks each
        node again, and the rest, before anything starts)."""
        if not Path(plan.python).exists():
            return
        modules = {
            m: packages for node in needs_of(plan, self.traits).nodes.values() for m, packages in node.modules.items()
        }
        lacking = check_here(NodeNeeds(node="this machine", address="127.0.0.1", python=plan.python, modules=modules))
        if lacking:
            raise UserError(
                f"python: {lacking.partition(': ')[2]}. Install Dynamo with ./install.sh, or set python: in the hosts "
                "file"
            )

    def submit(self, plan: Plan, run: RunDir) -> Launch:
        job_id = sbatch(run.path / "slurmserve.sbatch")
        run.save_handle(Handle(backend="slurm", job_id=job_id))
        run.record(JobSubmitted(job_id=job_id))
        return JobLaunch(self, run)

    def job_id(self, run: RunDir) -> str | None:
        handle = run.handle()
        if handle and handle.job_id:
            return handle.job_id
        # A CLI killed between sbatch and saving the handle: the job by its name.
        found = jobs_named(job_name(run.name))
        if not found:
            return None
        run.save_handle(Handle(backend="slurm", job_id=found[0]))
        return found[0]

    def job_state(self, run: RunDir) -> JobState:
        handle = run.handle()
        if handle and handle.final_state:
            return handle.final_state
        job_id = self.job_id(run)
        if job_id is None:
            return JobState.GONE
        state = job_state(job_id)
        if state.terminal:
            run.save_handle(Handle(backend="slurm", job_id=job_id, final_state=state))
        return state

    def alive(self, run: RunDir, in_job: bool = False) -> dict[str, bool | None]:
        """Inside the job (the supervisor, on the batch host) each step's srun is a local process
        (pids/NAME.srun) that ends when the step does: no question to slurmctld per tick. Elsewhere:
        the job's running steps, and the task records of steps that ran."""
        names = run.process_names()
        elastic = self.elastic_alive(run, in_job)
        if in_job:
            return {name: pid_file_alive(run.paths.step_record(name)) for name in names} | elastic
        state = self.job_state(run)
        started = {name for name in names if task_records(run.paths.task_records(name))}
        job_id = self.job_id(run)
        steps = (running_steps(job_id) or set()) if state is JobState.RUNNING and job_id else set()
        return {name: True if name in steps else (False if name in started else None) for name in names} | elastic

    def elastic_alive(self, run: RunDir, in_job: bool) -> dict[str, bool | None]:
        """The elastic workers, from their own jobs (none when the plan cannot be read: nothing to ask)."""
        try:
            plan = run.plan()
        except UserError:
            return {}
        if plan.autoscale is None or plan.autoscale.capacity != "elastic":
            return {}
        return self.elastic.alive(run, plan, supervising=in_job)

    def restart(self, run: RunDir, process: Process) -> None:
        """A new srun step in the allocation, from the job's own script (`--restart NAME`), once any step
        of that name still running is cancelled (SIGTERM first: a Dynamo worker deregisters on it). An
        elastic worker: a job of its own (backends.elastic)."""
        job_id = self.job_id(run)
        if process.elastic:
            self.elastic.start(run, process, job_id)
            return
        old_steps = steps_named(job_id, process.name) if job_id else []
        if old_steps:
            scancel(*old_steps)
            wait_until(lambda: not steps_named(job_id or "", process.name), STEP_STOP_S)
        script = ["bash", str(run.path / "slurmserve.sbatch"), "--restart", process.name]
        step = LocalRunner().start_detached(script, log=run.paths.launcher_log, umask=-1)  # the job's own umask
        step.write_record(run.paths.step_record(process.name))

    def stop_process(self, run: RunDir, process: Process, grace_s: float) -> None:
        """SIGTERM to its step's tasks (a Dynamo worker leaves discovery and drains on it); the step cancelled
        when it outlives `grace_s`."""
        job_id = self.job_id(run)
        if process.elastic:
            self.elastic.stop(run, process, grace_s)
            return
        steps = steps_named_or_unknown(job_id, process.name) if job_id else []
        if steps is None:  # said in the `scaled ... stopped` event: the worker may still run
            raise RuntimeError(f"squeue did not answer: the step of {process.name} was not signalled")
        if not steps or job_id is None:
            return
        scancel(*steps, signal="TERM")
        if not wait_until(lambda: not steps_named(job_id, process.name), grace_s, poll_s=1.0):
            scancel(*steps_named(job_id, process.name))

    def run_beside(self, run: RunDir, argv: list[str], env: dict[str, str], log: Path, timeout: float) -> int:
        """A step of the deployment's own job on its head node (--overlap: beside the running steps)."""
        job_id = self.job_id(run)
        if job_id is None or self.job_state(run) is not JobState.RUNNING:
            raise UserError(f"run {run.name}: its Slurm job is not running")
        step = head_step(job_id, run.plan(), BENCH_STEP, export_all=True)
        return step.run_logged(argv, env=env, log=log, timeout=timeout)

    def stop_beside(self, run: RunDir) -> None:
        """The client's process group signalled on the head node from a step beside it (TERM, then KILL),
        then what is left of its step cancelled. Its srun here may be gone already, its step need not be:
        a process whose parent died escapes the step's tracking by parentage (proctrack/linuxproc), and
        holds the step open."""
        job_id = self.job_id(run)
        if job_id is None or not steps_named(job_id, BENCH_STEP):
            return
        plan = run.plan()
        step = head_step(job_id, plan, f"stop-{BENCH_STEP}")
        for signal in ("TERM", "KILL"):
            step.run(client_groups_argv(plan, signal), timeout=SLURM_TIMEOUT_S)
            if wait_until(lambda: not steps_named(job_id, BENCH_STEP), STEP_STOP_S / 3):
                return
        scancel(*steps_named(job_id, BENCH_STEP))

    def runners(self, plan: Plan, *, job_name: str, container: bool = False) -> dict[str, NodeRunner]:
        """A step per command: inside the job (this process runs in it: the batch script) one that shares
        the job's resources; outside, a one-node job of its own, scheduled as the plan's job is."""
        options = ["--quiet", *(plan.container.srun_flags(plan.run_dir) if container and plan.container else [])]
        inside = in_allocation()
        options += [] if inside or not plan.slurm else scheduling_flags(plan.slurm)
        return {
            node.name: SrunRunner(SrunStep((node.name,), overlap=inside, job_name=job_name, options=tuple(options)))
            for node in plan.nodes
        }

    def completed_probe(self, nodes: list[dict[str, Any]], hosts: Hosts, interface: str | None) -> list[dict[str, Any]]:
        """The GPUs Slurm schedules where nvidia-smi sees none."""
        return with_scheduled_gpus(nodes)

    def scheduler_settings(self, hosts: Hosts) -> dict[str, Any]:
        return {"slurm": hosts.slurm.model_dump(exclude_defaults=True)}

    def probe_runners(self, hosts: Hosts) -> list[tuple[str | None, NodeRunner]]:
        """One job over every node, a task each; `-l` labels each line of output with its task."""
        names = tuple(node.name for node in concrete_nodes(hosts))
        options = ("-l", *scheduling_flags(hosts.slurm))
        step = SrunStep(names, overlap=False, minutes=PROBE_MINUTES, one_per_node=True, options=options)
        return [(None, SrunRunner(step))]

    def node_problems(self, plan: Plan) -> dict[str, str]:
        port = slurmd_port()
        return unanswering_daemons(plan.nodes, lambda node: port, "slurmd")

    def scheduler(self, run: RunDir) -> SchedulerView:
        job_id = self.job_id(run)
        if job_id is None:
            return SchedulerView("not submitted to Slurm")
        state = self.job_state(run)
        ended = f"Slurm job {job_id} {state.value}" if state.terminal else None
        shown = "unknown to Slurm" if state is JobState.GONE else state.value
        queued = state is JobState.PENDING
        if queued and (reason := pending_reason(job_id)):
            shown += f", reason {reason}"
        return SchedulerView(f"Slurm job {job_id}: {shown}", ended, queued)

    def finished(self, run: RunDir) -> bool:
        """The job reached a terminal state (or, cancelled or failed at submit, Slurm knows of none) and
        no task of it is seen running."""
        state = self.job_state(run)
        over = state.terminal or (state is JobState.GONE and run.ended)
        return over and not survivors(run)

    def stop(self, run: RunDir) -> list[str]:
        job_id = self.job_id(run)
        self.cancel_elastic(run)
        if job_id is None:
            return []
        self.stop_beside(run)  # a benchmark's aiperf first: the job's end might not reach all of it
        scancel(job_id)
        if not wait_until(lambda: self.job_state(run).over, CANCEL_WAIT_S):
            return [f"Slurm job {job_id} (still {self.job_state(run).value} after scancel)"]
        self.cancel_elastic(run)  # one its supervisor submitted meanwhile (a worker it restarted)
        return survivors(run)

    def cancel_elastic(self, run: RunDir) -> None:
        with contextlib.suppress(UserError):  # plan.json unreadable: the elastic jobs end with their time limit
            ElasticJobs.cancel_all(run, run.plan())


def survivors(run: RunDir) -> list[str]:
    """Tasks of the run that still run, among those this machine can see (one PID namespace, as on
    the test cluster); on a real cluster Slurm's own teardown is the guarantee."""
    left = []
    for name in run.process_names():
        for record in task_records(run.paths.task_records(name)):
            if record.visible_here() and record.running():
                left.append(f"{name} (pid {record.pid} on {record.host})")
    return left
