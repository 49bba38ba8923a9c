"""The hardware probe: its script runs anywhere, and its parsers read real captured outputs.

Every fixture in tests/fixtures/probe/ says in its header what was captured where, and what (if anything)
was assembled. The pairings asserted here are checked against what the machines' own operators used
where the capture shows it (NCCL_IB_HCA on the RoCE cluster, the DGX H100 rail layout).
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from slurmserve.backends import traits_for
from slurmserve.config.hosts import concrete_nodes, load_hosts
from slurmserve.config.recipe import load_recipe
from slurmserve.hardware.inventory import probe_script
from slurmserve.hardware.parsers import (
    IB_PORTS,
    SECTION_MARK,
    count_gpus,
    hosts_file_text,
    node_from_probe,
    pair_nics,
    parse_ibstat,
    parse_ibv_devinfo,
    parse_ip_addr,
    parse_ports,
    parse_sys_ports,
    parse_topology,
    pick_address,
    split_sections,
)
from slurmserve.planning.planner import make_plan

from ..helpers import SHELLCHECK

FIXTURES = Path(__file__).parent.parent / "fixtures" / "probe"
SECTIONS = [
    "hostname",
    "nvidia-smi -L",
    "nvidia-smi topo -m",
    "infiniband ports",
    "ibv_devinfo",
    "ibstat",
    "ip -j addr",
]
DGX_H100_RAILS = ["mlx5_0", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_9", "mlx5_10", "mlx5_11"]


def probe(fixture: str, **kwargs) -> dict:
    return node_from_probe((FIXTURES / fixture).read_text(), name=kwargs.pop("name", Path(fixture).stem), **kwargs)


def paired(node: dict) -> dict[int, list[str]]:
    """GPU -> the NICs paired with it."""
    return {gpu: [nic["name"] for nic in node["nics"] if gpu in nic["gpus"]] for gpu in range(node["gpus"])}


def states(node: dict) -> dict[str, str]:
    return {nic["name"]: nic["state"] for nic in node["nics"]}


# --- the script -------------------------------------------------------------------------------------------


def run_probe(env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    bash = shutil.which("bash")  # by path: the no-tools test empties PATH
    return subprocess.run([bash, "-c", probe_script()], capture_output=True, text=True, timeout=120, env=env)


def test_probe_script_runs_here_prints_every_section_in_order_and_exits_0():
    result = run_probe()
    assert result.returncode == 0, result.stderr
    markers = [line[len(SECTION_MARK) :] for line in result.stdout.splitlines() if line.startswith(SECTION_MARK)]
    assert markers == SECTIONS
    node = node_from_probe(result.stdout)
    assert node["name"] == subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    assert (
        node["gpus"] == count_gpus(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout)
        if shutil.which("nvidia-smi")
        else node["gpus"] == 0
    )


def test_probe_script_exits_0_with_no_tools_at_all():
    """No nvidia-smi, ibv_devinfo, ibstat, ip, hostname or even cat: every section is there, empty."""
    result = run_probe(env={"PATH": "/nonexistent"})
    assert result.returncode == 0, result.stderr
    assert list(split_sections(result.stdout)) == SECTIONS
    assert not any(split_sections(result.stdout).values())


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck not installed")
def test_probe_script_passes_shellcheck(tmp_path):
    script = tmp_path / "probe.sh"
    script.write_text(probe_script())
    result = subprocess.run([SHELLCHECK, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_local_capture_is_what_this_kind_of_machine_prints():
    """The fixture is the script's real output on the development VM: no GPU, no RDMA, one real NIC."""
    node = probe("local_vm_no_gpu.txt", name=None)
    assert node == {"name": "vm", "address": "192.0.2.2", "gpus": 0, "nics": []}


# --- DGX H100: GPU i pairs with mlx5_0,3,4,5,6,9,10,11 ----------------------------------------------------


@pytest.mark.parametrize("fixture", ["dgx_h100_ib_mooncake.txt", "dgx_h100_ib_deepep.txt"])
def test_dgx_h100_pairs_each_gpu_with_its_rail_hca(fixture):
    node = probe(fixture)
    assert node["gpus"] == 8
    assert paired(node) == {gpu: [hca] for gpu, hca in enumerate(DGX_H100_RAILS)}
    assert all(nic["port"] == 1 for nic in node["nics"])


def test_dgx_h100_storage_nics_on_gpu0_and_gpu4_switches_stay_unpaired():
    """mlx5_1/2 share GPU 0's PCIe switch and mlx5_7/8 GPU 4's (PIX, as close as the rail HCA); they are
    Ethernet on an InfiniBand fabric, so they get no GPUs. mlx5_1 and mlx5_2 are the inactive HCAs."""
    node = probe("dgx_h100_ib_mooncake.txt")
    topology = parse_topology(split_sections((FIXTURES / "dgx_h100_ib_mooncake.txt").read_text())["nvidia-smi topo -m"])
    assert {nic for nic in topology.nics if topology.relation[(0, nic)] == "PIX"} == {"mlx5_0", "mlx5_1", "mlx5_2"}
    unpaired = {nic["name"] for nic in node["nics"] if not nic["gpus"]}
    assert unpaired == {"mlx5_1", "mlx5_2", "mlx5_7", "mlx5_8"}
    assert states(node) == {
        name: "down" if name in ("mlx5_1", "mlx5_2") else "active"
        for name in DGX_H100_RAILS + ["mlx5_1", "mlx5_2", "mlx5_7", "mlx5_8"]
    }


def test_legend_nics_no_port_listing_shows_are_left_out():
    """The DeepEP capture's ibv_devinfo lists only the eight fabric HCAs; the legend's other four are not
    usable from that node and do not appear."""
    node = probe("dgx_h100_ib_deepep.txt")
    assert [nic["name"] for nic in node["nics"]] == DGX_H100_RAILS
    assert set(states(node).values()) == {"active"}


def test_fabric_with_every_port_down_still_pairs_the_rail_hcas():
    """The Mooncake capture with every port's state turned to Down (as on a node whose cables are out):
    the GPUs keep their InfiniBand rail HCAs, all marked down, and the Ethernet storage NICs stay unpaired."""
    text = (FIXTURES / "dgx_h100_ib_mooncake.txt").read_text().replace("State: Active", "State: Down")
    node = node_from_probe(text, name="gpu01")
    assert paired(node) == {gpu: [hca] for gpu, hca in enumerate(DGX_H100_RAILS)}
    assert set(states(node).values()) == {"down"}


# --- RoCE: the operators' own NCCL_IB_HCA, and an inactive HCA --------------------------------------------


def test_roce_node_pairs_the_nics_its_operators_used():
    """tpgds-aihub0007's operators set NCCL_IB_HCA=mlx5_0,1,2,5,6,7,8,11; the bonded pairs mlx5_3/4 and
    mlx5_9/10 (NODE to every GPU) get none. No port listing was captured: all NICs count as active."""
    node = probe("roce_aihub0007.txt", name=None)
    assert node["name"] == "tpgds-aihub0007" and node["gpus"] == 8 and node["address"] is None
    rails = ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_5", "mlx5_6", "mlx5_7", "mlx5_8", "mlx5_11"]
    assert paired(node) == {gpu: [nic] for gpu, nic in enumerate(rails)}
    assert {nic["name"] for nic in node["nics"] if not nic["gpus"]} == {"mlx5_3", "mlx5_4", "mlx5_9", "mlx5_10"}
    assert set(states(node).values()) == {"active"}


def test_inactive_hca_keeps_its_gpu_and_is_marked_down():
    node = probe("roce_gpu7_nic_down_assembled.txt")
    nics = {nic["name"]: nic for nic in node["nics"]}
    assert nics["mlx5_11"] == {"name": "mlx5_11", "port": 1, "gpus": [7], "state": "down"}
    assert nics["mlx5_9"] == {"name": "mlx5_9", "port": 1, "gpus": [], "state": "down"}
    assert [name for name, state in states(node).items() if state == "down"] == ["mlx5_9", "mlx5_11"]
    assert paired(node)[7] == ["mlx5_11"]


# --- no RDMA ----------------------------------------------------------------------------------------------


def test_pcie_box_without_rdma_has_gpus_and_no_nics():
    node = probe("pcie_2gpu_no_rdma.txt", name=None)
    assert node == {"name": "hua-System-Product-Name", "address": None, "gpus": 2, "nics": []}
    topology = parse_topology(split_sections((FIXTURES / "pcie_2gpu_no_rdma.txt").read_text())["nvidia-smi topo -m"])
    assert topology.gpus == [0, 1] and topology.nics == []


# --- parsers one by one -----------------------------------------------------------------------------------


def test_split_sections_ignores_the_fixture_header_and_keeps_empty_sections():
    sections = split_sections((FIXTURES / "dgx_h100_ib_mooncake.txt").read_text())
    # Captured when the probe still printed an "infiniband netdevs" section, which nothing reads.
    assert [name for name in sections if name != "infiniband netdevs"] == SECTIONS
    assert sections["hostname"] == "" and sections["ibstat"].startswith("CA 'mlx5_0'")


def test_topology_reads_tabs_and_pasted_spaces_alike():
    tabs = parse_topology(split_sections((FIXTURES / "dgx_h100_ib_deepep.txt").read_text())["nvidia-smi topo -m"])
    spaces = parse_topology(split_sections((FIXTURES / "dgx_h100_ib_mooncake.txt").read_text())["nvidia-smi topo -m"])
    assert tabs.gpus == spaces.gpus == list(range(8))
    assert tabs.nics == spaces.nics == [f"mlx5_{i}" for i in range(12)]
    assert tabs.relation == spaces.relation  # -mp and -m differ only between GPUs, which are not kept


def test_topology_refuses_a_shifted_row():
    """A pasted matrix with two cells run together ('PIXNODE', as one public copy of aihub0008's has)
    would pair every later NIC with the wrong GPU: an error, not a guess."""
    text = split_sections((FIXTURES / "roce_aihub0007.txt").read_text())["nvidia-smi topo -m"]
    broken = text.replace("NODE\tPIX\tNODE\tNODE\tNODE\tNODE\t0-191", "NODE\tPIXNODE\tNODE\tNODE\tNODE\t0-191", 1)
    assert broken != text
    with pytest.raises(ValueError, match="row GPU5"):
        parse_topology(broken)


def test_ibstat_and_ibv_devinfo_read_state_and_link_layer():
    mooncake = parse_ibstat(split_sections((FIXTURES / "dgx_h100_ib_mooncake.txt").read_text())["ibstat"])
    assert len(mooncake) == 12
    assert (mooncake[("mlx5_1", 1)].state, mooncake[("mlx5_1", 1)].link_layer) == ("DOWN", "Ethernet")
    assert (mooncake[("mlx5_0", 1)].state, mooncake[("mlx5_0", 1)].link_layer) == ("ACTIVE", "InfiniBand")
    roce = parse_ibv_devinfo(split_sections((FIXTURES / "roce_gpu7_nic_down_assembled.txt").read_text())["ibv_devinfo"])
    assert [key for key, port in roce.items() if not port.active] == [("mlx5_9", 1), ("mlx5_11", 1)]
    assert {port.link_layer for port in roce.values()} == {"Ethernet"}


def test_sys_port_listing_uses_the_kernels_words():
    """No capture of /sys/class/infiniband was to be had (no RDMA device here or in a public paste in the
    probe's PATH:VALUE form), so this input is written by hand in the kernel's format: a port's `state` file
    holds '4: ACTIVE' / '1: DOWN' (what `ibstatus` prints verbatim, e.g. NVIDIA/nccl#489), `link_layer`
    'InfiniBand' or 'Ethernet'. /sys wins over ibv_devinfo and ibstat where they disagree."""
    listing = "\n".join(
        [
            "/sys/class/infiniband/mlx5_0/ports/1/state:4: ACTIVE",
            "/sys/class/infiniband/mlx5_0/ports/1/link_layer:InfiniBand",
            "/sys/class/infiniband/mlx5_0/ports/1/rate:400 Gb/sec (4X NDR)",
            "/sys/class/infiniband/mlx5_1/ports/1/state:1: DOWN",
            "/sys/class/infiniband/mlx5_1/ports/1/link_layer:InfiniBand",
        ]
    )
    ports = parse_sys_ports(listing)
    assert [(key, port.state, port.link_layer) for key, port in ports.items()] == [
        (("mlx5_0", 1), "ACTIVE", "InfiniBand"),
        (("mlx5_1", 1), "DOWN", "InfiniBand"),
    ]
    merged = parse_ports({IB_PORTS: listing, "ibstat": "CA 'mlx5_1'\n\tPort 1:\n\t\tState: Active\n"})
    assert merged[("mlx5_1", 1)].state == "DOWN"


def test_without_port_listing_the_legend_nics_are_taken_as_active_port_1():
    topology = parse_topology(split_sections((FIXTURES / "roce_aihub0007.txt").read_text())["nvidia-smi topo -m"])
    nics = pair_nics(topology, {})
    assert [nic["name"] for nic in nics] == topology.nics
    assert {(nic["port"], nic["state"]) for nic in nics} == {(1, "active")}


def test_default_address_skips_bridges_and_an_interface_can_be_named():
    """In the namespace capture docker0 (172.17.0.1) comes before eth0 (10.0.0.11)."""
    text = (FIXTURES / "netns_docker_bridge.txt").read_text()
    interfaces = parse_ip_addr(split_sections(text)["ip -j addr"])
    assert [i.name for i in interfaces] == ["lo", "docker0", "eth0"]
    assert pick_address(interfaces, None) == "10.0.0.11"
    assert pick_address(interfaces, "docker0") == "172.17.0.1"
    assert node_from_probe(text, "eth0")["address"] == "10.0.0.11"
    with pytest.raises(ValueError, match="interface ib0 has no IPv4 address on this node"):
        node_from_probe(text, "ib0")
    assert pick_address(parse_ip_addr(""), None) is None
    assert parse_ip_addr('Option "-j" is unknown, try "ip -help".') == []  # iproute2 before JSON output


def test_gpu_count_prefers_nvidia_smi_list_and_falls_back_to_the_matrix():
    listing = (
        "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-c7a0294c-c2c2-5476-438c-fb468eaa223b)\n"
        "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-27196ced-a067-4406-2159-46448710fc9c)\n"
    )
    assert count_gpus(listing) == 2
    text = (FIXTURES / "pcie_2gpu_no_rdma.txt").read_text()
    assert node_from_probe(text)["gpus"] == 2  # no -L in that capture: the matrix's GPU columns


def test_a_probe_without_hostname_needs_a_name():
    with pytest.raises(ValueError, match="no hostname"):
        node_from_probe((FIXTURES / "dgx_h100_ib_deepep.txt").read_text())


# --- the hosts file ---------------------------------------------------------------------------------------


def write_hosts(tmp_path, nodes, **kwargs) -> Path:
    text = hosts_file_text(
        nodes,
        "slurm",
        "ib0",
        {"slurm": {"partition": "gpu"}, "model_cache": "/shared/models"},
        probed_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        **kwargs,
    )
    path = tmp_path / "hosts.yaml"
    path.write_text(text)
    return path


def plan(hosts_path: Path, recipe: str, *sets: str):
    hosts = load_hosts(hosts_path)
    return make_plan(
        load_recipe(recipe, list(sets)),
        hosts,
        traits_for(hosts.backend),
        run_name="test-run",
        run_dir="/runs/test-run",
        python="/usr/bin/python3",
    )


def test_two_identical_dgx_nodes_share_one_node_block_and_plan(tmp_path):
    nodes = [probe("dgx_h100_ib_mooncake.txt", name=name) for name in ("gpu01", "gpu02")]
    path = write_hosts(tmp_path, nodes)
    text = path.read_text()
    assert text.startswith("# Probed by `slurmserve probe` on 2025-01-02 03:04:05 UTC: 2 node(s).")
    hosts = load_hosts(path)
    assert [(h.name, h.gpus, h.nics) for h in hosts.hosts] == [("gpu01", None, None), ("gpu02", None, None)]
    assert hosts.node.gpus == 8 and hosts.node.interface == "ib0"
    assert [(nic.name, nic.gpus, nic.state) for nic in hosts.node.nics if nic.gpus] == [
        (hca, [gpu], "active") for gpu, hca in enumerate(DGX_H100_RAILS)
    ]
    assert {nic.name for nic in hosts.node.nics if nic.state == "down"} == {"mlx5_1", "mlx5_2"}
    result = plan(path, "gpt-oss-120b-disagg")
    assert result.process("prefill-0").nodes == ["gpu01"] and result.process("decode-0").nodes == ["gpu02"]


def test_odd_nodes_get_per_host_overrides(tmp_path):
    """Two DGX nodes set `node:`; the RoCE node with a dead GPU 7 NIC and a CPU-only node override it."""
    nodes = [
        probe("dgx_h100_ib_mooncake.txt", name="gpu01"),
        probe("dgx_h100_ib_mooncake.txt", name="gpu02"),
        probe("roce_gpu7_nic_down_assembled.txt", name="gpu03"),
        probe("netns_docker_bridge.txt", name="cpu01"),
    ]
    path = write_hosts(tmp_path, nodes)
    hosts = load_hosts(path)
    by_name = {node.name: node for node in concrete_nodes(hosts)}
    assert by_name["gpu01"].nics == by_name["gpu02"].nics == tuple(hosts.node.nics)
    assert [(nic.name, nic.state) for nic in by_name["gpu03"].nics if 7 in nic.gpus] == [("mlx5_11", "down")]
    assert by_name["cpu01"].gpus == 0 and by_name["cpu01"].nics == () and by_name["cpu01"].address == "10.0.0.11"
    assert by_name["gpu01"].address == "gpu01"  # no address probed: the name, as hosts.py does
    result = plan(path, "mocker-disagg")
    assert result.process("prefill-0").nodes and result.process("decode-0").nodes


def test_no_rdma_node_hosts_file_plans(tmp_path):
    path = write_hosts(tmp_path, [probe("pcie_2gpu_no_rdma.txt", name="desk01")])
    hosts = load_hosts(path)
    assert hosts.node.gpus == 2 and hosts.node.nics == []
    result = plan(path, "mocker-agg", "agg.tensor_parallel=2", "agg.expert_parallel=2")
    assert result.process("agg-0").gpus == [0, 1]


def test_extra_may_not_overwrite_what_the_probe_writes():
    with pytest.raises(ValueError, match="extra may not set hosts, node"):
        hosts_file_text([probe("pcie_2gpu_no_rdma.txt")], "ssh", None, {"hosts": [], "node": {}})
