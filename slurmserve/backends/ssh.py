"""The SSH backend: the plan's per-host launch scripts, run stage by stage over fabric.

fabric bounds neither the connect nor the join of a fan-out: one hung host would stall everything.
So every fan-out here runs one daemon thread per host and waits for all of them up to a deadline;
a host that has not answered by then is reported as such, and nothing waits on it any more.
"""

from __future__ import annotations

import io
import json
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import fabric
import paramiko

from ..errors import DeploymentFailed, UserError
from ..health import http_ok, throttled, wait_until
from ..plan import Plan, PlanNode, Process, node_scratch
from ..render import LAUNCHER_LOG, host_of, render_scripts
from ..runs import RunDir
from .base import Backend, start_supervisor, stop_helpers, unanswering_daemons
from .checks import python_modules

CONNECT_TIMEOUT_S = 10.0
PREFLIGHT_DEADLINE_S = 20.0
COMMAND_DEADLINE_S = 60.0
STOP_GRACE_S = 5.0
LIVENESS_CHECK_INTERVAL_S = 2.0

# Run with the plan's Python on each host (`python -c`): which of the given process groups still have a live member.
GROUPS_ALIVE_PY = """
import os, sys
alive = set()
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            alive.add(fields[2])
print(" ".join(group for group in sys.argv[1:] if group in alive))
"""

# Run with the plan's Python on each host before anything starts: what the host lacks.
PREFLIGHT_PY = """
import importlib.util, json, os, shutil, socket, subprocess, sys
address, modules, ports = sys.argv[1], sys.argv[2].split(","), [int(p) for p in sys.argv[3].split(",") if p]
paths = [p for p in sys.argv[4].split(",") if p]
def busy(port):
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return True
    return False
gpus = 0
if shutil.which("nvidia-smi"):
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
    gpus = sum(line.startswith("GPU ") for line in listing.splitlines())
print(json.dumps({"missing_modules": [m for m in modules if m and importlib.util.find_spec(m) is None],
                  "busy_ports": [p for p in ports if busy(p)], "gpus": gpus,
                  "missing_paths": [p for p in paths if not os.path.exists(p)]}))
"""


@dataclass
class Outcome:
    value: object = None
    error: BaseException | None = None
    finished: bool = False


def fan_out(items: list, work: Callable, deadline_s: float) -> dict:
    """`work(item)` for every item at once, each in a daemon thread; returns item -> Outcome after at
    most `deadline_s` (an unfinished Outcome: the host did not answer in time)."""
    outcomes = {item: Outcome() for item in items}

    def run(item) -> None:
        try:
            outcomes[item].value = work(item)
        except BaseException as error:  # reported to the caller, host by host
            outcomes[item].error = error
        outcomes[item].finished = True

    threads = [threading.Thread(target=run, args=(item,), daemon=True) for item in items]
    for thread in threads:
        thread.start()
    end = time.monotonic() + deadline_s
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    return outcomes


def connect(node: PlanNode) -> fabric.Connection:
    target = node.ssh
    connect_kwargs = {"banner_timeout": CONNECT_TIMEOUT_S, "auth_timeout": CONNECT_TIMEOUT_S}
    if target and target.identity_file:
        connect_kwargs |= {"key_filename": target.identity_file, "look_for_keys": False, "allow_agent": False}
    gateway = fabric.Connection(target.jump, connect_timeout=CONNECT_TIMEOUT_S) if target and target.jump else None
    return fabric.Connection(node.address, user=target.user if target else None, port=target.port if target else None,
                             connect_timeout=CONNECT_TIMEOUT_S, connect_kwargs=connect_kwargs, gateway=gateway)


def remote(node: PlanNode, command: str, timeout: float = COMMAND_DEADLINE_S):
    """Run a command on a node. No pty (background processes must not hang on the session) and no
    stdin: invoke feeds a non-terminal stdin one character per 10 ms."""
    with connect(node) as connection:
        return connection.run(command, hide=True, warn=True, pty=False, timeout=timeout, in_stream=False)


def remote_python(node: PlanNode, python: str, code: str, *arguments: str, timeout: float = COMMAND_DEADLINE_S):
    return remote(node, " ".join(shlex.quote(word) for word in (python, "-c", code, *arguments)), timeout=timeout)


def upload(node: PlanNode, files: dict[str, str]) -> None:
    """Write files (absolute path -> text) on a node over SFTP, making their folders first."""
    folders = sorted({str(Path(path).parent) for path in files})
    with connect(node) as connection:
        connection.run("mkdir -p " + " ".join(map(shlex.quote, folders)), hide=True, pty=False, in_stream=False)
        for path, text in files.items():
            connection.put(io.BytesIO(text.encode()), path)


def why_unreachable(node: PlanNode, outcome: Outcome) -> str | None:
    """None when the host answered; else one phrase on what went wrong, naming the host."""
    where = f"host {node.name} ({node.address})"
    if not outcome.finished:
        return f"{where}: no answer within {PREFLIGHT_DEADLINE_S:g} s"
    error = outcome.error
    if error is None:
        return None
    if isinstance(error, paramiko.AuthenticationException):
        return f"{where}: SSH authentication failed (wrong key or user?)"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return f"{where}: unreachable (connection timed out)"
    if isinstance(error, (OSError, paramiko.SSHException)):
        return f"{where}: unreachable ({error})"
    return f"{where}: {type(error).__name__}: {error}"


def shared_paths(plan: Plan) -> list[str]:
    """What every host must see on the shared filesystem: the model cache a staged model goes to, or
    the model folder the workers read."""
    if plan.model_stage:
        return [plan.model_stage.cache]
    worker = next((p for p in plan.processes if p.is_worker), None)
    flag = next((f for f in ("--model-path", "--model") if worker and f in worker.command), None)
    model_path = worker.command[worker.command.index(flag) + 1] if flag else ""
    return [model_path] if model_path.startswith("/") else []


def start_problem(node: PlanNode, outcome: Outcome) -> str | None:
    """What kept a host's launch script from starting its stage, or None."""
    unreachable = why_unreachable(node, outcome)
    if unreachable or outcome.value.exited == 0:
        return unreachable
    return f"host {node.name}: {' '.join(outcome.value.stderr.split())}"


class SSHBackend(Backend):
    def preflight(self, plan: Plan) -> None:
        wide = [p.name for p in plan.processes if len(p.nodes) > 1 and p.tasks > 1]
        if wide:
            raise UserError(f"hosts: backend ssh cannot start workers that span hosts ({', '.join(wide)}): one MPI world across nodes needs Slurm")
        nodes = {node.name: node for node in plan.nodes}
        ports = {name: [port for p in plan.processes if host_of(p) == name for port in p.ports.values()] for name in nodes}
        modules = ",".join(python_modules(plan))

        paths = ",".join(shared_paths(plan))

        def check(name: str):
            return remote_python(nodes[name], plan.python, PREFLIGHT_PY, nodes[name].address, modules,
                                 ",".join(map(str, ports[name])), paths, timeout=PREFLIGHT_DEADLINE_S)

        outcomes = fan_out(list(nodes), check, PREFLIGHT_DEADLINE_S)
        problems = [reason for name in nodes if (reason := why_unreachable(nodes[name], outcomes[name]))]
        for name, outcome in outcomes.items():
            if outcome.finished and outcome.error is None:
                problems += self._unfit(plan, nodes[name], outcome.value)
        if problems:
            raise UserError("hosts: " + "; ".join(problems) + ". Nothing was started.")

    def _unfit(self, plan: Plan, node: PlanNode, result) -> list[str]:
        where = f"host {node.name}"
        if result.exited == 127:
            return [f"{where}: python {plan.python} not found (set python: in the hosts file)"]
        if result.exited != 0:
            return [f"{where}: the preflight check failed: {' '.join(result.stderr.split())[-300:]}"]
        found = json.loads(result.stdout)
        problems = [f"{where}: python {plan.python} cannot import {', '.join(found['missing_modules'])}"] if found["missing_modules"] else []
        if found["missing_paths"]:
            problems.append(f"{where}: {', '.join(found['missing_paths'])} not found (the model on the shared filesystem)")
        if found["busy_ports"]:
            problems.append(f"{where}: ports {', '.join(map(str, found['busy_ports']))} already in use")
        needed = max((len(p.gpus) for p in plan.processes if host_of(p) == node.name), default=0)
        if plan.engine != "mocker" and found["gpus"] < needed:
            problems.append(f"{where}: {found['gpus']} GPUs visible, the plan needs {needed}")
        return problems

    def launch(self, plan: Plan, run: RunDir, wait: bool) -> None:
        if not wait:  # the stages still need someone to wait on probes: a detached launcher does it
            with open(run.path / LAUNCHER_LOG, "a") as log:
                subprocess.Popen([sys.executable, "-m", "slurmserve.backends.ssh", str(run.path)], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            return
        self.run_stages(plan, run)

    def run_stages(self, plan: Plan, run: RunDir) -> None:
        """Start the supervisor here, then each stage's processes (hosts in parallel), waiting on the
        stage's probes."""
        start_supervisor(run)
        scripts = render_scripts(plan)
        nodes = {node.name: node for node in plan.nodes}

        def script_of(host: str) -> str:
            return f"{plan.run_dir}/launch-{host}.sh"

        uploaded = fan_out(list(nodes), lambda host: upload(nodes[host], {script_of(host): scripts[f"launch-{host}.sh"]}), COMMAND_DEADLINE_S)
        unreachable = [reason for host in nodes if (reason := why_unreachable(nodes[host], uploaded[host]))]
        if unreachable:
            self._abort(run, f"could not copy the launch scripts: {'; '.join(unreachable)}")
        preflight_pending = plan.kv_preflight
        for number, stage in enumerate(plan.stages(), 1):
            if preflight_pending and any(p.is_worker for p in stage):
                preflight_pending = False
                self._kv_preflight(plan, run)
            hosts = sorted({host_of(p) for p in stage})
            outcomes = fan_out(hosts, lambda host: remote(nodes[host], f"bash {shlex.quote(script_of(host))} {number}"), COMMAND_DEADLINE_S)
            self._remember_started(run, outcomes)
            failed = [problem for host in hosts if (problem := start_problem(nodes[host], outcomes[host]))]
            if failed:
                self._abort(run, f"stage {number} could not start: {'; '.join(failed)}")
            for process in stage:
                if process.ready_url and not self._wait_ready(run, process):
                    self._abort(run, f"{process.name} on {host_of(process)} did not become ready at {process.ready_url}"
                                     f"\n--- last lines of its log:\n{self.log_tail(run, process.name)}")

    def _kv_preflight(self, plan: Plan, run: RunDir) -> None:
        """A short UCX transfer per prefill->decode node pair over the planned devices, before any model loads."""
        from ..kvpath import checks_for_plan, failures, run_checks, ssh_run_on

        results = run_checks(checks_for_plan(plan), ssh_run_on(plan))
        for result in results:
            run.record("kv path checked", result=result.line())
        problem = failures(results)
        if problem:
            self._abort(run, f"KV-path preflight failed: {problem}")

    def _remember_started(self, run: RunDir, outcomes: dict) -> None:
        """Each host's launch script prints "NAME PID" per process it started (the PID is its group)."""
        handle = run.handle() or {"backend": "ssh", "processes": {}}
        for host, outcome in outcomes.items():
            if outcome.finished and outcome.error is None:
                for line in outcome.value.stdout.splitlines():
                    name, pgid = line.split()
                    handle["processes"][name] = {"host": host, "pgid": int(pgid)}
        run.save_handle(handle)

    def restart(self, run: RunDir, process: Process) -> None:
        """What is left of its process group killed, then the host's launch script `--restart NAME`."""
        plan, host = run.plan(), host_of(process)
        old = run.handle().get("processes", {}).get(process.name)
        kill = f"kill -KILL -- -{old['pgid']} 2>/dev/null; " if old else ""
        result = remote(plan.node(host), kill + f"bash {shlex.quote(f'{plan.run_dir}/launch-{host}.sh')} --restart {process.name}")
        if result.exited != 0:
            raise RuntimeError(f"host {host}: {' '.join(result.stderr.split())}")
        self._remember_started(run, {host: Outcome(value=result, finished=True)})

    def node_problems(self, plan: Plan) -> dict[str, str]:
        return unanswering_daemons(plan.nodes, lambda node: (node.ssh.port if node.ssh and node.ssh.port else 22), "sshd")

    def _wait_ready(self, run: RunDir, process) -> bool:
        def still_alive() -> bool:
            return self.alive(run).get(process.name) is not False
        return wait_until(lambda: http_ok(process.ready_url), process.ready_timeout_s, throttled(still_alive, LIVENESS_CHECK_INTERVAL_S))

    def _abort(self, run: RunDir, reason: str) -> None:
        leftovers = self.stop(run)
        raise DeploymentFailed(reason + (f"\nstill running after stop: {', '.join(leftovers)}" if leftovers else ""))

    def _groups_by_host(self, run: RunDir) -> dict[str, dict[int, str]]:
        by_host: dict[str, dict[int, str]] = {}
        for name, started in run.handle().get("processes", {}).items():
            by_host.setdefault(started["host"], {})[started["pgid"]] = name
        return by_host

    def _alive_groups(self, plan: Plan, by_host: dict[str, dict[int, str]]) -> dict:
        nodes = {node.name: node for node in plan.nodes}
        return fan_out(list(by_host), lambda host: remote_python(
            nodes[host], plan.python, GROUPS_ALIVE_PY, *map(str, by_host[host])), COMMAND_DEADLINE_S)

    def alive(self, run: RunDir) -> dict[str, bool | None]:
        plan = run.plan()
        by_host = self._groups_by_host(run)
        outcomes = self._alive_groups(plan, by_host)
        states: dict[str, bool | None] = {p.name: None for p in plan.processes}
        for host, groups in by_host.items():
            outcome = outcomes[host]
            if outcome.finished and outcome.error is None and outcome.value.exited == 0:
                running = {int(g) for g in outcome.value.stdout.split()}
                states |= {name: pgid in running for pgid, name in groups.items()}
        return states  # an unreachable host leaves its processes unknown (None)

    def describe(self, run: RunDir) -> str:
        return f"processes on {len(run.plan().nodes)} host(s) over SSH"

    def stop(self, run: RunDir) -> list[str]:
        stop_helpers(run, "supervisor")
        plan = run.plan()
        nodes = {node.name: node for node in plan.nodes}
        by_host = self._groups_by_host(run)

        def signal(signal_name: str) -> dict:
            return fan_out(list(by_host), lambda host: remote(nodes[host], " ; ".join(
                f"kill -{signal_name} -- -{pgid} 2>/dev/null" for pgid in by_host[host]) + " ; true"), COMMAND_DEADLINE_S)

        def left() -> dict[str, list[str]]:
            outcomes = self._alive_groups(plan, by_host)
            return {host: ([groups[int(g)] for g in outcomes[host].value.stdout.split()]
                           if outcomes[host].finished and outcomes[host].error is None else ["(host unreachable: cannot verify)"])
                    for host, groups in by_host.items()}

        signal("TERM")
        if not wait_until(lambda: not any(left().values()), STOP_GRACE_S):
            signal("KILL")
            wait_until(lambda: not any(left().values()), STOP_GRACE_S)
        fan_out(list(nodes), lambda host: remote(nodes[host], f"rm -rf {shlex.quote(node_scratch(plan.run_name))}"), COMMAND_DEADLINE_S)
        return [f"{name} on {host}" for host, names in left().items() for name in names]

    def log_tail(self, run: RunDir, process: str, lines: int = 30) -> str:
        found = run.plan().process(process)
        node = run.plan().node(host_of(found))
        return remote(node, f"tail -n {lines} {shlex.quote(f'{run.plan().run_dir}/{found.log}')}").stdout

    def show_log(self, run: RunDir, process: str, follow: bool) -> None:
        plan = run.plan()
        found = plan.process(process)
        path = shlex.quote(f"{plan.run_dir}/{found.log}")
        with connect(plan.node(host_of(found))) as connection:
            connection.run(f"tail -n +1 {'-F' if follow else ''} {path}", pty=False, warn=True, out_stream=sys.stdout, in_stream=False)


def main(run_dir: str) -> None:
    """The detached launcher behind `submit --no-wait`: runs the stages, records a failure."""
    run = RunDir(Path(run_dir))
    try:
        SSHBackend().run_stages(run.plan(), run)
    except DeploymentFailed as error:
        run.record("failed", reason=str(error))
        print(f"slurmserve: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1])
