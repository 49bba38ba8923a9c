"""The Slurm backend: the plan's sbatch script, submitted with sbatch; state from squeue, then sacct.

Job state comes from `squeue` while Slurm remembers the job, then `sacct` (accounting) or `sacct -c`
(the jobcomp file, on clusters without accounting). A terminal state, once seen, is kept in the run
directory, so later `status` calls need not ask Slurm again.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import DeploymentFailed, UserError
from ..health import wait_until
from ..plan import Plan, Process
from ..procs import pid_alive, task_records
from ..render import LAUNCHER_LOG, render_script
from ..runs import RunDir
from ..slurmcmd import gpus_in_gres, node_gres, slurm
from .base import Backend, unanswering_daemons
from .checks import missing_modules, python_modules

TERMINAL_STATES = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT"}
CANCEL_WAIT_S = 60
DEFAULT_SLURMD_PORT = 6818


def check_cluster_fits(plan: Plan) -> None:
    """The partition exists and has the planned nodes, with at least the planned GPUs each."""
    partition = plan.slurm.partition
    if partition:
        known = slurm("sinfo", "-h", "-o", "%R").stdout.split()
        if partition not in known:
            raise UserError(f"slurm.partition: partition {partition!r} does not exist (partitions: {', '.join(known) or 'none'})")
    gres_of = node_gres(partition)
    for node in plan.nodes:
        where = f"partition {partition}" if partition else "the cluster"
        if node.name not in gres_of:
            raise UserError(f"hosts: node {node.name} is not in {where} (nodes: {', '.join(sorted(gres_of)) or 'none'})")
        has = gpus_in_gres(gres_of[node.name])
        if has < node.gpus:
            raise UserError(f"node.gpus: the hosts file gives {node.name} {node.gpus} GPUs, Slurm has {has} (Gres={gres_of[node.name]})")


def check_sbatch_accepts(plan: Plan) -> None:
    """`sbatch --test-only`: Slurm's own verdict on the script, without submitting anything."""
    with tempfile.NamedTemporaryFile("w", suffix=".sbatch") as script:
        script.write(render_script(plan))
        script.flush()
        result = slurm("sbatch", "--test-only", script.name, check=False)
    if result.returncode != 0:
        raise UserError(f"sbatch rejects the job: {' '.join(result.stderr.split())}")


class SlurmBackend(Backend):
    def preflight(self, plan: Plan) -> None:
        if shutil.which("sbatch") is None:
            raise UserError("hosts: backend slurm, but sbatch is not installed on this machine")
        check_cluster_fits(plan)
        check_sbatch_accepts(plan)
        # The nodes run the interpreter slurmserve runs in (same path on the shared filesystem): when it
        # is visible here, check it has what the plan needs.
        if Path(plan.python).exists():
            missing = missing_modules(plan.python, python_modules(plan))
            if missing:
                raise UserError(f"python {plan.python} lacks {', '.join(missing)}: install Dynamo with ./install.sh, or set python: in the hosts file")

    def launch(self, plan: Plan, run: RunDir, wait: bool) -> None:
        result = slurm("sbatch", "--parsable", str(run.path / "slurmserve.sbatch"), check=False)
        if result.returncode != 0:
            raise DeploymentFailed(f"sbatch failed: {' '.join(result.stderr.split())}")
        job_id = result.stdout.strip().split(";")[0]
        run.save_handle({"backend": "slurm", "job_id": job_id})
        run.record("job submitted", job_id=job_id)

    def job_id(self, run: RunDir) -> str | None:
        job_id = run.handle().get("job_id")
        if job_id is None:  # a CLI killed between sbatch and saving the handle: the job by its name
            found = slurm("squeue", "-h", "--name", job_name(run.name), "-o", "%i", check=False).stdout.split()
            if found:
                job_id = found[0]
                run.save_handle({"backend": "slurm", "job_id": job_id})
        return job_id

    def job_state(self, run: RunDir) -> str | None:
        if "final_state" in run.handle():
            return run.handle()["final_state"]
        job_id = self.job_id(run)
        if job_id is None:
            return None
        state = query_job_state(job_id)
        if state in TERMINAL_STATES:
            run.save_handle(run.handle() | {"final_state": state})
        return state

    def alive(self, run: RunDir) -> dict[str, bool | None]:
        state = self.job_state(run)
        names = [p.name for p in run.plan().processes]
        started = {name for name in names if task_records(run.path / "pids" / f"{name}.tasks")}
        if state != "RUNNING":
            return {name: (False if name in started else None) for name in names}
        steps = set(slurm("squeue", "-h", "--steps", "-j", self.job_id(run), "-o", "%j", check=False).stdout.split())
        return {name: True if name in steps else (False if name in started else None) for name in names}

    def supervised_alive(self, run: RunDir) -> dict[str, bool | None]:
        """Inside the job, on the batch host: each step's srun is a local process (pids/NAME.srun)
        that ends when the step does; no question to slurmctld per tick."""
        alive = {}
        for process in run.plan().processes:
            pid_file = run.path / "pids" / f"{process.name}.srun"
            alive[process.name] = pid_alive(int(pid_file.read_text())) if pid_file.exists() else None
        return alive

    def restart(self, run: RunDir, process: Process) -> None:
        """A new srun step in the allocation, from the job's own script (`--restart NAME`)."""
        with open(run.path / LAUNCHER_LOG, "a") as log:
            step = subprocess.Popen(["bash", str(run.path / "slurmserve.sbatch"), "--restart", process.name],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        (run.path / "pids" / f"{process.name}.srun").write_text(f"{step.pid}\n")

    def node_problems(self, plan: Plan) -> dict[str, str]:
        port = slurmd_port()
        return unanswering_daemons(plan.nodes, lambda node: port, "slurmd")

    def ended(self, run: RunDir) -> str | None:
        state = self.job_state(run)
        return f"Slurm job {self.job_id(run)} {state}" if state in TERMINAL_STATES else None

    def describe(self, run: RunDir) -> str:
        job_id = self.job_id(run)
        return f"Slurm job {job_id}: {self.job_state(run) or 'unknown to Slurm'}" if job_id else "not submitted to Slurm"

    def stop(self, run: RunDir) -> list[str]:
        job_id = self.job_id(run)
        if job_id is None:
            return []
        slurm("scancel", job_id, check=False)
        if not wait_until(lambda: (self.job_state(run) or "GONE") in TERMINAL_STATES | {"GONE"}, CANCEL_WAIT_S):
            return [f"Slurm job {job_id} (still {self.job_state(run)} after scancel)"]
        return survivors(run)


def job_name(run_name: str) -> str:
    return f"slurmserve-{run_name}"  # as the sbatch template names the job


@functools.cache
def slurmd_port() -> int:
    for line in slurm("scontrol", "show", "config", check=False).stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "SlurmdPort" and value.strip().isdigit():
            return int(value)
    return DEFAULT_SLURMD_PORT


def first_word(command: list[str]) -> str | None:
    result = slurm(*command, check=False)
    words = result.stdout.split()
    return words[0] if result.returncode == 0 and words else None  # "CANCELLED by 0" -> CANCELLED


def squeue_state(job_id: str) -> str | None:
    """While slurmctld remembers the job (MinJobAge after it ends)."""
    return first_word(["squeue", "-h", "-j", job_id, "-o", "%T"])


def sacct_state(job_id: str) -> str | None:
    """From slurmdbd; None where accounting is disabled."""
    return first_word(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"])


def jobcomp_state(job_id: str) -> str | None:
    """From the job completion file: clusters without accounting, once the job has ended."""
    return first_word(["sacct", "-c", "-n", "-P", "-j", job_id, "-o", "State"])


def query_job_state(job_id: str) -> str | None:
    for source in (squeue_state, sacct_state, jobcomp_state):
        state = source(job_id)
        if state:
            return state
    return None


def survivors(run: RunDir) -> list[str]:
    """Tasks of the run that still run, among those this machine can see (one PID namespace, as on
    the test cluster); on a real cluster Slurm's own teardown is the guarantee."""
    left = []
    for process in run.plan().processes:
        for record in task_records(run.path / "pids" / f"{process.name}.tasks"):
            if record.visible_here() and record.running():
                left.append(f"{process.name} (pid {record.pid} on {record.host})")
    return left

