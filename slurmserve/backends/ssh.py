"""The SSH backend: the plan's per-host launch scripts, run stage by stage over the SSH transport.

`submit` starts a launcher (`python -m slurmserve.node.ssh_launcher RUN_DIR`) detached on this machine,
tracked like the run's other helpers: it starts the supervisor, copies each host's launch script, then
runs each stage on its hosts in parallel and waits on the stage's readiness probes.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ..config.hosts import Hosts, concrete_nodes
from ..errors import DeploymentFailed, UserError
from ..hardware.inventory import with_listed_reach
from ..planning.needs import needs_of
from ..planning.plan import Plan, PlanNode, Process, node_scratch
from ..render.files import head_files
from ..render.scripts import host_script, render_scripts
from ..runs import HELPERS, Handle, RunDir, StartedGroup
from ..runs.events import KvPathChecked
from ..runs.layout import pid_record_of
from ..transport.http import wait_ready
from ..transport.runner import TIMED_OUT, NodeRunner, Ran, fan_out_runs, unreachable
from ..transport.ssh import COMMAND_DEADLINE_S, SshRunner
from ..waiting import POLL_INTERVAL_S, Outcome, throttled, wait_until
from .base import (
    Backend,
    Launch,
    ProcessLaunch,
    SchedulerView,
    client_groups_argv,
    client_spec,
    groups_argv,
    start_supervisor,
    stop_helpers,
    unanswering_daemons,
)
from .preflight import run_node_check
from .traits import SSH_TRAITS

PREFLIGHT_DEADLINE_S = 20.0
STOP_GRACE_S = 5.0
GROUP_POLL_S = 1.0  # a removed worker's group asked after over SSH, through its drain: a round trip each
LIVENESS_CHECK_INTERVAL_S = 2.0
STARTED_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*) ([0-9]+) ?([0-9]*)")


@dataclass(frozen=True)
class Reach:
    """A run's hosts over SSH: how to reach each, the interpreter there, what to ask each host about
    (LIVE_GROUPS_MODULE's specs) and on which host each process runs."""

    nodes: dict[str, PlanNode]
    python: str
    specs: dict[str, list[str]]
    host_of: dict[str, str]


def start_problem(runner: SshRunner, outcome: Outcome[Ran]) -> str | None:
    """What kept a host's launch script from starting its stage, or None."""
    failed = runner.why_failed(outcome, COMMAND_DEADLINE_S)
    if failed or outcome.value is None or outcome.value.exited == 0:
        return failed
    return f"host {runner.node.name}: {' '.join(outcome.value.stderr.split())}"


def unfit(plan: Plan, node: PlanNode, result: Ran) -> list[str]:
    """What the node preflight on a host found lacking ("host NAME: ..."), or why it could not run."""
    if result.exited == 127:
        return [f"host {node.name}: python {plan.python} not found (set python: in the hosts file)"]
    if result.exited not in (0, 1):
        return [f"host {node.name}: the preflight check failed: {' '.join(result.stderr.split())[-300:]}"]
    return [f"host {line}" for line in result.stdout.splitlines() if line.strip()]


def stop_group(
    runner: SshRunner, argv: Callable[[str | None], list[str]], grace_s: float, poll_s: float = POLL_INTERVAL_S
) -> None:
    """SIGTERM to a process group on the runner's host (`argv(signal)`: the groups module for it), SIGKILL
    when it outlives `grace_s`. A host that does not answer may still run it: its SIGKILL is still sent."""

    def running(signal: str | None = None) -> bool:
        result = runner.run(argv(signal), timeout=COMMAND_DEADLINE_S)
        return result.exited != 0 or bool(result.stdout.split())

    if running("TERM") and not wait_until(lambda: not running(), grace_s, poll_s=poll_s):
        running("KILL")


def host_script_path(plan: Plan, host: str) -> str:
    return f"{plan.run_dir}/{host_script(host)}"


def runners_of(nodes: dict[str, PlanNode]) -> dict[str, SshRunner]:
    return {name: SshRunner(node) for name, node in nodes.items()}


class SSHBackend(Backend):
    traits = SSH_TRAITS

    def preflight(self, plan: Plan) -> None:
        wide = [p.name for p in plan.processes if len(p.nodes) > 1 and p.tasks > 1]
        if wide:
            raise UserError(
                f"hosts: backend ssh cannot start workers that span hosts ({', '.join(wide)}): "
                "one MPI world across nodes needs Slurm"
            )
        runners = runners_of({node.name: node for node in plan.nodes})
        needs = needs_of(plan, self.traits).nodes
        outcomes = fan_out_runs(
            runners,
            lambda runner: run_node_check(runner, needs[runner.node.name], PREFLIGHT_DEADLINE_S, plan.python),
            PREFLIGHT_DEADLINE_S,
        )
        problems = unreachable(runners, outcomes, PREFLIGHT_DEADLINE_S)
        for name, outcome in outcomes.items():
            if outcome.ok and outcome.value is not None:
                problems += unfit(plan, plan.node(name), outcome.value)
        if problems:
            raise UserError("hosts: " + "; ".join(problems) + ". Nothing was started.")

    def run_beside(self, run: RunDir, argv: list[str], env: dict[str, str], log: Path, timeout: float) -> int:
        """On the deployment's head host, over SSH; what it wrote under the run directory there (when the
        hosts do not share this machine's filesystem) is copied back."""
        head = SshRunner(run.plan().nodes[0])
        # In a session of its own (the client records its group): `cancel` and an interrupt signal it there.
        command = shlex.join(["setsid", "--wait", "env", *(f"{key}={value}" for key, value in env.items()), *argv])
        folder, into = shlex.quote(str(log.parent)), shlex.quote(str(log))

        def run_there(runner: SshRunner) -> int:
            return runner.shell(f"mkdir -p {folder} && {command} >>{into} 2>&1", timeout=timeout).exited

        # In a thread: waiting on it here is what Ctrl-C interrupts (without a pty, fabric's own wait goes on
        # until the remote command ends).
        outcome = fan_out_runs({"head": head}, run_there, timeout + COMMAND_DEADLINE_S)["head"]
        if outcome.error:
            raise outcome.error
        exited = TIMED_OUT if outcome.value is None else outcome.value
        if not log.exists():
            head.download(str(log.parent), log.parent)
        return exited

    def stop_beside(self, run: RunDir) -> None:
        """The client's process group on the head host, from the record it left there: TERM, then KILL."""
        plan = run.plan()
        stop_group(SshRunner(plan.nodes[0]), lambda signal: client_groups_argv(plan, signal), STOP_GRACE_S)

    def submit(self, plan: Plan, run: RunDir) -> Launch:
        """The stages need someone to wait on their probes: a launcher of their own, detached."""
        return ProcessLaunch(run, [sys.executable, "-m", "slurmserve.node.ssh_launcher", str(run.path)])

    def run_stages(self, plan: Plan, run: RunDir) -> None:
        """Start the supervisor here, then each stage's processes (hosts in parallel), waiting on the
        stage's probes. Raises DeploymentFailed, after stopping everything, when a stage fails."""
        start_supervisor(run)
        scripts = render_scripts(plan, self.traits)
        runners = runners_of({node.name: node for node in plan.nodes})
        # The configurations the head node's processes read go with its script (its files may not be ours).
        head = {f"{plan.run_dir}/{path}": text for path, text in head_files(plan, self.traits).items()}

        def copy_script(runner: SshRunner) -> None:
            host = runner.node.name
            files = {host_script_path(plan, host): scripts[host_script(host)]}
            runner.upload(files | (head if host == plan.nodes[0].name else {}))
            if plan.served_link and host == plan.nodes[0].name:
                link = f"{plan.run_dir}/{plan.served_link}"
                parent, target = shlex.quote(str(Path(link).parent)), shlex.quote(plan.model_path)
                runner.shell(f"mkdir -p {parent} && ln -sfn {target} {shlex.quote(link)}")

        failed = unreachable(runners, fan_out_runs(runners, copy_script, COMMAND_DEADLINE_S), COMMAND_DEADLINE_S)
        if failed:
            self._abort(run, f"could not copy the launch scripts: {'; '.join(failed)}")
        for number, stage in enumerate(plan.stages(), 1):
            if run.cancel_requested:  # `cancel` stops this launcher too; between two stages it may just see it
                self._abort(run, f"cancelled before stage {number}")
            if number == plan.kv_check_stage():
                self._kv_preflight(plan, run)
            hosts = {host: runners[host] for host in sorted({p.host for p in stage})}

            def start_stage(runner: SshRunner, number: int = number) -> Ran:
                return runner.shell(f"bash {shlex.quote(host_script_path(plan, runner.node.name))} {number}")

            outcomes = fan_out_runs(hosts, start_stage, COMMAND_DEADLINE_S)
            self._remember_started(run, outcomes)
            failed = [problem for host, runner in hosts.items() if (problem := start_problem(runner, outcomes[host]))]
            if failed:
                self._abort(run, f"stage {number} could not start: {'; '.join(failed)}")
            for process in stage:
                if process.ready_url and not self._wait_ready(run, process):
                    self._abort(
                        run,
                        f"{process.name} on {process.host} did not become ready at {process.ready_url}"
                        f"\n--- last lines of its log:\n{self.log_tail(run, process.name)}",
                    )

    def _kv_preflight(self, plan: Plan, run: RunDir) -> None:
        """A short UCX transfer per prefill->decode node pair over the planned devices, before any model loads."""
        from ..kvpath.checks import checks_for_plan
        from ..kvpath.transfers import failures, run_checks

        results = run_checks(checks_for_plan(plan), self.runners(plan, job_name="kvpath"))
        for result in results:
            run.record(KvPathChecked(result=result.line()))
        problem = failures(results)
        if problem:
            self._abort(run, f"KV-path preflight failed: {problem}")

    def _remember_started(self, run: RunDir, outcomes: dict[str, Outcome[Ran]]) -> None:
        """Each host's launch script prints "NAME PID START-TIME" per process it started (the PID is its
        group); anything else it prints is not a record, and is left alone."""
        plan = run.plan()
        handle = run.handle() or Handle(backend="ssh", python=plan.python)
        for host, outcome in outcomes.items():
            handle.nodes[host] = plan.node(host)
            if outcome.ok and outcome.value is not None:
                for line in outcome.value.stdout.splitlines():
                    if match := STARTED_LINE.fullmatch(line.strip()):
                        name, pgid, started = match.groups()
                        handle.processes[name] = StartedGroup(host=host, pgid=int(pgid), started=started or None)
        run.save_handle(handle)

    def _started(self, run: RunDir) -> dict[str, StartedGroup]:
        handle = run.handle()
        return handle.processes if handle else {}

    def _reach(self, run: RunDir) -> Reach:
        """The run's hosts and what to ask each about: from the plan, the groups the launcher recorded and
        each host's PID files (a process whose start never reached the launcher, a host that answered too
        late, is found all the same); when plan.json cannot be read, the recorded groups on their hosts."""
        started = self._started(run)
        try:
            plan = run.plan()
        except UserError:
            # A host the handle has no address for (one written before it kept them) answers nothing: its
            # processes are reported unverified, never as stopped.
            handle = run.handle() or Handle(backend="ssh")
            reach = Reach(handle.nodes, handle.python or sys.executable, {host: [] for host in handle.nodes}, {})
            for name, group in started.items():
                reach.specs.setdefault(group.host, []).append(f"{name}={group.pgid}:{group.started or ''}")
                reach.host_of[name] = group.host
            return reach
        reach = Reach({n.name: n for n in plan.nodes}, plan.python, {n.name: [] for n in plan.nodes}, {})
        for process in plan.processes:
            record = started.get(process.name)
            if record:
                reach.specs[record.host].append(f"{process.name}={record.pgid}:{record.started or ''}")
            reach.specs[process.host].append(f"{process.name}=@{pid_record_of(plan.run_dir, process.name)}")
            reach.host_of[process.name] = process.host
        reach.specs[plan.nodes[0].name].append(client_spec(plan))  # a benchmark's aiperf, stopped with the rest
        return reach

    def _groups(self, reach: Reach, signal: str | None = None) -> dict[str, set[str] | None]:
        """Per host, the names of the run's processes whose groups are still ours and alive there (None:
        the host did not answer); with `signal`, those are signalled first."""
        specs = reach.specs

        def ask(runner: SshRunner) -> Ran:
            argv = groups_argv(reach.python, specs[runner.node.name], signal)
            return runner.run(argv, timeout=COMMAND_DEADLINE_S)

        outcomes = fan_out_runs(runners_of({host: reach.nodes[host] for host in specs}), ask, COMMAND_DEADLINE_S)
        return {
            host: set(outcome.value.stdout.split())
            if outcome.ok and outcome.value is not None and outcome.value.exited == 0
            else None
            for host, outcome in outcomes.items()
        }

    def restart(self, run: RunDir, process: Process) -> None:
        """What is left of its process group killed (if still ours), then the host's launch script
        `--restart NAME`."""
        plan = run.plan()
        old = self._started(run).get(process.name)
        spec = f"{process.name}={old.pgid}:{old.started or ''}" if old else f"{process.name}=@/dev/null"
        kill = shlex.join(groups_argv(plan.python, [spec], "KILL")) + " >/dev/null; "
        command = f"bash {shlex.quote(host_script_path(plan, process.host))} --restart {shlex.quote(process.name)}"
        result = SshRunner(plan.host_node(process)).shell(kill + command)
        if result.exited != 0:
            raise RuntimeError(f"host {process.host}: {' '.join(result.stderr.split())}")
        self._remember_started(run, {process.host: Outcome(value=result, finished=True)})

    def stop_process(self, run: RunDir, process: Process, grace_s: float) -> None:
        """SIGTERM to its process group on its host (if still ours), SIGKILL when it outlives `grace_s`."""
        plan = run.plan()
        record = self._started(run).get(process.name)
        if record is None:
            return
        spec = f"{process.name}={record.pgid}:{record.started or ''}"
        argv = partial(groups_argv, plan.python, [spec])
        stop_group(SshRunner(plan.host_node(process)), argv, grace_s, poll_s=GROUP_POLL_S)

    def runners(self, plan: Plan, *, job_name: str, container: bool = False) -> dict[str, NodeRunner]:
        """Each host over SSH (a container is the launch script's business there: the host's tools serve)."""
        return dict(runners_of({node.name: node for node in plan.nodes}))

    def completed_probe(self, nodes: list[dict[str, Any]], hosts: Hosts, interface: str | None) -> list[dict[str, Any]]:
        """Each host reached as the hosts file reached it."""
        return with_listed_reach(nodes, hosts, interface)

    def probe_runners(self, hosts: Hosts) -> list[tuple[str | None, NodeRunner]]:
        """Each host, named as the hosts file names it."""
        return [(node.name, SshRunner(node)) for node in concrete_nodes(hosts)]

    def node_problems(self, plan: Plan) -> dict[str, str]:
        return unanswering_daemons(plan.nodes, lambda node: node.ssh.port if node.ssh and node.ssh.port else 22, "sshd")

    def _wait_ready(self, run: RunDir, process: Process) -> bool:
        url = process.ready_url or ""

        def still_alive() -> bool:
            return self.alive(run).get(process.name) is not False

        return wait_ready(url, process.ready_timeout_s, throttled(still_alive, LIVENESS_CHECK_INTERVAL_S))

    def _abort(self, run: RunDir, reason: str) -> None:
        leftovers = self.stop(run)
        raise DeploymentFailed(reason + (f"\nstill running after stop: {', '.join(leftovers)}" if leftovers else ""))

    def alive(self, run: RunDir, in_job: bool = False) -> dict[str, bool | None]:
        reach = self._reach(run)
        started = self._started(run)
        states: dict[str, bool | None] = dict.fromkeys(reach.host_of)
        for host, running in self._groups(reach).items():
            if running is None:  # an unreachable host leaves its processes unknown (None)
                continue
            for name, its_host in reach.host_of.items():
                if its_host == host and (name in started or name in running):
                    states[name] = name in running
        return states

    def scheduler(self, run: RunDir) -> SchedulerView:
        return SchedulerView(f"processes on {len(self._reach(run).nodes)} host(s) over SSH")

    def nothing_runs(self, run: RunDir) -> bool:
        """Every host answered, and none runs a process of the run (an unreachable host may)."""
        return all(running == set() for running in self._groups(self._reach(run)).values())

    def move_run_dir(self, plan: Plan, target: str) -> None:
        """Each host keeps its copy of the run directory (scripts, logs, PID files) at the plan's path."""
        old, new = shlex.quote(plan.run_dir), shlex.quote(target)
        # Done when the old path is gone: hosts sharing a filesystem race to move the same folder.
        move = f"test ! -e {old} || mv -T {old} {new} 2>/dev/null || test ! -e {old}"
        runners = runners_of({node.name: node for node in plan.nodes})
        outcomes = fan_out_runs(runners, lambda runner: runner.shell(move), COMMAND_DEADLINE_S)
        for host, outcome in outcomes.items():
            if not outcome.ok or outcome.value is None or outcome.value.exited != 0:
                raise UserError(
                    f"run {plan.run_name}: host {host} could not rename its copy of {plan.run_dir} to {target}"
                )

    def stop(self, run: RunDir) -> list[str]:
        stop_helpers(run, *HELPERS)
        reach = self._reach(run)

        def left(signal: str | None = None) -> dict[str, list[str]]:
            return {
                host: ["(host unreachable: cannot verify)"] if running is None else sorted(running)
                for host, running in self._groups(reach, signal).items()
            }

        if any(left("TERM").values()) and not wait_until(lambda: not any(left().values()), STOP_GRACE_S):
            left("KILL")
            wait_until(lambda: not any(left().values()), STOP_GRACE_S)
        scratch = ["rm", "-rf", node_scratch(run.name)]
        fan_out_runs(
            runners_of(reach.nodes), lambda runner: runner.run(scratch, timeout=COMMAND_DEADLINE_S), COMMAND_DEADLINE_S
        )
        return [f"{name} on {host}" for host, names in left().items() for name in names]

    def log_tail(self, run: RunDir, process: str, lines: int = 30) -> str:
        plan = run.plan()
        found = plan.process(process)
        tail = ["tail", "-n", str(lines), f"{plan.run_dir}/{found.log}"]
        return SshRunner(plan.host_node(found)).run(tail, timeout=COMMAND_DEADLINE_S).stdout

    def log_lines(self, run: RunDir, process: str, follow: bool, tail: int | None = None) -> Iterator[str]:
        plan = run.plan()
        found = plan.process(process)
        start = "+1" if tail is None else str(tail)  # +1: from the first line
        argv = ["tail", "-n", start, *(["-F"] if follow else []), f"{plan.run_dir}/{found.log}"]
        return SshRunner(plan.host_node(found)).lines(argv)
