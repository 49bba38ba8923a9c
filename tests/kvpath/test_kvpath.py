"""KV-path preflight (slurmserve/kvpath/): the pairs a plan needs checked, ucx_perftest's command
lines and output (fixtures captured on the test cluster, UCX 1.13.1), failures naming the pair and
device; then real transfers between the lab's node namespaces over srun and over SSH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from slurmserve.backends.slurm import SlurmBackend
from slurmserve.backends.ssh import SSHBackend
from slurmserve.kvpath import perftest, transfers
from slurmserve.kvpath.checks import PairCheck, checks_for_plan, rounds
from slurmserve.kvpath.perftest import (
    BANDWIDTH_TEST,
    LATENCY_TEST,
    client_command,
    lanes,
    missing_devices,
    parse_perftest,
    server_command,
    ucx_messages,
)
from slurmserve.kvpath.transfers import CheckResult, run_check
from slurmserve.node import kvcheck
from slurmserve.planning.plan import Container, Plan, PlanNode
from slurmserve.planning.ports import PORT_BLOCK_SIZE, PORT_RANGE_START
from slurmserve.transport.runner import NodeRunner, Ran
from slurmserve.transport.srun import SrunRunner, SrunStep
from slurmserve.transport.words import with_env

from ..conftest import plan_of

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ucx_perftest"
REPO = Path(__file__).resolve().parent.parent.parent


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# ---------------------------------------------------------------------------------------------
# ucx_perftest's output


def test_parses_the_table_of_a_bandwidth_test():
    result = parse_perftest(fixture("bw_table.client.txt"))
    assert result.iterations == 100
    assert result.bandwidth_mbs == pytest.approx(946.25)
    assert result.time_p50_us == pytest.approx(5.5) and result.time_avg_us == pytest.approx(1056.8)


def test_parses_csv_output_between_ucx_log_lines_and_names_the_lanes():
    output = fixture("bw_csv.client.txt")
    result = parse_perftest(output)
    assert result.iterations == 100 and result.bandwidth_mbs == pytest.approx(782.80)
    assert lanes(output) == ["tcp/eth0"]
    assert ucx_messages(output) == []  # INFO and DIAG lines are not problems


def test_takes_the_final_line_over_intermediate_reports():
    result = parse_perftest(fixture("long_bw_table.client.txt"))
    assert result.iterations == 3000
    assert result.bandwidth_avg_mbs == pytest.approx(2387.63) and result.bandwidth_overall_mbs == pytest.approx(2468.07)


@pytest.mark.parametrize("name, p50", [("lat_table.client.txt", 6.316), ("lat_csv.client.txt", 6.348)])
def test_parses_a_latency_test(name, p50):
    result = parse_perftest(fixture(name))
    assert result.iterations == 1000 and result.latency_us == pytest.approx(p50)


@pytest.mark.parametrize(
    "name",
    [
        "bad_client.client.txt",
        "bad_server.server.txt",
        "rdma_tls.client.txt",
        "refused.client.txt",
        "bw_table.server.txt",
        "srun_bad_client.client.txt",
    ],
)
def test_no_result_where_the_test_failed_or_on_the_server_side(name):
    assert parse_perftest(fixture(name)) is None


def test_ucx_messages_of_a_missing_device_without_timestamps():
    output = fixture("srun_bad_client.client.txt")
    assert ucx_messages(output) == [
        "network device 'mlx5_0:1' is not available, please use one or more of: 'eth0'(tcp), 'lo'(tcp)",
        "no usable transports/devices (asked tcp on network:mlx5_0:1 )",
        "Failed to run test: No such device",
    ]
    assert missing_devices(output) == ["mlx5_0:1"]
    assert ucx_messages(fixture("refused.client.txt")) == ["connect() failed: Connection refused"]


def test_a_partly_missing_device_list_still_transfers_but_is_caught():
    """UCX runs on the devices that exist and only WARNs about the others: the check must not pass."""
    output = fixture("partial.client.txt")
    assert parse_perftest(output).bandwidth_mbs > 0
    assert missing_devices(output) == ["mlx5_0:1"] == missing_devices(fixture("partial.server.txt"))


# ---------------------------------------------------------------------------------------------
# Which pairs, over which devices


def make_plan(processes: list[dict], nodes=("a", "b", "c"), interface: str | None = None, port_block: int = 3) -> Plan:
    node_list = [
        {"name": n, "address": f"10.0.0.{i + 1}", "gpus": 8} | ({"interface": interface} if interface else {})
        for i, n in enumerate(nodes)
    ]
    return Plan.model_validate(
        {
            "recipe": "r",
            "backend": "slurm",
            "run_name": "r",
            "run_dir": "/runs/r",
            "engine": "trtllm",
            "mode": "disagg",
            "model_path": "/models/m",
            "model": "m",
            "discovery": "etcd",
            "endpoint": "http://10.0.0.1:8000",
            "port_block": port_block,
            "python": "python3",
            "nodes": node_list,
            "workers_expected": {},
            "processes": [{"command": ["x"], "log": f"logs/{p['name']}.log", **p} for p in processes],
        }
    )


def test_one_check_per_prefill_decode_node_pair_with_each_side_s_planned_devices():
    plan = make_plan(
        [
            {"name": "etcd", "role": "etcd", "nodes": ["a"], "ports": {"client": 10096, "peer": 10097}},
            {"name": "prefill-0", "role": "prefill", "nodes": ["a"], "env": {"UCX_NET_DEVICES": "mlx5_0:1,mlx5_3:1"}},
            {
                "name": "prefill-1",
                "role": "prefill",
                "nodes": ["a"],
                "env": {"UCX_NET_DEVICES": "mlx5_3:1,mlx5_4:1", "UCX_TLS": "rc,cuda_copy"},
            },
            {"name": "prefill-2", "role": "prefill", "nodes": ["b"], "env": {"UCX_NET_DEVICES": "mlx5_6:1"}},
            {
                "name": "decode-0",
                "role": "decode",
                "nodes": ["c"],
                "env": {"UCX_NET_DEVICES": "mlx5_9:1"},
                "ports": {"system": 10127},
            },
            {"name": "decode-1", "role": "decode", "nodes": ["b"], "env": {"UCX_NET_DEVICES": "mlx5_10:1"}},
        ]
    )
    checks = checks_for_plan(plan)
    assert [(c.prefill, c.decode) for c in checks] == [("a", "c"), ("a", "b"), ("b", "c")]  # b -> b stays on the node
    a_c = checks[0]
    assert a_c.prefill_devices == ("mlx5_0:1", "mlx5_3:1", "mlx5_4:1") and a_c.prefill_tls == "rc,cuda_copy"
    assert a_c.decode_devices == ("mlx5_9:1",) and a_c.decode_tls is None  # UCX's default TLS where none is planned
    assert (a_c.server_address, a_c.prefill_address) == ("10.0.0.3", "10.0.0.1")
    assert a_c.route() == "a -> c over mlx5_0:1,mlx5_3:1,mlx5_4:1 (a) / mlx5_9:1 (c)"
    # ports: inside the deployment's block, unused there on the decode node, distinct per decode node
    block = range(PORT_RANGE_START + 3 * PORT_BLOCK_SIZE, PORT_RANGE_START + 4 * PORT_BLOCK_SIZE)
    assert all(c.port in block for c in checks) and a_c.port != 10127
    to_c = [c.port for c in checks if c.decode == "c"]
    assert len(set(to_c)) == len(to_c)


def test_a_worker_across_nodes_contributes_each_node_s_rank_devices():
    plan = make_plan(
        [
            {
                "name": "prefill-0",
                "role": "prefill",
                "nodes": ["a", "b"],
                "gpus": [0, 1],
                "tasks": 4,
                "rank_env": [{"UCX_NET_DEVICES": d} for d in ("mlx5_0:1", "mlx5_3:1", "mlx5_4:1", "mlx5_5:1")],
            },
            {"name": "decode-0", "role": "decode", "nodes": ["c"], "env": {"UCX_NET_DEVICES": "mlx5_0:1"}},
        ]
    )
    checks = {c.prefill: c for c in checks_for_plan(plan)}
    assert checks["a"].prefill_devices == ("mlx5_0:1", "mlx5_3:1") and checks["b"].prefill_devices == (
        "mlx5_4:1",
        "mlx5_5:1",
    )


def test_without_planned_devices_tcp_over_the_control_plane_interface():
    plan = make_plan(
        [
            {"name": "prefill-0", "role": "prefill", "nodes": ["a"]},
            {"name": "decode-0", "role": "decode", "nodes": ["b"]},
        ]
    )
    (check,) = checks_for_plan(plan)
    assert check.prefill_devices == check.decode_devices == () and check.prefill_tls == check.decode_tls == "tcp"
    assert "each node's interface for its address (10.0.0.1, 10.0.0.2)" in check.route()
    if "interface" in PlanNode.model_fields:  # once plan nodes carry the hosts file's interface
        (named,) = checks_for_plan(
            make_plan(
                [{"name": "p", "role": "prefill", "nodes": ["a"]}, {"name": "d", "role": "decode", "nodes": ["b"]}],
                interface="eth0",
            )
        )
        assert named.prefill_devices == named.decode_devices == ("eth0",)


def test_a_planned_dgx_pair_checks_the_devices_the_ranks_got_and_never_a_down_hca():
    plan = plan_of("gpt-oss-120b-disagg", "dgx-h100-two-node.yaml")
    (check,) = checks_for_plan(plan)
    decode = next(p for p in plan.processes if p.role == "decode")
    planned = {d for env in (decode.rank_env or [decode.env]) for d in env["UCX_NET_DEVICES"].split(",")}
    assert (check.prefill, check.decode) == ("gpu01", "gpu02")
    assert set(check.decode_devices) == planned and "mlx5_5:1" not in check.decode_devices  # down on gpu02
    assert all(d.startswith("mlx5_") for d in check.prefill_devices)


def test_one_node_deployments_have_nothing_to_check():
    assert checks_for_plan(plan_of("gpt-oss-120b-disagg", "single-node-8gpu.yaml")) == []
    assert checks_for_plan(plan_of("mocker-agg", "two-node-8gpu.yaml")) == []


def test_rounds_never_put_a_node_in_two_checks_at_once():
    checks = [PairCheck(p, d, (), (), "x") for p in ("p1", "p2", "p3") for d in ("d1", "d2")]
    grouped = rounds(checks)
    assert sorted(sum(grouped, []), key=checks.index) == checks
    for group in grouped:
        nodes = [n for c in group for n in (c.prefill, c.decode)]
        assert len(nodes) == len(set(nodes))
    assert len(grouped) == 3  # the fewest: p1..p3 each meet two decode nodes, one at a time
    mixed = [PairCheck("a", "b", (), (), "x"), PairCheck("b", "a", (), (), "x"), PairCheck("a", "c", (), (), "x")]
    assert all(len({n for c in group for n in (c.prefill, c.decode)}) == 2 * len(group) for group in rounds(mixed))
    assert sorted(sum(rounds(mixed), []), key=mixed.index) == mixed


# ---------------------------------------------------------------------------------------------
# Command lines


CHECK = PairCheck(
    "node1", "node2", ("mlx5_0:1", "mlx5_3:1"), ("mlx5_4:1",), "10.77.0.12", 14000, "10.77.0.11", "rc,ud", None
)


def test_server_and_client_command_lines():
    argv, env = server_command(CHECK, timeout_s=25)
    assert argv == ["timeout", "-k", "2", "25", "ucx_perftest", "-p", "14000"]
    assert env == {"UCX_NET_DEVICES": "mlx5_4:1"}
    argv, env = client_command(CHECK, timeout_s=15)
    assert argv == ["timeout", "-k", "2", "15", "ucx_perftest", "10.77.0.12", "-p", "14000", *BANDWIDTH_TEST, "-v"]
    assert env == {"UCX_NET_DEVICES": "mlx5_0:1,mlx5_3:1", "UCX_TLS": "rc,ud", "UCX_LOG_LEVEL": "info"}
    assert client_command(CHECK, LATENCY_TEST)[0][-7:-1] == list(LATENCY_TEST)[-6:]
    assert with_env(["ucx_perftest"], env) == [
        "env",
        "UCX_NET_DEVICES=mlx5_0:1,mlx5_3:1",
        "UCX_TLS=rc,ud",
        "UCX_LOG_LEVEL=info",
        "ucx_perftest",
    ]


def test_without_devices_the_node_finds_the_interface_of_its_address(tmp_path):
    check = PairCheck("node1", "node2", (), (), "10.77.0.12", 14000, "10.77.0.11", "tcp", "tcp")
    argv, env = server_command(check)
    assert argv[:5] == ["sh", "-c", perftest._RESOLVE_INTERFACE_SH, "sh", "10.77.0.12"] and "UCX_NET_DEVICES" not in env
    # run the snippet here, on loopback, with a stand-in for ucx_perftest
    shown = subprocess.run(
        ["sh", "-c", perftest._RESOLVE_INTERFACE_SH, "sh", "127.0.0.1", "sh", "-c", 'echo "$UCX_NET_DEVICES"'],
        capture_output=True,
        text=True,
    )
    assert (shown.returncode, shown.stdout.strip()) == (0, "lo")
    missing = subprocess.run(
        ["sh", "-c", perftest._RESOLVE_INTERFACE_SH, "sh", "192.0.2.77", "true"], capture_output=True, text=True
    )
    assert missing.returncode == 3 and "UCX  ERROR no interface" in missing.stderr


def test_srun_steps_inside_and_outside_a_job(monkeypatch):
    plan = plan_of("gpt-oss-120b-disagg", "two-node-8gpu.yaml").model_copy(deep=True)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    inside = SlurmBackend().runners(plan, job_name="kvpath", container=True)["gpu02"]
    assert inside.command(["ucx_perftest", "-p", "1"], {"UCX_NET_DEVICES": "mlx5_0:1,mlx5_3:1"})[0] == [
        "srun",
        "--overlap",
        "--nodes=1",
        "--ntasks=1",
        "--nodelist=gpu02",
        "--job-name=kvpath",
        "--quiet",
        "env",
        "UCX_NET_DEVICES=mlx5_0:1,mlx5_3:1",
        "ucx_perftest",
        "-p",
        "1",
    ]
    monkeypatch.delenv("SLURM_JOB_ID")
    outside = SlurmBackend().runners(plan, job_name="kvpath", container=True)["gpu01"].command(["true"], None)[0]
    assert not any(arg.startswith("--container") for arg in outside)  # no container: the host's ucx_perftest
    plan.container = Container(
        kind="pyxis",
        source="nvcr.io#nvidia/ai-dynamo/tensorrtllm-runtime:0.6.1",
        mounts=["/runs:/runs"],
        python="python3",
        llmapi_launch="trtllm-llmapi-launch",
        ucx_perftest="ucx_perftest",
    )
    outside = SlurmBackend().runners(plan, job_name="kvpath", container=True)["gpu01"].command(["true"], None)[0]
    assert outside[:2] == ["srun", "--time=1"] and "--partition=gpu" in outside
    assert "--container-image=nvcr.io#nvidia/ai-dynamo/tensorrtllm-runtime:0.6.1" in outside  # the image's UCX


# ---------------------------------------------------------------------------------------------
# run_check, with a stand-in for the nodes


class FakeNodes:
    """Runners answering from captured outputs: server and client by node, in call order."""

    def __init__(self, server, clients, server_delay=0.0):
        self.server, self.clients, self.server_delay = server, list(clients), server_delay
        self.calls = []
        self.release = threading.Event()

    def __call__(self, node, argv, env, timeout):
        self.calls.append((node, list(argv), dict(env)))
        if node == "node2":
            time.sleep(self.server_delay)
            answer = self.server
        else:
            answer = self.clients.pop(0)
        if answer == "hang":  # like a client whose server died: ends only at its timeout
            self.release.wait(timeout)
            return 124, "", ""
        return answer

    def __getitem__(self, node):
        return FakeRunner(self, node)


class FakeRunner(NodeRunner):
    def __init__(self, nodes, node):
        self.nodes, self.node = nodes, node

    @property
    def where(self):
        return f"node {self.node}"

    def run(self, argv, *, env=None, timeout, cancel=None):
        return Ran(*self.nodes(self.node, argv, env or {}, timeout))

    upload = start_detached = check_connection = lines = None


OK_CLIENT = (0, fixture("bw_csv.client.txt"), "")
OK_SERVER = (0, fixture("bw_table.server.txt"), "")
TCP = PairCheck("node1", "node2", ("eth0",), ("eth0",), "10.77.0.12", 14000, "10.77.0.11", "tcp", "tcp")


def test_a_passing_check_reports_bandwidth_and_lanes():
    nodes = FakeNodes(OK_SERVER, [OK_CLIENT])
    result = run_check(TCP, nodes)
    assert result.ok and result.bandwidth_mbs == pytest.approx(782.80) and result.lanes == ["tcp/eth0"]
    assert result.line().startswith("KV path node1 -> node2 over eth0: 783 MB/s [tcp/eth0]")
    assert {node for node, _, _ in nodes.calls} == {"node1", "node2"}


def test_latency_is_a_second_transfer():
    nodes = FakeNodes(OK_SERVER, [OK_CLIENT, (0, fixture("lat_csv.client.txt"), "")])
    result = run_check(TCP, nodes, latency=True)
    assert result.ok and result.latency_us == pytest.approx(6.348) and "latency 6.3 us" in result.line()
    assert sum(node == "node2" for node, _, _ in nodes.calls) == 2


def test_a_client_started_before_its_server_listens_retries():
    refused = (255, fixture("refused.client.txt"), "")
    nodes = FakeNodes(OK_SERVER, [refused, refused, OK_CLIENT], server_delay=0.5)
    result = run_check(TCP, nodes)
    assert result.ok and sum(node == "node1" for node, _, _ in nodes.calls) == 3


def test_a_missing_prefill_device_names_pair_device_and_node():
    bad = PairCheck("node1", "node2", ("mlx5_0:1",), ("eth0",), "10.77.0.12", 14000, "10.77.0.11", "tcp", "tcp")
    nodes = FakeNodes(
        (141, "", "srun: error: node2: task 0: Broken pipe"),
        [(255, fixture("srun_bad_client.client.txt"), "srun: error: node1: task 0: Exited with exit code 255")],
    )
    result = run_check(bad, nodes)
    assert not result.ok and result.bandwidth_mbs is None
    assert result.error.startswith(
        "KV path node1 -> node2 over mlx5_0:1 (node1) / eth0 (node2): on node1: network device 'mlx5_0:1' is not available"
    )
    assert "node2:" not in result.error.split("(node2): ")[1]  # the server's broken pipe is no news


def test_a_missing_decode_device_is_reported_at_once_though_the_client_hangs():
    bad = PairCheck("node1", "node2", ("eth0",), ("mlx5_0:1",), "10.77.0.12", 14000, "10.77.0.11", "tcp", "tcp")
    nodes = FakeNodes((255, fixture("bad_server.server.txt"), ""), ["hang"], server_delay=0.2)
    started = time.monotonic()
    result = run_check(bad, nodes, timeout_s=30)
    nodes.release.set()
    assert time.monotonic() - started < 3
    assert not result.ok and "on node2: network device 'mlx5_0:1' is not available" in result.error
    assert "on node1" not in result.error


def test_a_partly_missing_device_list_fails_the_check():
    partial = PairCheck(
        "node1", "node2", ("eth0", "mlx5_0:1"), ("eth0", "mlx5_0:1"), "10.77.0.12", 14000, "10.77.0.11", "tcp", "tcp"
    )
    nodes = FakeNodes((0, fixture("partial.server.txt"), ""), [(0, fixture("partial.client.txt"), "")])
    result = run_check(partial, nodes)
    assert not result.ok
    assert result.error == (
        "KV path node1 -> node2 over eth0,mlx5_0:1: on node1: network device 'mlx5_0:1' is not available (UCX ran without it); "
        "on node2: network device 'mlx5_0:1' is not available (UCX ran without it)"
    )


def test_no_ucx_perftest_on_a_node_says_what_to_install():
    nodes = FakeNodes((127, "", "timeout: failed to run command 'ucx_perftest': No such file or directory"), ["hang"])
    result = run_check(TCP, nodes)
    nodes.release.set()
    assert (
        not result.ok
        and "ucx_perftest not found on node2 (install UCX's tools: Debian package ucx-utils)" in result.error
    )


def test_no_server_answering_gives_up_after_the_connect_window():
    refused = (255, fixture("refused.client.txt"), "")
    nodes = FakeNodes("hang", [refused] * 100)
    started = time.monotonic()
    result = run_check(TCP, nodes, connect_window_s=0.5)
    nodes.release.set()
    assert time.monotonic() - started < 2
    assert (
        result.error
        == "KV path node1 -> node2 over eth0: on node1: no ucx_perftest server answered (connect() failed: Connection refused)"
    )


def test_the_entry_point_prints_a_line_per_pair_and_fails_naming_the_pair(tmp_path, monkeypatch, capsys):
    plan = make_plan(
        [
            {"name": "prefill-0", "role": "prefill", "nodes": ["a"], "env": {"UCX_NET_DEVICES": "mlx5_0:1"}},
            {"name": "decode-0", "role": "decode", "nodes": ["b", "c"]},
        ]
    )
    path = tmp_path / "plan.json"
    path.write_text(plan.model_dump_json())

    def fake_run_check(check, nodes, **options):
        if check.decode == "c":
            return CheckResult(
                check, ok=False, error=f"KV path {check.route()}: on a: network device 'mlx5_0:1' is not available"
            )
        return CheckResult(check, ok=True, bandwidth_mbs=12000.0, lanes=["rc_mlx5/mlx5_0:1"], seconds=0.4)

    monkeypatch.setattr(transfers, "run_check", fake_run_check)
    monkeypatch.setattr(SlurmBackend, "runners", lambda self, plan, **options: None)
    assert kvcheck.main([str(path)]) == 1
    out, err = capsys.readouterr()
    assert "kvpath: KV path a -> b over mlx5_0:1 (a) / " in out and "12000 MB/s [rc_mlx5/mlx5_0:1]" in out
    assert "kvpath: FAILED KV path a -> c over mlx5_0:1 (a) / " in err and "1 of 2 KV path(s) failed" in err


def test_the_entry_point_passes_a_one_node_plan():
    plan = plan_of("gpt-oss-120b-disagg", "single-node-8gpu.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "slurmserve.node.kvcheck", "/dev/stdin"],
        input=plan.model_dump_json(),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0 and "nothing to check" in result.stdout


# ---------------------------------------------------------------------------------------------
# On the test cluster: node1 and node2 are network namespaces; UCX runs over TCP on eth0


@pytest.fixture(scope="module")
def ucx_tools():
    """ucx_perftest on the lab's nodes (they share this machine's filesystem): Debian's ucx-utils."""
    if shutil.which("ucx_perftest") is None and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "ucx-utils"],
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            timeout=600,
        )
    if shutil.which("ucx_perftest") is None:
        pytest.fail("ucx_perftest not installed: the lab needs Debian's ucx-utils")


def lab_check(lab, prefill_devices=("eth0",), decode_devices=("eth0",), port=14500) -> PairCheck:
    return PairCheck(
        "node1",
        "node2",
        prefill_devices,
        decode_devices,
        lab.addresses["node2"],
        port,
        lab.addresses["node1"],
        "tcp",
        "tcp",
    )


LAB_SRUN = {
    node: SrunRunner(SrunStep((node,), overlap=False, job_name="kvpath", options=("--quiet",)))
    for node in ("node1", "node2")
}


@pytest.fixture
def lab_ssh_runners(slurm_lab):
    from slurmserve.backends import traits_for
    from slurmserve.config.hosts import load_hosts
    from slurmserve.config.recipe import load_recipe
    from slurmserve.planning.planner import make_plan as plan_for

    plan = plan_for(
        load_recipe("mocker-disagg", []),
        load_hosts(slurm_lab.hosts_file("ssh")),
        traits_for("ssh"),
        run_name="kvpath",
        run_dir="/tmp/kvpath",
        python=sys.executable,
    )
    return SSHBackend().runners(plan, job_name="kvpath")


@pytest.mark.slow
def test_lab_transfer_over_eth0_via_slurm(slurm_lab, ucx_tools):
    result = run_check(lab_check(slurm_lab, port=14501), LAB_SRUN, latency=True)
    assert result.ok, result.error
    assert result.bandwidth_mbs > 0 and result.latency_us > 0 and result.lanes == ["tcp/eth0"]


@pytest.mark.slow
def test_lab_transfer_over_eth0_via_ssh(slurm_lab, ucx_tools, lab_ssh_runners):
    result = run_check(lab_check(slurm_lab, port=14502), lab_ssh_runners)
    assert result.ok, result.error
    assert result.bandwidth_mbs > 0 and result.lanes == ["tcp/eth0"]


def srun_children() -> list[int]:
    """srun processes this test process started and that still run (or wait to be reaped)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if name == "srun" and int(fields[1]) == os.getpid():
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("via", ["slurm", "ssh"])
@pytest.mark.parametrize("side", ["prefill", "decode"])
def test_lab_a_device_that_does_not_exist_fails_fast_naming_pair_and_device(
    slurm_lab, ucx_tools, lab_ssh_runners, via, side
):
    devices = {"prefill_devices": ("mlx5_0:1",)} if side == "prefill" else {"decode_devices": ("mlx5_0:1",)}
    runners = LAB_SRUN if via == "slurm" else lab_ssh_runners
    started = time.monotonic()
    result = run_check(lab_check(slurm_lab, port=14510 + (side == "decode"), **devices), runners)
    assert time.monotonic() - started < 10
    assert not result.ok and result.error.startswith("KV path node1 -> node2 over ")
    node = "node1" if side == "prefill" else "node2"
    assert f"mlx5_0:1 ({node})" in result.error
    assert f"on {node}: network device 'mlx5_0:1' is not available" in result.error
    if via == "slurm":  # the other side's srun step is stopped, not left to its timeout
        deadline = time.monotonic() + 5
        while srun_children() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert srun_children() == []


@pytest.mark.slow
def test_lab_entry_point_inside_a_job_checks_the_planned_pair(slurm_lab, ucx_tools, tmp_path):
    """What the batch script runs: srun --overlap steps inside the job's allocation, from plan.json."""
    from slurmserve.backends import traits_for
    from slurmserve.config.hosts import load_hosts
    from slurmserve.config.recipe import load_recipe
    from slurmserve.planning.planner import make_plan as plan_for

    plan = plan_for(
        load_recipe("mocker-disagg", []),
        load_hosts(slurm_lab.hosts_file("slurm")),
        traits_for("slurm"),
        run_name="kvpath",
        run_dir=str(tmp_path),
        python=sys.executable,
    )
    (check,) = checks_for_plan(plan)
    good, bad = tmp_path / "plan.json", tmp_path / "plan-bad.json"
    good.write_text(plan.model_dump_json())
    for process in plan.processes:
        if process.role == "decode":
            process.env |= {"UCX_NET_DEVICES": "mlx5_0:1", "UCX_TLS": "rc,ud"}
    bad.write_text(plan.model_dump_json())
    nodes = ",".join(node.name for node in plan.nodes)

    def in_job(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "salloc",
                f"--nodes={len(plan.nodes)}",
                f"--nodelist={nodes}",
                "--time=2",
                "--gres=gpu:4",
                sys.executable,
                "-m",
                "slurmserve.node.kvcheck",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )

    result = in_job(good)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"kvpath: KV path {check.prefill} -> {check.decode} over " in result.stdout
        and " MB/s [tcp/eth0]" in result.stdout
    )
    result = in_job(bad)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"kvpath: FAILED KV path {check.prefill} -> {check.decode} over " in result.stderr
    assert f"mlx5_0:1 ({check.decode}): on {check.decode}: network device 'mlx5_0:1' is not available" in result.stderr
