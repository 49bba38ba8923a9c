"""Hardware probe: what a node has, for a hosts file the user can commit.

`probe.sh` (beside this file) runs on a node (srun step or SSH) and prints one delimited section per source: hostname,
`nvidia-smi -L`, `nvidia-smi topo -m`, the RDMA port states from /sys, `ibv_devinfo`, `ibstat` and
`ip -j addr`. A missing tool or /sys path leaves its section empty and the script still exits 0, so one odd
node never sinks a probe of the whole cluster.

Everything here is pure parsing (no I/O): the same functions read a live probe and the captured
fixtures in tests/fixtures/probe/, which is how we know they handle what real machines print.

The pairing rule (see `pair_nics`): each GPU goes to the RDMA NIC(s) nearest to it in the
`nvidia-smi topo -m` matrix (PIX < PXB < PHB < NODE < SYS), ties kept, among the NICs of the node's
data fabric. On a DGX H100 that yields GPU i -> mlx5_0, 3, 4, 5, 6, 9, 10, 11, while the Ethernet storage
NICs that share GPU 0's and GPU 4's PCIe switches stay unpaired.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import yaml

SECTION_MARK = "### slurmserve-probe: "

# Section names, in the order the script prints them.
HOSTNAME = "hostname"
GPU_LIST = "nvidia-smi -L"
TOPOLOGY = "nvidia-smi topo -m"
IB_PORTS = "infiniband ports"
IBV_DEVINFO = "ibv_devinfo"
IBSTAT = "ibstat"
IP_ADDR = "ip -j addr"


# --- sections ---------------------------------------------------------------------------------------------


def split_sections(text: str) -> dict[str, str]:
    """The probe's output as {section name: body}. Lines before the first marker (a fixture's header
    comment, a login banner) belong to no section and are dropped."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(SECTION_MARK):
            current = sections.setdefault(line[len(SECTION_MARK) :].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip("\n") for name, lines in sections.items()}


# --- nvidia-smi -------------------------------------------------------------------------------------------

# Nearest first. SOC is what drivers before 2017 printed for SYS.
RELATION_RANK = {"PIX": 0, "PXB": 1, "PHB": 2, "NODE": 3, "SYS": 4, "SOC": 4}
UNKNOWN_RANK = 5
_RELATION = re.compile(r"X|PIX|PXB|PHB|NODE|SYS|SOC|NV\d+|N/A")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GPU_COLUMN = re.compile(r"GPU(\d+)")
_LEGEND_ENTRY = re.compile(r"\s*(NIC\d+):\s*(\S+)\s*$")


@dataclass(frozen=True)
class Topology:
    """`nvidia-smi topo -m`: the GPUs, the NICs (legend names, e.g. mlx5_0) and how far each pair is."""

    gpus: list[int] = field(default_factory=list)
    nics: list[str] = field(default_factory=list)
    relation: dict[tuple[int, str], str] = field(default_factory=dict)  # (gpu, nic) -> PIX, SYS, ...

    def rank(self, gpu: int, nic: str) -> int:
        return RELATION_RANK.get(self.relation.get((gpu, nic), ""), UNKNOWN_RANK)


def count_gpus(listing: str) -> int:
    """GPUs in `nvidia-smi -L` output. MIG instances are indented lines under their GPU and not counted:
    a hosts file's `gpus` is whole devices, which is what CUDA_VISIBLE_DEVICES indexes."""
    return sum(1 for line in listing.splitlines() if re.match(r"GPU \d+:", line))


def parse_topology(text: str) -> Topology:
    """Parse the matrix and its `NIC Legend:` block.

    Columns are GPUn, NICn (resolved through the legend to mlx5_X) or, from drivers that predate the
    legend, the device name itself. Cells are split on whitespace, so tab-separated output and the
    space-aligned copies people paste both read the same. A row whose cells are not relations is an
    error rather than a guess: a shifted row would pair GPUs with the wrong NICs.
    """
    lines = [_ANSI.sub("", line) for line in text.splitlines()]
    header = next((index for index, line in enumerate(lines) if line.split()[:1] == ["GPU0"]), None)
    if header is None:
        return Topology()
    columns = _header_columns(lines[header])
    legend = {match.group(1): match.group(2) for line in lines if (match := _LEGEND_ENTRY.fullmatch(line))}
    rows = _matrix_rows(lines[header + 1 :], columns)
    gpus = [int(m.group(1)) for column in columns if (m := _GPU_COLUMN.fullmatch(column))]
    nic_columns = [column for column in columns if not _GPU_COLUMN.fullmatch(column)]
    relation = {
        (gpu, legend.get(nic, nic)): rows[f"GPU{gpu}"][columns.index(nic)]
        for gpu in gpus
        if f"GPU{gpu}" in rows
        for nic in nic_columns
    }
    return Topology(gpus=gpus, nics=[legend.get(nic, nic) for nic in nic_columns], relation=relation)


def _header_columns(header: str) -> list[str]:
    """Device columns of the header line: its tokens up to 'CPU Affinity' (or the line's end)."""
    tokens = header.split()
    return tokens[: tokens.index("CPU")] if "CPU" in tokens else tokens


def _matrix_rows(lines: list[str], columns: list[str]) -> dict[str, list[str]]:
    rows = {}
    for line in lines:
        tokens = line.split()
        if not tokens or tokens[0] not in columns or tokens[0] in rows:
            continue
        cells = tokens[1 : 1 + len(columns)]
        if len(cells) < len(columns) or not all(_RELATION.fullmatch(cell) for cell in cells):
            raise ValueError(
                f"nvidia-smi topo -m: row {tokens[0]} does not have {len(columns)} relations: {line.strip()!r}"
            )
        rows[tokens[0]] = cells
    return rows


# --- RDMA ports -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    device: str  # mlx5_0
    port: int
    state: str | None  # ACTIVE, DOWN, INIT, ARMED, ...
    link_layer: str | None  # InfiniBand, Ethernet

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE"


_SYS_PORT = re.compile(r"/sys/class/infiniband/([^/]+)/ports/(\d+)/(state|link_layer|rate):\s*(.*)")


def parse_sys_ports(text: str) -> dict[tuple[str, int], Port]:
    """The 'infiniband ports' section: `/sys/class/infiniband/DEV/ports/N/ATTR:VALUE` lines, where the
    kernel writes a state as '4: ACTIVE' or '1: DOWN'."""
    found: dict[tuple[str, int], dict[str, str]] = {}
    for line in text.splitlines():
        if match := _SYS_PORT.fullmatch(line.strip()):
            device, port, attr, value = match.groups()
            found.setdefault((device, int(port)), {})[attr] = value.strip()
    return {
        key: Port(key[0], key[1], _state_word(attrs.get("state")), attrs.get("link_layer") or None)
        for key, attrs in found.items()
    }


def parse_ibv_devinfo(text: str) -> dict[tuple[str, int], Port]:
    """`ibv_devinfo`: 'hca_id: mlx5_0', then per port 'port: 1', 'state: PORT_ACTIVE (4)', 'link_layer: ...'."""
    records: dict[tuple[str, int], dict[str, str]] = {}
    device: str | None = None
    port: int | None = None
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if key == "hca_id":
            device, port = value, None
        elif key == "port" and device and value.isdigit():
            port = int(value)
            records[(device, port)] = {}
        elif key in ("state", "link_layer") and device and port is not None:
            records[(device, port)][key] = value
    return {
        key: Port(key[0], key[1], _state_word(attrs.get("state")), attrs.get("link_layer"))
        for key, attrs in records.items()
    }


def parse_ibstat(text: str) -> dict[tuple[str, int], Port]:
    """`ibstat`: "CA 'mlx5_0'", then per port 'Port 1:', 'State: Active', 'Link layer: InfiniBand'."""
    records: dict[tuple[str, int], dict[str, str]] = {}
    device: str | None = None
    port: int | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if match := re.fullmatch(r"CA '([^']+)'", stripped):
            device, port = match.group(1), None
        elif (match := re.fullmatch(r"Port (\d+):", stripped)) and device:
            port = int(match.group(1))
            records[(device, port)] = {}
        elif device and port is not None and ":" in stripped:
            key, _, value = stripped.partition(":")
            if key in ("State", "Link layer"):
                records[(device, port)][key] = value.strip()
    return {
        key: Port(key[0], key[1], _state_word(attrs.get("State")), attrs.get("Link layer"))
        for key, attrs in records.items()
    }


def _state_word(raw: str | None) -> str | None:
    """'4: ACTIVE', 'PORT_ACTIVE (4)' and 'Active' all mean ACTIVE."""
    if not raw:
        return None
    word = re.sub(r"\(\d+\)|^\d+:", "", raw).strip().upper()
    return word.removeprefix("PORT_") or None


def parse_ports(sections: dict[str, str]) -> dict[tuple[str, int], Port]:
    """Every RDMA port any source reported. /sys is the kernel's own word, so it wins over
    `ibv_devinfo`, which wins over `ibstat`; the union covers a node where a tool lists only some."""
    ports: dict[tuple[str, int], Port] = {}
    for source in (
        parse_ibstat(sections.get(IBSTAT, "")),
        parse_ibv_devinfo(sections.get(IBV_DEVINFO, "")),
        parse_sys_ports(sections.get(IB_PORTS, "")),
    ):
        ports.update(source)
    return dict(sorted(ports.items(), key=lambda item: (_natural(item[0][0]), item[0][1])))


def _natural(name: str) -> tuple:
    """mlx5_2 before mlx5_10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


# --- IP interfaces ----------------------------------------------------------------------------------------

# Interfaces that carry an IPv4 but are not a way to reach the node from another node.
_VIRTUAL_NAME = re.compile(r"docker\d*|br-.*|virbr.*|veth.*|cni.*|flannel.*|cali.*|vxlan.*|lxcbr.*|tun.*|tap.*|wg.*")
_VIRTUAL_KIND = {"bridge", "veth", "vxlan", "tun", "wireguard", "dummy"}


@dataclass(frozen=True)
class Interface:
    name: str
    up: bool
    virtual: bool  # loopback, bridge, veth, ...
    ipv4: list[str]  # global-scope addresses first


def parse_ip_addr(text: str) -> list[Interface]:
    """`ip -j addr` (or `ip -d -j addr`, whose linkinfo tells bridges apart by kind, not only by name).
    An iproute2 too old for -j prints no JSON: that reads as no interfaces (the address then falls back
    to the host name), not as a failed probe of the node's GPUs."""
    try:
        entries = json.loads(text)
    except ValueError:
        return []
    interfaces = []
    for entry in entries if isinstance(entries, list) else []:
        addresses = [a for a in entry.get("addr_info", []) if a.get("family") == "inet" and a.get("local")]
        addresses.sort(key=lambda a: a.get("scope") != "global")
        flags = entry.get("flags", [])
        kind = (entry.get("linkinfo") or {}).get("info_kind")
        virtual = "LOOPBACK" in flags or kind in _VIRTUAL_KIND or bool(_VIRTUAL_NAME.fullmatch(entry["ifname"]))
        interfaces.append(Interface(entry["ifname"], "UP" in flags, virtual, [a["local"] for a in addresses]))
    return interfaces


def pick_address(interfaces: list[Interface], interface: str | None) -> str | None:
    """The node's control-plane IPv4.

    With `interface`, its first address, global scope first; an interface the node lacks, or one without an
    IPv4, is an error, since the user named it. Without: the first IPv4 of an interface that is up and neither
    loopback nor a bridge/veth/tunnel (docker0, br-*, virbr*, ...). That is a guess: the interface holding the
    default route would be the better one, but `ip addr` does not show routes, and on GPU clusters the default
    route often is not the fabric anyway. Pass `interface` (the hosts file's `node.interface`) to be sure.
    None when the node shows no such address.
    """
    if interface is not None:
        named = next((i for i in interfaces if i.name == interface), None)
        if named is None or not named.ipv4:
            raise ValueError(
                f"interface {interface} has no IPv4 address on this node "
                f"(it has: {', '.join(i.name for i in interfaces if i.ipv4) or 'none'})"
            )
        return named.ipv4[0]
    return next((i.ipv4[0] for i in interfaces if i.up and not i.virtual and i.ipv4), None)


# --- GPU <-> NIC pairing ----------------------------------------------------------------------------------


def fabric_link_layer(ports: list[Port]) -> str | None:
    """The link layer of the data fabric: the one most ports have (InfiniBand on a tie, None when nothing
    says). DGX-class nodes put Ethernet storage NICs on the same PCIe switches as GPU 0 and GPU 4; their
    link layer is how they are told apart from the fabric HCAs next to them. Ports are counted whatever
    their state, so a node whose fabric cables are all out still pairs its GPUs with the (down) fabric
    HCAs rather than with the storage NICs."""
    counts = Counter(port.link_layer for port in ports if port.link_layer)
    if not counts:
        return None
    return max(counts, key=lambda layer: (counts[layer], layer == "InfiniBand"))


def pair_nics(topology: Topology, ports: dict[tuple[str, int], Port]) -> list[dict[str, Any]]:
    """The hosts file's `nics`: one entry per RDMA port, with the GPUs it is closest to.

    The rule:
    - The NICs are the RDMA ports the node reports (/sys, ibv_devinfo, ibstat). A NIC in the topology legend
      that no port listing shows is not usable from this node and is left out. When the probe has no port
      listing at all, the legend's NICs are taken as they are (port 1, active).
    - The data fabric is the link layer most ports have (`fabric_link_layer`); NICs of another link layer
      get no GPUs.
    - Each GPU goes to the fabric NIC(s) nearest to it in the matrix, PIX < PXB < PHB < NODE < SYS, all of them
      on a tie. Distance is physical: a NIC that is down keeps its GPUs and is marked `down`, so the planner
      sees that the GPU's own NIC is out rather than silently getting a far one.
    - `state` is `active` when the port is ACTIVE (or its state is unknown), `down` otherwise (DOWN, INIT,
      ARMED: not carrying traffic).
    """
    if not ports:
        ports = {(nic, 1): Port(nic, 1, None, None) for nic in topology.nics}
    fabric = fabric_link_layer(list(ports.values()))
    candidates = [
        key
        for key, port in ports.items()
        if port.device in topology.nics and (fabric is None or port.link_layer in (fabric, None))
    ]
    gpus_of: dict[tuple[str, int], list[int]] = {key: [] for key in candidates}
    for gpu in topology.gpus if candidates else []:
        best = min(topology.rank(gpu, device) for device, _ in candidates)
        for key in candidates:
            if topology.rank(gpu, key[0]) == best:
                gpus_of[key].append(gpu)
    return [
        {
            "name": port.device,
            "port": port.port,
            "gpus": gpus_of.get(key, []),
            "state": "active" if port.state in (None, "ACTIVE") else "down",
        }
        for key, port in ports.items()
    ]


# --- a node, and the hosts file ---------------------------------------------------------------------------


def node_from_probe(text: str, interface: str | None = None, *, name: str | None = None) -> dict[str, Any]:
    """What the hosts file needs of one node: name, address, gpus, nics (see `pair_nics` for the rule).

    `name` defaults to the node's own hostname; the caller that ran the probe through srun or SSH knows the
    name Slurm or ~/.ssh/config uses for the node, and should pass it. `address` comes from `pick_address`:
    the IPv4 of `interface`, or else the first IPv4 of an up, physical interface (a guess, see there).
    The GPU count comes from `nvidia-smi -L`, or the matrix when the listing is missing.
    """
    sections = split_sections(text)
    topology = parse_topology(sections.get(TOPOLOGY, ""))
    name = name or sections.get(HOSTNAME, "").strip() or None
    if name is None:
        raise ValueError("the probe output has no hostname: pass name=")
    return {
        "name": name,
        "address": pick_address(parse_ip_addr(sections.get(IP_ADDR, "")), interface),
        "gpus": count_gpus(sections.get(GPU_LIST, "")) or len(topology.gpus),
        "nics": pair_nics(topology, parse_ports(sections)),
    }


class _Flow(dict):
    """A mapping YAML writes on one line, as DESIGN.md's examples do for hosts and NICs."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Flow, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)
)

_GENERATED_KEYS = {"backend", "hosts", "node"}


def hosts_file_text(
    nodes: list[dict[str, Any]],
    backend: str,
    interface: str | None,
    extra: dict[str, Any],
    *,
    probed_at: datetime | None = None,
) -> str:
    """A hosts file (DESIGN.md) for the probed nodes, for `slurmserve.hosts.load_hosts`.

    Hardware the nodes share goes under `node:`. Where they differ, `node:` takes the most common value
    (the first node's on a tie) and each other node gets its own `gpus:` / `nics:` override, so a
    uniform cluster reads as one block and an odd node stands out. `extra` adds top-level keys
    (`slurm:`, `model_cache:`, `topology:`, ...); it may not set the keys the probe writes.
    """
    clash = _GENERATED_KEYS & extra.keys()
    if clash:
        raise ValueError(f"extra may not set {', '.join(sorted(clash))}: the probe writes them")
    if not nodes:
        raise ValueError("no probed nodes")
    # node.gpus is at least 1: when most nodes show none, the block takes the most common count that is
    # not zero (else 1), and the GPU-less nodes say `gpus: 0` for themselves.
    common_gpus = _most_common([node["gpus"] for node in nodes if node["gpus"]] or [1])
    common_nics = _most_common([node["nics"] for node in nodes])
    node_block: dict[str, Any] = {"gpus": common_gpus}
    if interface:
        node_block["interface"] = interface
    node_block["nics"] = [_Flow(nic) for nic in common_nics]
    document = {
        "backend": backend,
        **extra,
        "hosts": [_host_entry(node, common_gpus, common_nics) for node in nodes],
        "node": node_block,
    }
    when = (probed_at or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    header = (
        f"# Probed by `slurmserve probe` on {when}: {len(nodes)} node(s).\n"
        "# nics: each GPU is paired with its nearest NIC(s) of the data fabric in `nvidia-smi topo -m`;\n"
        "# state: down = the port was not ACTIVE when probed. Review, then commit.\n"
    )
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def _host_entry(node: dict[str, Any], common_gpus: int, common_nics: list) -> dict[str, Any]:
    """One line per host, unless it overrides `nics`: then a block, with a line per NIC."""
    entry: dict[str, Any] = {"name": node["name"]}
    if node.get("address"):
        entry["address"] = node["address"]
    if node["gpus"] != common_gpus:
        entry["gpus"] = node["gpus"]
    if node["nics"] == common_nics:
        return _Flow(entry)
    return {**entry, "nics": [_Flow(nic) for nic in node["nics"]]}


def _most_common(values: list) -> Any:
    """The value most nodes have; the earliest on a tie. (Lists are unhashable: compare by equality.)"""
    return max(values, key=lambda value: (sum(other == value for other in values), -values.index(value)))
