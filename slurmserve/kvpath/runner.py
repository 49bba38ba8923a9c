"""KV-path preflight: a short UCX transfer between each prefill node and each decode node, over the
devices the plan gives the workers, before any model is loaded.

A KV transfer over a missing or wrong HCA shows up only on the first request, after the model load.
`ucx_perftest` (Debian's `ucx-utils`) finds it in about a second: a server on the decode node, a
client on the prefill node connecting to it, both with the planned `UCX_NET_DEVICES` (and `UCX_TLS`
when the recipe sets one). A failure names the pair and the device, with UCX's own reason:

    KV path node1 -> node2 over mlx5_0:1: on node1: network device 'mlx5_0:1' is not available, ...

What ucx_perftest does, measured (UCX 1.13.1):
- a device that does not exist: UCX fails within milliseconds of the client connecting ("no usable
  transports/devices", exit 255). When only the server's device is missing, the client can hang
  until killed, so both sides run under `timeout` and the server's failure is reported at once.
- a list where only some devices exist: the test passes on the others with a WARN naming the missing
  one; that is still a wrong plan, so it fails the check too.
- a client started before its server listens gets "connect() failed: Connection refused" and is
  retried for CONNECT_WINDOW_S (a server launched by srun or SSH takes a moment to listen).
- with UCX_TLS unset, two namespaces of one machine talk over shared memory (cma/sysv), not the
  device: the lab's fallback therefore sets UCX_TLS=tcp. Across real nodes the default is fine.

A pair on one node is skipped (its KV cache does not cross a NIC). A side's devices are the union of
what its ranks on that node were given, tested in one UCX context: each must exist, though one
transfer uses at most UCX_MAX_RNDV_RAILS (2) of them.

The commands are plain argv lists; how they reach a node is a `run_on(node, argv, env, timeout)`
callable returning (exit status, stdout, stderr): `slurm_run_on` (srun steps) and `ssh_run_on`
(fabric), so the same checks run inside a Slurm job and over SSH.

    python -m slurmserve.node.kvcheck RUN_DIR/plan.json   # inside the job (srun --overlap), or for SSH runs
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..planning.plan import Plan
from ..waiting import fan_out
from .checks import PairCheck, rounds
from .perftest import (
    BANDWIDTH_TEST,
    CONNECT_WINDOW_S,
    KILL_AFTER_S,
    LATENCY_TEST,
    PERFTEST,
    RUN_TIMEOUT_S,
    SIGPIPE,
    TIMED_OUT,
    PerfResult,
    client_command,
    informative,
    lanes,
    missing_devices,
    never_connected,
    parse_perftest,
    reason,
    server_command,
    ucx_messages,
    with_env,
)

SERVER_GRACE_S = 3.0  # after the client ends, how long the server gets to end (and tell why it failed)
ROUND_SLACK_S = 10.0  # srun or SSH launching both sides, on top of the transfers' own bounds
RETRY_INTERVAL_S = 0.2

# (node, argv, env, timeout_s) -> (exit status, stdout, stderr)
RunOn = Callable[[str, Sequence[str], dict[str, str], float], tuple[int, str, str]]

# Thread ident -> how to stop what that thread's run_on started here (an srun): a check that fails on
# one side stops the other at once instead of leaving it to its timeout, and nothing outlives this process.
_CANCEL: dict[int, Callable[[], None]] = {}


# ---------------------------------------------------------------------------------------------
# Running a check


@dataclass
class CheckResult:
    check: PairCheck
    ok: bool
    bandwidth_mbs: float | None = None
    latency_us: float | None = None  # only when the latency test ran
    lanes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None  # "KV path node1 -> node2 over mlx5_0:1: on node1: ..."

    def line(self) -> str:
        if not self.ok:
            return f"FAILED {self.error}"
        latency = f", latency {self.latency_us:.1f} us" if self.latency_us is not None else ""
        via = f" [{' '.join(self.lanes)}]" if self.lanes else ""
        return f"KV path {self.check.route()}: {self.bandwidth_mbs:.0f} MB/s{latency}{via} ({self.seconds:.1f} s)"


class CheckFailed(Exception):
    pass


class _Background:
    """run_on in a daemon thread: a hung side never blocks the caller. cancel() stops it where the
    run_on can (srun); elsewhere the `timeout` it runs under ends it on the node."""

    def __init__(self, run_on: RunOn, node: str, argv: list[str], env: dict[str, str], timeout_s: float):
        self.result: tuple[int, str, str] | None = None
        self._done = threading.Event()

        def work() -> None:
            try:
                self.result = run_on(node, argv, env, timeout_s)
            except Exception as error:  # run_on's own trouble (SSH, srun missing): reported as a failure
                self.result = (255, "", f"{type(error).__name__}: {error}")
            self._done.set()

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        stop = _CANCEL.get(self._thread.ident or 0) if not self.done else None
        if stop:
            stop()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, seconds: float) -> bool:
        return self._done.wait(seconds)

    @property
    def output(self) -> str:
        return "\n".join(self.result[1:]) if self.result else ""

    @property
    def rc(self) -> int:
        """Its exit status; TIMED_OUT while it still runs."""
        return self.result[0] if self.result else TIMED_OUT

    @property
    def stdout(self) -> str:
        return self.result[1] if self.result else ""


def _transfer(
    check: PairCheck, run_on: RunOn, test: Sequence[str], perftest: str, connect_window_s: float, timeout_s: float
) -> tuple[PerfResult, str]:
    """One ucx_perftest run between the pair: (its result, the client's output); CheckFailed names the side."""
    server_timeout = connect_window_s + timeout_s
    server = _Background(
        run_on, check.decode, *server_command(check, server_timeout, perftest), server_timeout + KILL_AFTER_S + 5
    )
    started = [server]
    try:
        return _exchange(check, run_on, test, perftest, connect_window_s, timeout_s, server, started)
    finally:
        for run in started:  # a side still running after the verdict (a hung client, a server nobody reached)
            run.cancel()


def _exchange(
    check: PairCheck,
    run_on: RunOn,
    test: Sequence[str],
    perftest: str,
    connect_window_s: float,
    timeout_s: float,
    server: _Background,
    started: list[_Background],
) -> tuple[PerfResult, str]:
    server_timeout = connect_window_s + timeout_s
    client_argv, client_env = client_command(check, test, timeout_s, perftest)
    deadline = time.monotonic() + connect_window_s

    def server_failed() -> bool:  # a server ending on SIGPIPE without a word only saw its client go: no news
        return server.done and server.rc != 0 and (server.rc not in SIGPIPE or bool(ucx_messages(server.output)))

    while True:
        client = _Background(run_on, check.prefill, client_argv, client_env, timeout_s + KILL_AFTER_S + 5)
        started.append(client)
        while not client.wait(0.05):
            if server_failed():  # e.g. the decode node lacks the device: the client may hang till its timeout
                client.wait(0.5)  # its own reason, if it has one, is on its way
                break
        if (
            client.done
            and client.rc != 0
            and "Connection refused" in client.output
            and not server.done
            and time.monotonic() < deadline
        ):
            time.sleep(RETRY_INTERVAL_S)  # the server is not listening yet
            continue
        break
    output = client.output
    if client.done and not never_connected(ucx_messages(output)):
        server.wait(SERVER_GRACE_S)  # they were connected: the server's own report (or clean exit) is on its way
    if client.done and client.rc == 0:
        missing = [(check.prefill, device) for device in missing_devices(output)]
        missing += [(check.decode, device) for device in (missing_devices(server.output) if server.done else [])]
        if missing:
            raise CheckFailed(
                "; ".join(
                    f"on {node}: network device '{device}' is not available (UCX ran without it)"
                    for node, device in missing
                )
            )
        result = parse_perftest(client.stdout) or parse_perftest(output)
        if result is None:
            raise CheckFailed(f"on {check.prefill}: ucx_perftest printed no result: {output.strip()[-300:]}")
        return result, output
    reasons = []
    if not server_failed() or (client.done and informative(ucx_messages(output))):
        rc = client.rc if client.done else TIMED_OUT
        reasons.append(f"on {check.prefill}: {reason(rc, output, check.prefill, perftest, timeout_s)}")
    if server_failed():
        reasons.append(f"on {check.decode}: {reason(server.rc, server.output, check.decode, perftest, server_timeout)}")
    raise CheckFailed("; ".join(reasons))


def run_check(
    check: PairCheck,
    run_on: RunOn,
    *,
    latency: bool = False,
    perftest: str = PERFTEST,
    connect_window_s: float = CONNECT_WINDOW_S,
    timeout_s: float = RUN_TIMEOUT_S,
) -> CheckResult:
    """The bandwidth test (and, with latency=True, an 8-byte latency test) between the pair."""
    started = time.monotonic()
    try:
        bandwidth, output = _transfer(check, run_on, BANDWIDTH_TEST, perftest, connect_window_s, timeout_s)
        latency_result = (
            _transfer(check, run_on, LATENCY_TEST, perftest, connect_window_s, timeout_s)[0] if latency else None
        )
    except CheckFailed as failure:
        return CheckResult(
            check, ok=False, seconds=time.monotonic() - started, error=f"KV path {check.route()}: {failure}"
        )
    return CheckResult(
        check,
        ok=True,
        bandwidth_mbs=bandwidth.bandwidth_mbs,
        latency_us=latency_result.latency_us if latency_result else None,
        lanes=lanes(output),
        seconds=time.monotonic() - started,
    )


def run_checks(
    checks: Sequence[PairCheck],
    run_on: RunOn,
    *,
    on_result: Callable[[CheckResult], None] | None = None,
    **options: Any,
) -> list[CheckResult]:
    """Every check, round by round (a round's checks at once, no node in two of them); results in
    the order of `checks`. All run, so that a report names every broken pair, not just the first."""
    # Each transfer ends within its own bounds (connect window, run timeout, `timeout -k` on the node);
    # the round's deadline is only a backstop that no report waits past.
    per_transfer = options.get("connect_window_s", CONNECT_WINDOW_S) + options.get("timeout_s", RUN_TIMEOUT_S)
    deadline_s = (2 if options.get("latency") else 1) * (per_transfer + KILL_AFTER_S + SERVER_GRACE_S) + ROUND_SLACK_S

    def check_and_report(check: PairCheck) -> CheckResult:
        result = run_check(check, run_on, **options)
        if on_result:
            on_result(result)
        return result

    results: dict[PairCheck, CheckResult] = {}
    for group in rounds(checks):
        for check, outcome in fan_out(group, check_and_report, deadline_s).items():
            if outcome.ok and outcome.value is not None:
                results[check] = outcome.value
                continue
            why = (
                f"{type(outcome.error).__name__}: {outcome.error}"
                if outcome.error
                else f"no result within {deadline_s:g} s"
            )
            results[check] = CheckResult(
                check, ok=False, error=f"KV path {check.route()}: {why}"
            )  # never a clean report
    return [results[check] for check in checks]


def failures(results: Sequence[CheckResult]) -> str | None:
    """One paragraph naming every failed pair, or None when all passed."""
    failed = [result.error or "failed" for result in results if not result.ok]
    return "; ".join(failed) if failed else None


# ---------------------------------------------------------------------------------------------
# Ways to reach a node


def _stop(process: subprocess.Popen, grace_s: float = 3.0) -> None:
    """SIGTERM (srun cancels its step, which ends the command on the node), SIGKILL after grace_s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()


def _run_local(argv: list[str], timeout_s: float, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run a launcher (srun) here, stoppable from another thread (_Background.cancel) and at exit."""
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    me = threading.get_ident()
    _CANCEL[me] = lambda: _stop(process)
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _stop(process)
        out, err = process.communicate()
        return TIMED_OUT, out, err + f"\nno answer within {timeout_s:g} s"
    finally:
        _CANCEL.pop(me, None)
    return process.returncode, out, err


@atexit.register
def _stop_all() -> None:
    for stop in list(_CANCEL.values()):
        stop()


def slurm_run_on(*, in_allocation: bool | None = None, srun_args: Sequence[str] = (), srun: str = "srun") -> RunOn:
    """Run on a node as an srun step: inside a job (SLURM_JOB_ID set: the batch script) a step that
    shares the job's resources (--overlap); outside, a one-node job of its own (pass the partition
    etc. in srun_args). srun_args may add a container (--container-image=..., --container=...)."""
    inside = "SLURM_JOB_ID" in os.environ if in_allocation is None else in_allocation

    def run_on(node: str, argv: Sequence[str], env: dict[str, str], timeout_s: float) -> tuple[int, str, str]:
        launcher = [srun, "--overlap"] if inside else [srun, "--time=1"]
        launcher += ["--nodes=1", "--ntasks=1", f"--nodelist={node}", "--job-name=kvpath", "--quiet", *srun_args]
        return _run_local([*launcher, *with_env(argv, env)], timeout_s)

    return run_on


def ssh_run_on(plan: Plan) -> RunOn:
    """Run on a plan node over SSH (the SSH transport: the hosts file's user, key and jump host)."""
    from invoke.exceptions import CommandTimedOut  # fabric's; imported here so the Slurm path does not need it

    from ..transport.ssh import remote

    nodes = {node.name: node for node in plan.nodes}

    def run_on(node: str, argv: Sequence[str], env: dict[str, str], timeout_s: float) -> tuple[int, str, str]:
        try:
            result = remote(nodes[node], shlex.join(with_env(argv, env)), timeout=timeout_s)
        except CommandTimedOut as timed_out:
            return TIMED_OUT, timed_out.result.stdout, timed_out.result.stderr + f"\nno answer within {timeout_s:g} s"
        except Exception as error:  # connection refused, authentication: no UCX reason to give
            return 255, "", f"SSH to {node} ({nodes[node].address}) failed: {type(error).__name__}: {error}"
        return result.exited, result.stdout, result.stderr

    return run_on


def run_on_for(plan: Plan, via: str | None = None) -> RunOn:
    """How a plan's nodes are reached: srun steps for Slurm plans (inside the plan's container when it
    has one: the UCX the workers use), SSH for SSH plans."""
    via = via or plan.backend
    if via == "ssh":
        return ssh_run_on(plan)
    if via != "slurm":
        raise ValueError(f"no way to reach nodes via {via!r} (slurm or ssh)")
    srun_args = plan.container.srun_flags(plan.run_dir) if plan.container else []
    if plan.slurm and "SLURM_JOB_ID" not in os.environ:  # outside the job: each step is a small job of its own
        srun_args += [
            f"--{name}={value}"
            for name in ("partition", "account", "qos", "reservation")
            if (value := getattr(plan.slurm, name, None))
        ]
    return slurm_run_on(srun_args=srun_args)
