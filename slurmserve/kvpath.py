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

    python -m slurmserve.kvpath RUN_DIR/plan.json   # inside the job (srun --overlap), or for SSH runs
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .plan import PORT_BLOCK_SIZE, PORT_RANGE_START, Plan

PERFTEST = "ucx_perftest"
# 100 x 1 MiB tagged sends (rendezvous protocol for messages this big, as a KV block would take):
# a few ms on an InfiniBand HCA, 0.05-0.3 s over TCP between the test cluster's namespaces.
BANDWIDTH_TEST = ("-t", "tag_bw", "-s", "1048576", "-n", "100", "-w", "10")
LATENCY_TEST = ("-t", "tag_lat", "-s", "8", "-n", "1000", "-w", "100")
CONNECT_WINDOW_S = 10.0  # how long a client retries while its server is still starting
RUN_TIMEOUT_S = 15.0  # one ucx_perftest run on a node, the srun/SSH launch included
KILL_AFTER_S = 2  # `timeout -k`: SIGKILL this long after SIGTERM
SERVER_GRACE_S = 3.0  # after the client ends, how long the server gets to end (and tell why it failed)
RETRY_INTERVAL_S = 0.2
TIMED_OUT = 124  # what `timeout` exits with, and what a run_on returns when its own timeout hits
# How a side killed by SIGPIPE (its peer went away) ends: 128 + 13 (srun, a shell), -13 (Python's
# subprocess), -1 (fabric: a signal, no exit status).
SIGPIPE = (141, -13, -1)

# (node, argv, env, timeout_s) -> (exit status, stdout, stderr)
RunOn = Callable[[str, Sequence[str], dict[str, str], float], tuple[int, str, str]]

# Thread ident -> how to stop what that thread's run_on started here (an srun): a check that fails on
# one side stops the other at once instead of leaving it to its timeout, and nothing outlives this process.
_CANCEL: dict[int, Callable[[], None]] = {}

_UCX_MESSAGE = re.compile(r"UCX\s+(ERROR|WARN)\s+(.*\S)")
_MISSING_DEVICE = re.compile(r"network device '([^']*)' is not available")
_LANES = re.compile(r"ep_cfg\[\d+\]:\s*tag\(([^)]*)\)")
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_TABLE_ROW = re.compile(rf"^\s*(?:Final:|\[thread \d+\])?\s*(\d+)((?:\s+{_NUMBER}){{7}})\s*$")
_CSV_ROW = re.compile(rf"^\s*(\d+)((?:,{_NUMBER}){{7}})\s*$")

# Given an address, become argv[1:] with UCX_NET_DEVICES set to the interface holding that address
# (the lab-style fallback when the plan names no device and the hosts file no interface).
_RESOLVE_INTERFACE_SH = (
    'dev=$(ip -o addr show to "$1" 2>/dev/null | awk \'{print $2; exit}\'); '
    'if [ -z "$dev" ]; then echo "UCX  ERROR no interface on $(hostname) holds address $1" >&2; exit 3; fi; '
    'shift; UCX_NET_DEVICES=$dev; export UCX_NET_DEVICES; exec "$@"'
)


# ---------------------------------------------------------------------------------------------
# What to check


@dataclass(frozen=True)
class PairCheck:
    """One KV path: the prefill node (ucx_perftest client) sends to the decode node (its server).

    Devices are UCX_NET_DEVICES entries (`mlx5_0:1`, or an IP interface such as `eth0` for TCP);
    an empty tuple means "the interface holding the node's address", found on the node at run time.
    A tls of None leaves UCX_TLS to UCX's default.
    """

    prefill: str
    decode: str
    prefill_devices: tuple[str, ...]
    decode_devices: tuple[str, ...]
    server_address: str  # the decode node's address, which the client connects to
    port: int = 13337  # ucx_perftest's TCP port for the parameter exchange, on the decode node
    prefill_address: str = ""
    prefill_tls: str | None = None
    decode_tls: str | None = None

    def devices(self, side: str) -> str:
        devices = self.prefill_devices if side == "prefill" else self.decode_devices
        address = self.prefill_address if side == "prefill" else self.server_address
        return ",".join(devices) if devices else f"the interface of {address}"

    def route(self) -> str:
        """`node1 -> node2 over mlx5_0:1`, each side's devices named when they differ."""
        if not self.prefill_devices and not self.decode_devices:
            return f"{self.prefill} -> {self.decode} over each node's interface for its address ({self.prefill_address}, {self.server_address})"
        prefill, decode = self.devices("prefill"), self.devices("decode")
        over = prefill if prefill == decode else f"{prefill} ({self.prefill}) / {decode} ({self.decode})"
        return f"{self.prefill} -> {self.decode} over {over}"


def _process_devices(process, node: str) -> list[str]:
    """The UCX_NET_DEVICES entries a worker uses on one of its nodes (each rank's own, when per rank)."""
    rank_env = list(getattr(process, "rank_env", None) or [])
    if rank_env:
        per_node = max(1, len(rank_env) // max(1, len(process.nodes)))
        index = process.nodes.index(node)
        values = [env.get("UCX_NET_DEVICES", "") for env in rank_env[index * per_node:(index + 1) * per_node]]
    else:
        values = [process.env.get("UCX_NET_DEVICES", "")]
    return [device.strip() for value in values for device in value.split(",") if device.strip()]


def _side(plan: Plan, role: str, node: str) -> tuple[tuple[str, ...], str | None]:
    """(devices, UCX_TLS) of a role's workers on a node: the union of their planned devices, or TCP
    over the node's control-plane interface when none is planned."""
    processes = [p for p in plan.processes if p.role == role and node in p.nodes]
    devices = list(dict.fromkeys(device for p in processes for device in _process_devices(p, node)))
    tls = next((p.env["UCX_TLS"] for p in processes if p.env.get("UCX_TLS")), None)
    if devices:
        return tuple(devices), tls
    interface = getattr(plan.node(node), "interface", None)
    return ((interface,) if interface else ()), "tcp"


def _spare_ports(plan: Plan, node: str) -> list[int]:
    """Ports of the deployment's block that none of its processes uses on this node, highest first:
    inside the block no other deployment collides, and the workers are not started yet anyway."""
    used = {port for p in plan.processes if p.nodes and p.nodes[0] == node for port in p.ports.values()}
    base = PORT_RANGE_START + plan.port_block * PORT_BLOCK_SIZE
    return [port for port in reversed(range(base, base + PORT_BLOCK_SIZE)) if port not in used]


def checks_for_plan(plan: Plan) -> list[PairCheck]:
    """One check per distinct (prefill node, decode node) pair, in the plan's order. A pair on one
    node is left out: its KV cache does not cross a NIC."""
    def nodes_of(role: str) -> list[str]:
        return list(dict.fromkeys(node for p in plan.processes if p.role == role for node in p.nodes))

    prefill_nodes, decode_nodes = nodes_of("prefill"), nodes_of("decode")
    taken: dict[str, int] = {}
    checks = []
    for prefill in prefill_nodes:
        for decode in decode_nodes:
            if prefill == decode:
                continue
            spare = _spare_ports(plan, decode)
            port = spare[taken.get(decode, 0) % len(spare)] if spare else 13337
            taken[decode] = taken.get(decode, 0) + 1
            (prefill_devices, prefill_tls), (decode_devices, decode_tls) = _side(plan, "prefill", prefill), _side(plan, "decode", decode)
            checks.append(PairCheck(
                prefill=prefill, decode=decode, prefill_devices=prefill_devices, decode_devices=decode_devices,
                server_address=plan.node(decode).address, port=port, prefill_address=plan.node(prefill).address,
                prefill_tls=prefill_tls, decode_tls=decode_tls))
    return checks


def rounds(checks: Sequence[PairCheck]) -> list[list[PairCheck]]:
    """Checks grouped so that no node takes part in two checks of a group: a group runs at once,
    without two transfers sharing a NIC (which would halve both bandwidths).

    Prefill i meets decode j in round (j - i) mod N, N the larger side: every prefill -> decode pair
    in N rounds, the fewest possible. A node that is both prefill and decode can still meet itself
    in a round; such a round is split.
    """
    prefills = list(dict.fromkeys(check.prefill for check in checks))
    decodes = list(dict.fromkeys(check.decode for check in checks))
    size = max(len(prefills), len(decodes), 1)
    latin: dict[int, list[PairCheck]] = {}
    for check in checks:
        latin.setdefault((decodes.index(check.decode) - prefills.index(check.prefill)) % size, []).append(check)
    grouped = []
    for _, remaining in sorted(latin.items()):
        while remaining:
            busy: set[str] = set()
            group, later = [], []
            for check in remaining:
                if check.prefill in busy or check.decode in busy:
                    later.append(check)
                else:
                    group.append(check)
                    busy |= {check.prefill, check.decode}
            grouped.append(group)
            remaining = later
    return grouped


# ---------------------------------------------------------------------------------------------
# Command lines


def _ucx_env(devices: tuple[str, ...], tls: str | None) -> dict[str, str]:
    env = {"UCX_NET_DEVICES": ",".join(devices)} if devices else {}
    return env | ({"UCX_TLS": tls} if tls else {})


def _bounded(argv: list[str], timeout_s: float, address: str, devices: tuple[str, ...]) -> list[str]:
    """argv under `timeout` (the node ends it even when srun or SSH loses it), with the interface
    resolved on the node first when no device is planned."""
    bounded = ["timeout", "-k", str(KILL_AFTER_S), f"{timeout_s:g}", *argv]
    return bounded if devices else ["sh", "-c", _RESOLVE_INTERFACE_SH, "sh", address, *bounded]


def server_command(check: PairCheck, timeout_s: float = CONNECT_WINDOW_S + RUN_TIMEOUT_S,
                   perftest: str = PERFTEST) -> tuple[list[str], dict[str, str]]:
    """(argv, env) of the ucx_perftest server on the decode node; it serves one test, then exits."""
    argv = _bounded([perftest, "-p", str(check.port)], timeout_s, check.server_address, check.decode_devices)
    return argv, _ucx_env(check.decode_devices, check.decode_tls)


def client_command(check: PairCheck, test: Sequence[str] = BANDWIDTH_TEST, timeout_s: float = RUN_TIMEOUT_S,
                   perftest: str = PERFTEST) -> tuple[list[str], dict[str, str]]:
    """(argv, env) of the ucx_perftest client on the prefill node. CSV output (-v); UCX's info log
    names the transport/device lanes the endpoint got."""
    argv = _bounded([perftest, check.server_address, "-p", str(check.port), *test, "-v"], timeout_s,
                    check.prefill_address, check.prefill_devices)
    return argv, _ucx_env(check.prefill_devices, check.prefill_tls) | {"UCX_LOG_LEVEL": "info"}


def with_env(argv: Sequence[str], env: dict[str, str]) -> list[str]:
    """argv prefixed with `env K=V ...`: the variables reach the command through srun (whatever the
    job's --export) and SSH (whatever the server's AcceptEnv), and values may hold commas."""
    return ["env", *(f"{name}={value}" for name, value in env.items()), *argv] if env else list(argv)


# ---------------------------------------------------------------------------------------------
# ucx_perftest's output


@dataclass(frozen=True)
class PerfResult:
    """ucx_perftest's final numbers. In a latency test the three times are latencies; in a bandwidth
    test they are the sender's per-message overhead."""

    iterations: int
    time_p50_us: float  # the 50th percentile (ucx_perftest's default -R)
    time_avg_us: float
    time_overall_us: float
    bandwidth_avg_mbs: float  # MB/s, as ucx_perftest counts them (2^20 bytes)
    bandwidth_overall_mbs: float
    msgrate_avg: float
    msgrate_overall: float

    @property
    def bandwidth_mbs(self) -> float:
        return self.bandwidth_overall_mbs

    @property
    def latency_us(self) -> float:
        return self.time_p50_us


def parse_perftest(output: str) -> PerfResult | None:
    """The final result line of ucx_perftest's client output, table (default) or CSV (-v); None when
    there is none (the test failed). Log lines and intermediate reports are skipped."""
    found = None
    for line in output.splitlines():
        if "UCX " in line:
            continue
        match = _CSV_ROW.match(line)
        values = match.group(2).split(",")[1:] if match else None
        if not match:
            match = _TABLE_ROW.match(line)
            values = match.group(2).split() if match else None
        if match and values:
            numbers = [float(value) for value in values]
            found = PerfResult(int(match.group(1)), *numbers)
            if line.lstrip().startswith("Final:"):
                break
    return found


def ucx_messages(output: str) -> list[str]:
    """UCX's ERROR and WARN messages, without timestamps, in order, each once."""
    messages = []
    for line in output.splitlines():
        match = _UCX_MESSAGE.search(line)
        if match:
            message = match.group(2).strip().removeprefix("client failed. ")
            if message not in messages:
                messages.append(message)
    return messages


def missing_devices(output: str) -> list[str]:
    """The planned devices UCX says do not exist on the node (it carries on with the others)."""
    return list(dict.fromkeys(_MISSING_DEVICE.findall(output)))


def lanes(output: str) -> list[str]:
    """The transport/device lanes of the client's endpoint, from UCX's info log (`tcp/eth0`, `rc_mlx5/mlx5_0:1`)."""
    return list(dict.fromkeys(lane for match in _LANES.findall(output) for lane in match.split()))


def _informative(messages: list[str]) -> bool:
    """Whether UCX said something about the path itself, not just that its peer's socket went away."""
    return any("() failed:" not in message for message in messages)


def _never_connected(messages: list[str]) -> bool:
    return any(message.startswith("connect() failed") for message in messages)


def _reason(rc: int, output: str, node: str, perftest: str, timeout_s: float) -> str:
    """Why a ucx_perftest run failed, in one line."""
    messages = ucx_messages(output)
    if len(messages) > 1:
        messages = [m for m in messages if not m.startswith("Failed to run test")] or messages
    if _never_connected(messages):
        return f"no ucx_perftest server answered ({'; '.join(messages)})"
    if messages:
        return "; ".join(messages)
    if rc == 127:
        return f"{perftest} not found on {node} (install UCX's tools: Debian package ucx-utils)"
    if rc in (TIMED_OUT, 128 + signal.SIGKILL):  # `timeout` ran out (and had to SIGKILL)
        return f"no result within {timeout_s:g} s"
    tail = [line.strip() for line in output.splitlines() if line.strip()]
    return f"exit status {rc}" + (f": {tail[-1]}" if tail else "")


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
        stop = _CANCEL.get(self._thread.ident) if not self.done else None
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


def _transfer(check: PairCheck, run_on: RunOn, test: Sequence[str], perftest: str,
              connect_window_s: float, timeout_s: float) -> tuple[PerfResult, str]:
    """One ucx_perftest run between the pair: (its result, the client's output); CheckFailed names the side."""
    server_timeout = connect_window_s + timeout_s
    server = _Background(run_on, check.decode, *server_command(check, server_timeout, perftest), server_timeout + KILL_AFTER_S + 5)
    started = [server]
    try:
        return _exchange(check, run_on, test, perftest, connect_window_s, timeout_s, server, started)
    finally:
        for run in started:  # a side still running after the verdict (a hung client, a server nobody reached)
            run.cancel()


def _exchange(check: PairCheck, run_on: RunOn, test: Sequence[str], perftest: str, connect_window_s: float,
              timeout_s: float, server: _Background, started: list[_Background]) -> tuple[PerfResult, str]:
    server_timeout = connect_window_s + timeout_s
    client_argv, client_env = client_command(check, test, timeout_s, perftest)
    deadline = time.monotonic() + connect_window_s

    def server_failed() -> bool:  # a server ending on SIGPIPE without a word only saw its client go: no news
        return server.done and server.result[0] != 0 and (server.result[0] not in SIGPIPE or bool(ucx_messages(server.output)))

    while True:
        client = _Background(run_on, check.prefill, client_argv, client_env, timeout_s + KILL_AFTER_S + 5)
        started.append(client)
        while not client.wait(0.05):
            if server_failed():  # e.g. the decode node lacks the device: the client may hang till its timeout
                client.wait(0.5)  # its own reason, if it has one, is on its way
                break
        if (client.done and client.result[0] != 0 and "Connection refused" in client.output
                and not server.done and time.monotonic() < deadline):
            time.sleep(RETRY_INTERVAL_S)  # the server is not listening yet
            continue
        break
    output = client.output
    if client.done and not _never_connected(ucx_messages(output)):
        server.wait(SERVER_GRACE_S)  # they were connected: the server's own report (or clean exit) is on its way
    if client.done and client.result[0] == 0:
        missing = [(check.prefill, device) for device in missing_devices(output)]
        missing += [(check.decode, device) for device in (missing_devices(server.output) if server.done else [])]
        if missing:
            raise CheckFailed("; ".join(f"on {node}: network device '{device}' is not available (UCX ran without it)"
                                        for node, device in missing))
        result = parse_perftest(client.result[1]) or parse_perftest(output)
        if result is None:
            raise CheckFailed(f"on {check.prefill}: ucx_perftest printed no result: {output.strip()[-300:]}")
        return result, output
    reasons = []
    if not server_failed() or (client.done and _informative(ucx_messages(output))):
        rc = client.result[0] if client.done else TIMED_OUT
        reasons.append(f"on {check.prefill}: {_reason(rc, output, check.prefill, perftest, timeout_s)}")
    if server_failed():
        reasons.append(f"on {check.decode}: {_reason(server.result[0], server.output, check.decode, perftest, server_timeout)}")
    raise CheckFailed("; ".join(reasons))


def run_check(check: PairCheck, run_on: RunOn, *, latency: bool = False, perftest: str = PERFTEST,
              connect_window_s: float = CONNECT_WINDOW_S, timeout_s: float = RUN_TIMEOUT_S) -> CheckResult:
    """The bandwidth test (and, with latency=True, an 8-byte latency test) between the pair."""
    started = time.monotonic()
    try:
        bandwidth, output = _transfer(check, run_on, BANDWIDTH_TEST, perftest, connect_window_s, timeout_s)
        latency_result = _transfer(check, run_on, LATENCY_TEST, perftest, connect_window_s, timeout_s)[0] if latency else None
    except CheckFailed as failure:
        return CheckResult(check, ok=False, seconds=time.monotonic() - started, error=f"KV path {check.route()}: {failure}")
    return CheckResult(check, ok=True, bandwidth_mbs=bandwidth.bandwidth_mbs,
                       latency_us=latency_result.latency_us if latency_result else None,
                       lanes=lanes(output), seconds=time.monotonic() - started)


def run_checks(checks: Sequence[PairCheck], run_on: RunOn, *, on_result: Callable[[CheckResult], None] | None = None,
               **options) -> list[CheckResult]:
    """Every check, round by round (a round's checks at once, no node in two of them); results in
    the order of `checks`. All run, so that a report names every broken pair, not just the first."""
    results: dict[PairCheck, CheckResult] = {}
    for group in rounds(checks):
        threads = []
        for check in group:
            def work(check: PairCheck = check) -> None:
                try:
                    results[check] = run_check(check, run_on, **options)
                except Exception as error:  # a bug here must not pass for a clean report
                    results[check] = CheckResult(check, ok=False, error=f"KV path {check.route()}: {type(error).__name__}: {error}")
                if on_result:
                    on_result(results[check])
            threads.append(threading.Thread(target=work, daemon=True))
            threads[-1].start()
        for thread in threads:
            thread.join()
    return [results[check] for check in checks]


def failures(results: Sequence[CheckResult]) -> str | None:
    """One paragraph naming every failed pair, or None when all passed."""
    failed = [result.error for result in results if not result.ok]
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
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, start_new_session=True)
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
    etc. in srun_args). srun_args may add a container (--container-image=...)."""
    inside = "SLURM_JOB_ID" in os.environ if in_allocation is None else in_allocation

    def run_on(node: str, argv: Sequence[str], env: dict[str, str], timeout_s: float) -> tuple[int, str, str]:
        launcher = [srun, "--overlap"] if inside else [srun, "--time=1"]
        launcher += ["--nodes=1", "--ntasks=1", f"--nodelist={node}", "--job-name=kvpath", "--quiet", *srun_args]
        return _run_local([*launcher, *with_env(argv, env)], timeout_s)

    return run_on


def ssh_run_on(plan: Plan) -> RunOn:
    """Run on a plan node over SSH (slurmserve.backends.ssh: the hosts file's user, key and jump host)."""
    from invoke.exceptions import CommandTimedOut  # fabric's; imported here so the Slurm path does not need it

    from .backends.ssh import remote

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


def run_on_for(plan: Plan, via: str | None = None, container: bool = False) -> RunOn:
    """How a plan's nodes are reached: srun steps for Slurm plans, SSH for SSH plans.

    ucx_perftest runs on the host by default. container=True runs it in the plan's container image
    (the UCX the workers use; pyxis imports the image for each step, so it is slow)."""
    via = via or plan.backend
    if via == "ssh":
        return ssh_run_on(plan)
    if via != "slurm":
        raise ValueError(f"no way to reach nodes via {via!r} (slurm or ssh)")
    srun_args = []
    if container and plan.slurm and plan.slurm.container_image:
        srun_args.append(f"--container-image={plan.slurm.container_image}")
        if plan.slurm.container_mounts:
            srun_args.append(f"--container-mounts={','.join(plan.slurm.container_mounts)}")
    if plan.slurm and "SLURM_JOB_ID" not in os.environ:  # outside the job: each step is a small job of its own
        srun_args += [f"--{name}={value}" for name in ("partition", "account", "qos", "reservation")
                      if (value := getattr(plan.slurm, name, None))]
    return slurm_run_on(srun_args=srun_args)


# ---------------------------------------------------------------------------------------------
# python -m slurmserve.kvpath PLAN_JSON


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slurmserve.kvpath", description=__doc__.split("\n\n")[0])
    parser.add_argument("plan", type=Path, help="the run's plan.json")
    parser.add_argument("--via", choices=("slurm", "ssh"), help="how to reach the nodes (default: the plan's backend)")
    parser.add_argument("--latency", action="store_true", help="also run an 8-byte latency test per pair")
    parser.add_argument("--perftest", default=PERFTEST, help=f"ucx_perftest on the nodes (default {PERFTEST})")
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT_S, help="seconds one transfer may take, launch included")
    parser.add_argument("--container", action="store_true", help="run ucx_perftest in the plan's container image (Slurm)")
    args = parser.parse_args(argv)

    plan = Plan.model_validate_json(args.plan.read_text())
    checks = checks_for_plan(plan)
    if not checks or (plan.backend == "local" and not args.via):
        print("kvpath: no prefill -> decode pair crosses nodes; nothing to check", flush=True)
        return 0

    def report(result: CheckResult) -> None:
        print(f"kvpath: {result.line()}", file=sys.stdout if result.ok else sys.stderr, flush=True)

    results = run_checks(checks, run_on_for(plan, args.via, args.container), on_result=report, latency=args.latency,
                         perftest=args.perftest, timeout_s=args.timeout)
    problems = failures(results)
    if problems:
        print(f"kvpath: {sum(not r.ok for r in results)} of {len(results)} KV path(s) failed; do not start the workers",
              file=sys.stderr, flush=True)
        return 1
    print(f"kvpath: all {len(results)} KV path(s) passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
