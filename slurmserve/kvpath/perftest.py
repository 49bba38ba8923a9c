"""ucx_perftest: the command lines of a check's server and client, and what their output says."""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from .checks import PairCheck

PERFTEST = "ucx_perftest"
# 100 x 1 MiB tagged sends (rendezvous protocol for messages this big, as a KV block would take):
# a few ms on an InfiniBand HCA, 0.05-0.3 s over TCP between the test cluster's namespaces.
BANDWIDTH_TEST = ("-t", "tag_bw", "-s", "1048576", "-n", "100", "-w", "10")
LATENCY_TEST = ("-t", "tag_lat", "-s", "8", "-n", "1000", "-w", "100")
CONNECT_WINDOW_S = 10.0  # how long a client retries while its server is still starting
RUN_TIMEOUT_S = 15.0  # one ucx_perftest run on a node, the srun/SSH launch included
KILL_AFTER_S = 2  # `timeout -k`: SIGKILL this long after SIGTERM
TIMED_OUT = 124  # what `timeout` exits with, and what a run_on returns when its own timeout hits
# How a side killed by SIGPIPE (its peer went away) ends: 128 + 13 (srun, a shell), -13 (a LocalRunner
# process), -1 (SshRunner, through fabric: a signal, no exit status).
SIGPIPE = (141, -13, -1)

_UCX_MESSAGE = re.compile(r"UCX\s+(ERROR|WARN)\s+(.*\S)")
_MISSING_DEVICE = re.compile(r"network device '([^']*)' is not available")
_LANES = re.compile(r"ep_cfg\[\d+\]:\s*tag\(([^)]*)\)")
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_TABLE_ROW = re.compile(rf"^\s*(?:Final:|\[thread \d+\])?\s*(\d+)((?:\s+{_NUMBER}){{7}})\s*$")
_CSV_ROW = re.compile(rf"^\s*(\d+)((?:,{_NUMBER}){{7}})\s*$")

# Given an address, become argv[1:] with UCX_NET_DEVICES set to the interface holding that address
# (the lab-style fallback when the plan names no device and the hosts file no interface).
_RESOLVE_INTERFACE_SH = (
    "dev=$(ip -o addr show to \"$1\" 2>/dev/null | awk '{print $2; exit}'); "
    'if [ -z "$dev" ]; then echo "UCX  ERROR no interface on $(hostname) holds address $1" >&2; exit 3; fi; '
    'shift; UCX_NET_DEVICES=$dev; export UCX_NET_DEVICES; exec "$@"'
)


def _ucx_env(devices: tuple[str, ...], tls: str | None) -> dict[str, str]:
    env = {"UCX_NET_DEVICES": ",".join(devices)} if devices else {}
    return env | ({"UCX_TLS": tls} if tls else {})


def _bounded(argv: list[str], timeout_s: float, address: str, devices: tuple[str, ...]) -> list[str]:
    """argv under `timeout` (the node ends it even when srun or SSH loses it), with the interface
    resolved on the node first when no device is planned."""
    bounded = ["timeout", "-k", str(KILL_AFTER_S), f"{timeout_s:g}", *argv]
    return bounded if devices else ["sh", "-c", _RESOLVE_INTERFACE_SH, "sh", address, *bounded]


def server_command(
    check: PairCheck, timeout_s: float = CONNECT_WINDOW_S + RUN_TIMEOUT_S, perftest: str = PERFTEST
) -> tuple[list[str], dict[str, str]]:
    """(argv, env) of the ucx_perftest server on the decode node; it serves one test, then exits."""
    argv = _bounded([perftest, "-p", str(check.port)], timeout_s, check.server_address, check.decode_devices)
    return argv, _ucx_env(check.decode_devices, check.decode_tls)


def client_command(
    check: PairCheck, test: Sequence[str] = BANDWIDTH_TEST, timeout_s: float = RUN_TIMEOUT_S, perftest: str = PERFTEST
) -> tuple[list[str], dict[str, str]]:
    """(argv, env) of the ucx_perftest client on the prefill node. CSV output (-v); UCX's info log
    names the transport/device lanes the endpoint got."""
    argv = _bounded(
        [perftest, check.server_address, "-p", str(check.port), *test, "-v"],
        timeout_s,
        check.prefill_address,
        check.prefill_devices,
    )
    return argv, _ucx_env(check.prefill_devices, check.prefill_tls) | {"UCX_LOG_LEVEL": "info"}


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


def informative(messages: list[str]) -> bool:
    """Whether UCX said something about the path itself, not just that its peer's socket went away."""
    return any("() failed:" not in message for message in messages)


def never_connected(messages: list[str]) -> bool:
    return any(message.startswith("connect() failed") for message in messages)


def reason(rc: int, output: str, node: str, perftest: str, timeout_s: float) -> str:
    """Why a ucx_perftest run failed, in one line."""
    messages = ucx_messages(output)
    if len(messages) > 1:
        messages = [m for m in messages if not m.startswith("Failed to run test")] or messages
    if never_connected(messages):
        return f"no ucx_perftest server answered ({'; '.join(messages)})"
    if messages:
        return "; ".join(messages)
    if rc == 127:
        return f"{perftest} not found on {node} (install UCX's tools: Debian package ucx-utils)"
    if rc in (TIMED_OUT, 128 + signal.SIGKILL):  # `timeout` ran out (and had to SIGKILL)
        return f"no result within {timeout_s:g} s"
    tail = [line.strip() for line in output.splitlines() if line.strip()]
    return f"exit status {rc}" + (f": {tail[-1]}" if tail else "")
