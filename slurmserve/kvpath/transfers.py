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

The commands are plain argv lists; they reach a node through the node runner the backend gives for
it (an srun step, SSH), so the same checks run inside a Slurm job and over SSH.

    python -m slurmserve.node.kvcheck RUN_DIR/plan.json   # inside the job (srun --overlap), or for SSH runs
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..transport.runner import Cancel, NodeRunner
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
)

SERVER_GRACE_S = 3.0  # after the client ends, how long the server gets to end (and tell why it failed)
ROUND_SLACK_S = 10.0  # srun or SSH launching both sides, on top of the transfers' own bounds
RETRY_INTERVAL_S = 0.2

# Node name -> the runner that reaches it (the backend's `runners(plan)`).
Runners = Mapping[str, NodeRunner]


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
    """A run on a node in a daemon thread: a hung side never blocks the caller. cancel() stops it where
    the runner can (an srun step: a failed side stops the other at once); elsewhere the `timeout` it runs
    under ends it on the node."""

    def __init__(self, runner: NodeRunner, argv: list[str], env: dict[str, str], timeout_s: float):
        self.result: tuple[int, str, str] | None = None
        self._done = threading.Event()
        self._cancel = Cancel()

        def work() -> None:
            try:
                ran = runner.run(argv, env=env, timeout=timeout_s, cancel=self._cancel)
                self.result = (ran.exited, ran.stdout, ran.stderr)
            except Exception as error:  # the runner's own trouble (SSH, srun missing): reported as a failure
                self.result = (255, "", f"{runner.where}: {type(error).__name__}: {error}")
            self._done.set()

        threading.Thread(target=work, daemon=True).start()

    def cancel(self) -> None:
        if not self.done:
            self._cancel.cancel()

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
    check: PairCheck, nodes: Runners, test: Sequence[str], perftest: str, connect_window_s: float, timeout_s: float
) -> tuple[PerfResult, str]:
    """One ucx_perftest run between the pair: (its result, the client's output); CheckFailed names the side."""
    server_timeout = connect_window_s + timeout_s
    server = _Background(
        nodes[check.decode], *server_command(check, server_timeout, perftest), server_timeout + KILL_AFTER_S + 5
    )
    started = [server]
    try:
        return _exchange(check, nodes, test, perftest, connect_window_s, timeout_s, server, started)
    finally:
        for run in started:  # a side still running after the verdict (a hung client, a server nobody reached)
            run.cancel()


def _exchange(
    check: PairCheck,
    nodes: Runners,
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
        client = _Background(nodes[check.prefill], client_argv, client_env, timeout_s + KILL_AFTER_S + 5)
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
    nodes: Runners,
    *,
    latency: bool = False,
    perftest: str = PERFTEST,
    connect_window_s: float = CONNECT_WINDOW_S,
    timeout_s: float = RUN_TIMEOUT_S,
) -> CheckResult:
    """The bandwidth test (and, with latency=True, an 8-byte latency test) between the pair."""
    started = time.monotonic()
    try:
        bandwidth, output = _transfer(check, nodes, BANDWIDTH_TEST, perftest, connect_window_s, timeout_s)
        latency_result = (
            _transfer(check, nodes, LATENCY_TEST, perftest, connect_window_s, timeout_s)[0] if latency else None
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
    nodes: Runners,
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
        result = run_check(check, nodes, **options)
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
