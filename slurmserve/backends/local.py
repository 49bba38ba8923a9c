"""The local backend: the plan's launch script, run on this machine; processes tracked by process group."""

from __future__ import annotations

import shutil
import subprocess

from ..errors import DeploymentFailed, UserError
from ..plan import Plan, Process, node_scratch
from ..procs import pid_alive, stop_groups
from ..render import LAUNCHER_LOG, script_name
from ..runs import RunDir
from .base import Backend, stop_helpers
from .checks import busy_ports, missing_programs

# Generous: it covers the slowest stage of a mock stack; real engines run on Slurm or SSH hosts.
LAUNCH_TIMEOUT_S = 3900


class LocalBackend(Backend):
    def preflight(self, plan: Plan) -> None:
        busy = busy_ports(plan, plan.nodes[0].address)
        if busy:
            held = ", ".join(f"{port} ({process} {label})" for process, label, port in busy)
            if any(process == "frontend" for process, _, _ in busy):
                field, hint = "frontend.http_port", "set frontend.http_port to a free port"
            else:
                field, hint = f"port block {plan.port_block}", "submit again: another run name takes another port block"
            raise UserError(f"{field}: ports already in use on this machine: {held}; {hint}")
        missing = missing_programs(plan)
        if missing:
            raise UserError(
                f"this machine lacks what run {plan.run_name} needs: {'; '.join(missing)}. "
                "Install Dynamo with ./install.sh (it also installs slurmserve), or pick a recipe whose engine is installed."
            )

    def launch(self, plan: Plan, run: RunDir, wait: bool) -> None:
        """The launch script, in its own session with its PID recorded: a CLI killed mid-submit leaves
        it finishing the start (and `cancel` able to stop it)."""
        with open(run.path / LAUNCHER_LOG, "a") as launcher_log:
            launcher = subprocess.Popen(["bash", str(run.path / script_name(plan))], stdin=subprocess.DEVNULL,
                                        stdout=launcher_log, stderr=subprocess.STDOUT, start_new_session=True)
        (run.path / "pids" / "launcher.pid").write_text(f"{launcher.pid}\n")
        if not wait:
            return
        try:
            returncode = launcher.wait(timeout=LAUNCH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            returncode = None
        if returncode != 0:
            leftovers = self.stop(run)
            log = (run.path / LAUNCHER_LOG).read_text(errors="replace").strip()
            detail = log or (f"launch script exited {returncode}" if returncode is not None else "launch script timed out")
            raise DeploymentFailed(detail + (f"\nstill running after stop: {', '.join(leftovers)}" if leftovers else ""))

    def restart(self, run: RunDir, process: Process) -> None:
        old = run.pid(process.name)
        if old is not None:
            stop_groups([old], grace_s=2.0)  # what is left of its group (children of the dead process)
        result = subprocess.run(["bash", str(run.path / script_name(run.plan())), "--restart", process.name],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(result.stderr.strip() or f"launch script exited {result.returncode}")

    def _pgids(self, run: RunDir) -> dict[str, int]:
        return {name: pid for name in (p.name for p in run.plan().processes) if (pid := run.pid(name)) is not None}

    def alive(self, run: RunDir) -> dict[str, bool | None]:
        return {p.name: None if (pid := run.pid(p.name)) is None else pid_alive(pid) for p in run.plan().processes}

    def describe(self, run: RunDir) -> str:
        return "processes on this machine"

    def stop(self, run: RunDir) -> list[str]:
        stop_helpers(run, "launcher", "supervisor")
        pgids = self._pgids(run)
        still_running = stop_groups(list(pgids.values()))
        shutil.rmtree(node_scratch(run.name), ignore_errors=True)
        return [f"{name} (process group {pgid})" for name, pgid in pgids.items() if pgid in still_running]
