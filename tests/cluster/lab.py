"""A real three-node Slurm cluster on this one machine, for slurmserve's integration tests.

The controller (slurmctld, and slurmdbd + MariaDB when accounting is asked) runs on the host; each
node `nodeI` is a network namespace joined to the host by the bridge `slbr0`, with its own slurmd
and key-only sshd, its own hostname (a UTS namespace) and 8 fake GPUs (GRES on /dev/null symlinks).
Every file lives in the lab directory; every daemon is started with setsid, recorded by PID there,
and stopped by PID only: nothing on this machine outside the lab is touched.

    python -m tests.cluster.lab up [--accounting] | down | status | hosts-file {slurm,ssh}

needs root, Linux network namespaces and Debian's packages (installed when missing). Standard
library only, so that it runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster import oci

DEFAULT = Path("/tmp/slurmserve-lab")
CLUSTER = "lab"
PARTITION = "debug"
BRIDGE = "slbr0"
CONTROLLER_ADDRESS = "10.77.0.1"
NODES = ("node1", "node2", "node3")
GPUS = 8
SWITCHES = (("leaf1", ("node1", "node2")), ("leaf2", ("node3",)))
HOSTS_TAG = "# slurmserve-lab"
MYSQL_PORT = 13306
DBD_PORT = 6819
PACKAGES = (
    "slurmctld",
    "slurmd",
    "slurm-client",
    "munge",
    "openssh-server",
    "openssh-client",
    "iproute2",
    "ucx-utils",
    "runc",  # what oci.conf runs for `srun --container` (crun fails here: cgroups in hybrid mode)
    "prometheus",  # Debian's 2.42: the in-job Prometheus of the observability tests (on the nodes and here)
)
ACCOUNTING_PACKAGES = ("slurmdbd", "mariadb-server")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
SSHD_PRIVSEP_DIR = Path("/run/sshd")
NETNS_DIR = Path("/run/netns")
# Seconds a lab daemon gets between SIGTERM and SIGKILL.
TERM_GRACE_S = 3.0
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Set in every daemon's environment (and so inherited by slurmscriptd, slurmstepd...): down() finds
# the lab's processes through it even when pids.json is lost. sshd sessions and job tasks get a
# fresh environment, so a user's shell never carries it.
MARKER = "SLURMSERVE_LAB_DIR"
CONTROLLER_PORT = 6817
SLURMD_PORT = 6818  # slurm.conf leaves SlurmdPort at its default

# Popen objects of the daemons this process started, so that down() can reap them (no zombies).
_CHILDREN: dict[int, subprocess.Popen] = {}


def node_address(node: str) -> str:
    return f"10.77.0.1{node.removeprefix('node')}"


class LabError(RuntimeError):
    """The lab could not be brought up; the message says which step and where its log is."""


@dataclass
class Lab:
    lab_dir: Path
    slurm_conf: Path
    env: dict[str, str]  # what a Slurm client needs on top of os.environ
    nodes: tuple[str, ...]
    addresses: dict[str, str]  # node name -> IP address
    ssh_key: Path  # private key for root@<node address>
    known_hosts: Path  # lists every node by name and address
    accounting: bool  # slurmdbd + MariaDB (real sacct) or accounting_storage/none
    munge_socket: Path  # clients find it through slurm.conf's AuthInfo; for `munge -S` only
    controller_address: str = CONTROLLER_ADDRESS
    partition: str = PARTITION
    gpus_per_node: int = GPUS
    switches: dict[str, list[str]] = field(default_factory=lambda: {name: list(nodes) for name, nodes in SWITCHES})

    def client_env(self) -> dict[str, str]:
        """os.environ plus what Slurm clients need: pass as env= to subprocess."""
        return {**os.environ, **self.env}

    def ssh_command(self, node: str, *command: str) -> list[str]:
        """argv running `command` on `node` as root over the lab's sshd."""
        return [
            "ssh",
            "-i",
            str(self.ssh_key),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            f"root@{self.addresses[node]}",
            *command,
        ]

    # Faults, for the tests that a deployment survives them (or reports them).

    def kill_slurmd(self, node: str) -> None:
        """SIGKILL the node's slurmd (its job steps run on, under their slurmstepd)."""
        os.kill(_load_pids(_Paths(self.lab_dir))[f"slurmd-{node}"]["pid"], signal.SIGKILL)

    def start_slurmd(self, node: str) -> None:
        p = _Paths(self.lab_dir)
        _spawn(p, f"slurmd-{node}", _in_node(node, f"slurmd -D -N {node} -f {p.slurm_conf}"))
        _wait(
            lambda: _tcp_answers(self.addresses[node], SLURMD_PORT),
            30,
            f"slurmd on {node}",
            p.log / f"slurmd-{node}.log",
        )

    def set_link(self, node: str, up: bool) -> None:
        """Take the node's network link down (or up again): the node is cut off from the others."""
        _ip("link", "set", f"veth-{node}", "up" if up else "down")

    def hosts_file(self, kind: str = "slurm") -> Path:
        """Write a slurmserve hosts file for this lab ("slurm" or "ssh") and return its path."""
        if kind not in ("slurm", "ssh"):
            raise ValueError(f"hosts file kind must be 'slurm' or 'ssh', not {kind!r}")
        lines = [f"# slurmserve test lab ({kind} backend), written by tests/cluster/lab.py", f"backend: {kind}"]
        if kind == "slurm":
            lines.append(f'slurm: {{partition: {self.partition}, time: "00:30:00"}}')
        lines.append("hosts:")
        for node in self.nodes:
            extra = f", user: root, port: 22, identity_file: {self.ssh_key}" if kind == "ssh" else ""
            lines.append(f"  - {{name: {node}, address: {self.addresses[node]}{extra}}}")
        lines += [f"node: {{gpus: {self.gpus_per_node}}}", "topology:", "  switches:"]
        for name, members in self.switches.items():
            lines.append(f"    - {{name: {name}, nodes: [{', '.join(members)}]}}")
        path = self.lab_dir / f"hosts-{kind}.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path


# ---------------------------------------------------------------------------------------------
# Paths


class _Paths:
    def __init__(self, lab_dir: Path):
        d = self.dir = Path(lab_dir).resolve()
        self.etc, self.log, self.run, self.spool = d / "etc", d / "log", d / "run", d / "spool"
        self.state = d / "state"
        self.dev, self.ssh, self.munge, self.mysql = d / "dev", d / "ssh", d / "munge", d / "mysql"
        self.slurm_conf = self.etc / "slurm.conf"
        self.pids = d / "pids.json"
        self.meta = d / "lab.json"
        self.munge_socket = self.munge / "munge.socket"
        self.ssh_key = self.ssh / "id_ed25519"
        self.host_key = self.ssh / "ssh_host_ed25519_key"
        self.authorized_keys = self.ssh / "authorized_keys"
        self.known_hosts = self.ssh / "known_hosts"


def _lab(paths: _Paths, accounting: bool) -> Lab:
    return Lab(
        lab_dir=paths.dir,
        slurm_conf=paths.slurm_conf,
        env={"SLURM_CONF": str(paths.slurm_conf)},
        nodes=NODES,
        addresses={n: node_address(n) for n in NODES},
        ssh_key=paths.ssh_key,
        known_hosts=paths.known_hosts,
        accounting=accounting,
        munge_socket=paths.munge_socket,
    )


# ---------------------------------------------------------------------------------------------
# Small helpers


def _run(
    argv: list[str], *, check: bool = True, timeout: float = 60, env: dict | None = None, input: str | None = None
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({result.returncode}): {(result.stderr or result.stdout).strip()}")
    return result


def _wait(predicate, timeout: float, what: str, log: Path | None = None, interval: float = 0.05):
    """Poll predicate() until it returns something truthy; LabError naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            hint = f" (see {log})" if log else ""
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}{hint}")
        time.sleep(interval)


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, session, starttime) from /proc/PID/stat, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[3]), int(fields[19])


def _alive(pid: int, start: int | None = None) -> bool:
    """Running (not a zombie, not gone) and, when start is given, still the process we recorded."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:  # our own child: reap it
        _CHILDREN.pop(pid, None)
        return False
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X", "x"):
        return False
    return start is None or stat[3] == start


def _tcp_answers(address: str, port: int, banner: bytes | None = None, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            if banner is None:
                return True
            conn.settimeout(timeout)
            return conn.recv(64).startswith(banner)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Packages


def _missing_packages(packages: tuple[str, ...]) -> list[str]:
    result = _run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *packages], check=False)
    installed = {line.split()[0] for line in result.stdout.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in installed]


def ensure_packages(accounting: bool = False) -> list[str]:
    """apt-get install what is missing (nothing when all is there); returns what was installed."""
    wanted = PACKAGES + (ACCOUNTING_PACKAGES if accounting else ())
    missing = _missing_packages(wanted)
    if not missing:
        return []
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    guard = not POLICY_RC_D.exists()
    if guard:  # no package may start a service while we install
        POLICY_RC_D.write_text("#!/bin/sh\n# written by slurmserve tests/cluster/lab.py during apt-get\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        _run(["apt-get", "update", "-q"], env=env, timeout=600)
        _run(
            [
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "-o",
                "Dpkg::Options::=--force-confdef",
                "-o",
                "Dpkg::Options::=--force-confold",
                *missing,
            ],
            env=env,
            timeout=1200,
        )
    finally:
        if guard:
            POLICY_RC_D.unlink(missing_ok=True)
    still = _missing_packages(wanted)
    if still:
        raise LabError(f"apt-get did not install {', '.join(still)}")
    return missing


# ---------------------------------------------------------------------------------------------
# Network: bridge, one namespace + veth per node, /etc/hosts


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["ip", *args], check=check)


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _network_up() -> None:
    if not _link_exists(BRIDGE):
        _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "replace", f"{CONTROLLER_ADDRESS}/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    for node in NODES:
        veth = f"veth-{node}"
        if not (NETNS_DIR / node).exists():
            _ip("netns", "add", node)
        if not _link_exists(veth):
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", node)
        _ip("link", "set", veth, "master", BRIDGE, "up")
        _ip("-n", node, "addr", "replace", f"{node_address(node)}/24", "dev", "eth0")
        _ip("-n", node, "link", "set", "lo", "up")
        _ip("-n", node, "link", "set", "eth0", "up")
        _ip("-n", node, "route", "replace", "default", "via", CONTROLLER_ADDRESS)


def _network_down() -> None:
    for node in NODES:  # deleting a namespace drops its veth only asynchronously: delete it first
        if _link_exists(f"veth-{node}"):
            _ip("link", "del", f"veth-{node}", check=False)
    for node in NODES:
        if (NETNS_DIR / node).exists():
            _ip("netns", "del", node, check=False)
    if _link_exists(BRIDGE):
        _ip("link", "del", BRIDGE, check=False)


def _rewrite_etc_hosts(add: bool) -> None:
    hosts = Path("/etc/hosts")
    old = hosts.read_text()
    lines = [line for line in old.splitlines() if not line.rstrip().endswith(HOSTS_TAG)]
    if add:
        lines += [f"{node_address(n)} {n}  {HOSTS_TAG}" for n in NODES]
    new = "\n".join(lines) + "\n"
    if new != old:
        with open(hosts, "r+") as handle:  # in place: /etc/hosts may be a bind mount
            handle.write(new)
            handle.truncate()


# ---------------------------------------------------------------------------------------------
# Configuration files


def _slurm_conf(p: _Paths, accounting: bool) -> str:
    lines = [
        f"ClusterName={CLUSTER}",
        f"SlurmctldHost=localhost({CONTROLLER_ADDRESS})",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={p.munge_socket}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={p.state}",
        f"SlurmctldPidFile={p.run}/slurmctld.pid",
        f"SlurmctldLogFile={p.log}/slurmctld.log",
        f"SlurmdSpoolDir={p.spool}/%n",
        f"SlurmdPidFile={p.run}/slurmd-%n.pid",
        f"SlurmdLogFile={p.log}/slurmd-%n.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "SlurmdParameters=config_overrides",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=bf_interval=1",
        "TopologyPlugin=topology/tree",
        "GresTypes=gpu",
        "MpiDefault=none",
        "ReturnToService=2",
        "MailProg=/bin/true",
        # slurmstepd ignores SIGTERM: tasks get SIGKILL KillWait seconds after it; a step whose
        # processes outlive UnkillableStepTimeout after that drains its node, so leave slack for
        # this machine's slow zombie reaping.
        "KillWait=2",
        "UnkillableStepTimeout=30",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={p.log}/jobcomp.txt",
    ]
    if accounting:
        lines += [
            "AccountingStorageType=accounting_storage/slurmdbd",
            f"AccountingStorageHost={CONTROLLER_ADDRESS}",
            f"AccountingStoragePort={DBD_PORT}",
            f"AccountingStoragePass={p.munge_socket}",  # slurmdbd connections ignore AuthInfo
            "AccountingStorageTRES=gres/gpu",
        ]
    else:
        lines.append("AccountingStorageType=accounting_storage/none")
    for node in NODES:
        lines.append(
            f"NodeName={node} NodeAddr={node_address(node)} NodeHostname={node} CPUs=16 Sockets=2 "
            f"CoresPerSocket=8 ThreadsPerCore=1 RealMemory=16000 Gres=gpu:{GPUS} State=UNKNOWN"
        )
    lines.append(f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def _topology_conf() -> str:
    return "SwitchName=leaf1 Nodes=node[1-2]\nSwitchName=leaf2 Nodes=node3\nSwitchName=spine Switches=leaf[1-2]\n"


def _slurmdbd_conf(p: _Paths) -> str:
    return (
        "\n".join(
            [
                "AuthType=auth/munge",
                f"AuthInfo=socket={p.munge_socket}",
                "DbdHost=localhost",
                f"DbdAddr={CONTROLLER_ADDRESS}",
                f"DbdPort={DBD_PORT}",
                "SlurmUser=root",
                "DebugLevel=info",
                f"LogFile={p.log}/slurmdbd.log",
                f"PidFile={p.run}/slurmdbd.pid",
                "StorageType=accounting_storage/mysql",
                "StorageHost=127.0.0.1",
                f"StoragePort={MYSQL_PORT}",
                "StorageUser=slurm",
                "StoragePass=lab",
                "StorageLoc=slurm_acct_db",
            ]
        )
        + "\n"
    )


def _sshd_config(p: _Paths, node: str) -> str:
    return (
        "\n".join(
            [
                f"ListenAddress {node_address(node)}",
                "Port 22",
                f"HostKey {p.host_key}",
                f"PidFile {p.run}/sshd-{node}.pid",
                f"AuthorizedKeysFile {p.authorized_keys}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",  # the keys live under /tmp
                "UseDNS no",
                "PrintMotd no",
                "LogLevel INFO",
                f"SetEnv SLURM_CONF={p.slurm_conf}",
                "Subsystem sftp /usr/lib/openssh/sftp-server",
            ]
        )
        + "\n"
    )


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    path.chmod(mode)


def _write_files(p: _Paths, accounting: bool) -> None:
    for d in (p.etc, p.log, p.run, p.spool, p.state, p.dev, p.ssh, p.munge):
        d.mkdir(parents=True, exist_ok=True)
    p.munge.chmod(0o700)
    p.ssh.chmod(0o700)
    for node in NODES:
        (p.spool / node).mkdir(exist_ok=True)
    for gpu in range(GPUS):  # a character device is required: symlinks to /dev/null pass
        link = p.dev / f"gpu{gpu}"
        if not link.is_symlink():
            link.symlink_to("/dev/null")
    _write(p.slurm_conf, _slurm_conf(p, accounting))
    _write(p.etc / "gres.conf", f"Name=gpu File={p.dev}/gpu[0-{GPUS - 1}]\n")
    _write(p.etc / "topology.conf", _topology_conf())
    # Slurm's own OCI containers (`srun --container=BUNDLE`); without oci.conf the flag is ignored.
    (p.run / "oci").mkdir(exist_ok=True)
    _write(p.etc / "oci.conf", oci.oci_conf(p.run / "oci"))
    if accounting:
        _write(p.etc / "slurmdbd.conf", _slurmdbd_conf(p), 0o600)
    key = p.munge / "munge.key"
    if not key.exists():
        with open(key, "wb") as handle:
            handle.write(os.urandom(1024))
    key.chmod(0o400)
    for keyfile in (p.ssh_key, p.host_key):
        if not keyfile.exists():
            _run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"slurmserve-lab {keyfile.name}",
                    "-f",
                    str(keyfile),
                ]
            )
    _write(p.authorized_keys, p.ssh_key.with_suffix(".pub").read_text(), 0o600)
    host_pub = " ".join(p.host_key.with_suffix(".pub").read_text().split()[:2])
    _write(p.known_hosts, "".join(f"{n},{node_address(n)} {host_pub}\n" for n in NODES), 0o600)
    for node in NODES:
        _write(p.etc / f"sshd_config-{node}", _sshd_config(p, node), 0o600)


# ---------------------------------------------------------------------------------------------
# Daemons


def _load_pids(p: _Paths) -> dict[str, dict]:
    try:
        return json.loads(p.pids.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _spawn(p: _Paths, name: str, argv: list[str], env: dict | None = None) -> int:
    """Start a daemon in its own session, stdin /dev/null, no inherited fds, output to log/NAME.out."""
    daemon_env = {
        "PATH": DAEMON_PATH,
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "SLURM_CONF": str(p.slurm_conf),
        MARKER: str(p.dir),
        **(env or {}),
    }
    with open(p.log / f"{name}.out", "ab") as log:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            cwd=p.dir,
            env=daemon_env,
        )
    _CHILDREN[child.pid] = child
    stat = _proc_stat(child.pid)
    pids = _load_pids(p)
    pids[name] = {"pid": child.pid, "start": stat[3] if stat else None, "argv": argv}
    tmp = p.pids.with_suffix(".tmp")
    tmp.write_text(json.dumps(pids, indent=1))
    tmp.replace(p.pids)
    return child.pid


def _in_node(node: str, command: str) -> list[str]:
    """argv running the shell command `command` in node's network namespace with hostname `node`."""
    return [
        "nsenter",
        f"--net={NETNS_DIR / node}",
        "unshare",
        "--uts",
        "--",
        "sh",
        "-c",
        f"hostname {node} && exec {command}",
    ]


def _port_free(address: str, port: int, what: str) -> None:
    if _tcp_answers(address, port):
        raise LabError(f"something not of this lab already listens on {address}:{port} (wanted by {what})")


def _check_alive(p: _Paths, name: str) -> None:
    info = _load_pids(p).get(name)
    if info and not _alive(info["pid"]):
        raise LabError(f"{name} exited at start; see {p.log}/{name}.out and its log")


def _start_munged(p: _Paths) -> None:
    _spawn(
        p,
        "munged",
        [
            "munged",
            "-F",
            "--force",
            f"--key-file={p.munge}/munge.key",
            f"--socket={p.munge_socket}",
            f"--pid-file={p.run}/munged.pid",
            f"--log-file={p.log}/munged.log",
            f"--seed-file={p.munge}/munged.seed",
        ],
    )

    def ready():
        _check_alive(p, "munged")
        return p.munge_socket.exists()

    _wait(ready, 15, "munged's socket", p.log / "munged.log")


def _start_mariadb(p: _Paths) -> None:
    _port_free("127.0.0.1", MYSQL_PORT, "MariaDB")
    data = p.mysql / "data"
    data.mkdir(parents=True, exist_ok=True)
    grants = p.mysql / "grants.sql"
    grants.write_text(
        "CREATE USER IF NOT EXISTS 'slurm'@'%' IDENTIFIED BY 'lab';\nGRANT ALL PRIVILEGES ON *.* TO 'slurm'@'%';\n"
    )
    if not (data / "mysql").exists():
        _run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            timeout=120,
        )
    _spawn(
        p,
        "mariadbd",
        [
            "mariadbd",
            "--no-defaults",
            f"--datadir={data}",
            "--user=root",
            "--bind-address=127.0.0.1",
            f"--port={MYSQL_PORT}",
            f"--socket={p.mysql}/mysqld.sock",
            f"--pid-file={p.run}/mariadbd.pid",
            f"--log-error={p.log}/mariadbd.log",
            f"--init-file={grants}",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=128M",
            "--innodb-lock-wait-timeout=900",  # what slurmdbd asks for
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
        ],
    )

    def ready():
        _check_alive(p, "mariadbd")
        return _tcp_answers("127.0.0.1", MYSQL_PORT, banner=None)

    _wait(ready, 60, "MariaDB on 127.0.0.1:13306", p.log / "mariadbd.log")


def _start_slurmdbd(p: _Paths) -> None:
    _port_free(CONTROLLER_ADDRESS, DBD_PORT, "slurmdbd")
    _spawn(p, "slurmdbd", ["slurmdbd", "-D"])  # finds slurmdbd.conf beside $SLURM_CONF

    def ready():
        _check_alive(p, "slurmdbd")
        return _tcp_answers(CONTROLLER_ADDRESS, DBD_PORT)

    _wait(ready, 60, f"slurmdbd on {CONTROLLER_ADDRESS}:{DBD_PORT}", p.log / "slurmdbd.log")
    env = {**os.environ, "SLURM_CONF": str(p.slurm_conf)}

    def cluster_added():
        listed = _run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], check=False, env=env)
        if listed.returncode == 0 and CLUSTER in listed.stdout.split():
            return True
        _run(["sacctmgr", "-i", "add", "cluster", CLUSTER], check=False, env=env)
        return False

    _wait(cluster_added, 30, "sacctmgr add cluster", p.log / "slurmdbd.log", interval=0.2)


def _sinfo_states(env: dict) -> dict[str, str]:
    try:
        result = _run(["sinfo", "-h", "-N", "-p", PARTITION, "-o", "%N %T"], check=False, env=env, timeout=10)
    except subprocess.TimeoutExpired:
        return {}
    if result.returncode != 0:
        return {}
    return dict(line.split(None, 1) for line in result.stdout.splitlines() if " " in line)


def _start_slurm(p: _Paths) -> None:
    env = {**os.environ, "SLURM_CONF": str(p.slurm_conf)}
    _port_free(CONTROLLER_ADDRESS, CONTROLLER_PORT, "slurmctld")
    _spawn(p, "slurmctld", ["slurmctld", "-D", "-f", str(p.slurm_conf)])

    def controller_up():
        _check_alive(p, "slurmctld")
        return _run(["scontrol", "ping"], check=False, env=env, timeout=10).returncode == 0

    _wait(controller_up, 30, "slurmctld (scontrol ping)", p.log / "slurmctld.log")
    for node in NODES:
        _spawn(p, f"slurmd-{node}", _in_node(node, f"slurmd -D -N {node} -f {p.slurm_conf}"))
        _spawn(p, f"sshd-{node}", _in_node(node, f"/usr/sbin/sshd -D -e -f {p.etc}/sshd_config-{node}"))

    def all_idle():
        for name in [f"slurmd-{n}" for n in NODES] + [f"sshd-{n}" for n in NODES]:
            _check_alive(p, name)
        states = _sinfo_states(env)
        return all(states.get(n) == "idle" for n in NODES)

    _wait(all_idle, 60, "3 idle nodes in sinfo", p.log / "slurmctld.log", interval=0.1)
    for node in NODES:
        address = node_address(node)
        _wait(lambda a=address: _tcp_answers(a, 22, banner=b"SSH-"), 30, f"sshd on {node}", p.log / f"sshd-{node}.out")
    result = _run(["srun", "-N3", "-t", "1", "hostname"], check=False, env=env, timeout=60)
    if sorted(result.stdout.split()) != list(NODES):
        raise LabError(f"srun -N3 hostname gave {result.stdout.strip()!r} ({result.stderr.strip()})")
    for name in _load_pids(p):
        _check_alive(p, name)


# ---------------------------------------------------------------------------------------------
# Stopping: by recorded PID, plus whatever runs in the lab's namespaces or under its slurmds


def _netns_inodes() -> set[int]:
    inodes = set()
    for node in NODES:
        try:
            inodes.add((NETNS_DIR / node).stat().st_ino)
        except OSError:
            pass
    return inodes


class _ProcScan:
    """One pass over /proc: live processes, their parents, which run in the lab's network
    namespaces and which carry the lab's MARKER in their environment. Never by name."""

    def __init__(self, lab_dir: Path):
        marker = f"{MARKER}={lab_dir}".encode()
        inodes = _netns_inodes()
        self.parent: dict[int, int] = {}
        self.start: dict[int, int] = {}
        self.in_nodes: set[int] = set()
        self.marked: set[int] = set()
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            pid = int(entry)
            stat = _proc_stat(pid)
            if stat is None or stat[0] in ("Z", "X", "x"):
                continue
            self.parent[pid], self.start[pid] = stat[1], stat[3]
            try:
                if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    self.marked.add(pid)
            except OSError:
                pass
            if inodes:
                try:
                    link = os.readlink(f"/proc/{pid}/ns/net")
                    if int(link[link.index("[") + 1 : -1]) in inodes:
                        self.in_nodes.add(pid)
                except (OSError, ValueError):
                    pass

    def descendants(self, roots: set[int]) -> set[int]:
        found = set()
        for pid in self.parent:
            cur, hops = self.parent.get(pid), 0
            while cur and cur > 1 and hops < 64:
                if cur in roots:
                    found.add(pid)
                    break
                cur, hops = self.parent.get(cur), hops + 1
        return found

    def top_marked(self) -> set[int]:
        """Marked processes whose parent is not marked: the daemons themselves."""
        return {pid for pid in self.marked if self.parent.get(pid) not in self.marked}


def _stop(p: _Paths) -> None:
    """Daemons (recorded PIDs; if pids.json is lost, the marked processes): SIGTERM, then SIGKILL
    after TERM_GRACE_S. The rest of the lab (slurmstepd, which ignores SIGTERM, job tasks, ssh
    sessions, what they daemonized): SIGKILL at once. Returns when all are gone or zombies."""
    scan = _ProcScan(p.dir)
    daemons = {info["pid"]: info.get("start") for info in _load_pids(p).values()}
    daemons = {pid: start for pid, start in daemons.items() if _alive(pid, start)}
    for pid in scan.top_marked():
        daemons.setdefault(pid, scan.start[pid])
    targets = dict(daemons)

    def signal_all(pids: dict[int, int | None], sig: int) -> None:
        for pid, start in pids.items():
            if _alive(pid, start):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def kill_strays(nodes_only: bool) -> None:
        scan = _ProcScan(p.dir)
        pids = scan.in_nodes if nodes_only else scan.in_nodes | scan.marked | scan.descendants(set(daemons))
        # slurmctld's own slurmscriptd stops with it: killed first, it stalls slurmctld's exit
        strays = {pid: scan.start[pid] for pid in pids - set(daemons)}
        signal_all(strays, signal.SIGKILL)
        targets.update(strays)

    def wait_all(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while any(_alive(pid, s) for pid, s in targets.items()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    kill_strays(nodes_only=True)
    signal_all(daemons, signal.SIGTERM)
    if not wait_all(TERM_GRACE_S):
        signal_all(targets, signal.SIGKILL)
    for _ in range(3):  # and whatever the dying daemons started meanwhile
        kill_strays(nodes_only=False)
        if wait_all(TERM_GRACE_S):
            return
        signal_all(targets, signal.SIGKILL)
    raise LabError(f"lab processes survived SIGKILL: {[pid for pid, s in targets.items() if _alive(pid, s)]}")


# ---------------------------------------------------------------------------------------------
# Public API


def _read_meta(p: _Paths) -> dict:
    try:
        return json.loads(p.meta.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _healthy(p: _Paths) -> bool:
    pids = _load_pids(p)
    meta = _read_meta(p)
    if not meta.get("complete") or not pids:
        return False
    if not all(_alive(info["pid"], info.get("start")) for info in pids.values()):
        return False
    states = _sinfo_states({**os.environ, "SLURM_CONF": str(p.slurm_conf)})
    # A node running a job left by an earlier test is still healthy; down, drained or not responding
    # ("idle*") is not.
    usable = ("idle", "mixed", "allocated", "completing")
    return all(states.get(n) in usable for n in NODES) and all(
        _tcp_answers(node_address(n), 22, banner=b"SSH-") for n in NODES
    )


def status(lab_dir: Path = DEFAULT) -> dict:
    """What is running: mode, each recorded daemon's liveness, node states, healthy or not."""
    p = _Paths(lab_dir)
    meta = _read_meta(p)
    return {
        "lab_dir": str(p.dir),
        "exists": p.dir.exists(),
        "accounting": meta.get("accounting"),
        "daemons": {
            name: {"pid": info["pid"], "alive": _alive(info["pid"], info.get("start"))}
            for name, info in _load_pids(p).items()
        },
        "nodes": _sinfo_states({**os.environ, "SLURM_CONF": str(p.slurm_conf)}) if p.slurm_conf.exists() else {},
        "namespaces": [n for n in NODES if (NETNS_DIR / n).exists()],
        "bridge": _link_exists(BRIDGE),
        "healthy": _healthy(p),
    }


def up(lab_dir: Path = DEFAULT, accounting: bool = False) -> Lab:
    """Bring the lab up (or return at once if it already runs healthy in the asked mode)."""
    if os.geteuid() != 0:
        raise LabError("the Slurm lab needs root (network namespaces, /etc/hosts, apt-get)")
    p = _Paths(lab_dir)
    meta = _read_meta(p)
    if _healthy(p) and bool(meta.get("accounting")) == accounting:
        return _lab(p, accounting)
    ensure_packages(accounting)
    down(lab_dir)  # whatever is half up, or up in the other mode, goes
    p.dir.mkdir(parents=True)
    p.dir.chmod(0o755)
    try:
        made_privsep = not SSHD_PRIVSEP_DIR.exists()
        SSHD_PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)  # sshd refuses to start without it
        p.meta.write_text(json.dumps({"accounting": accounting, "complete": False, "made_run_sshd": made_privsep}))
        _write_files(p, accounting)
        _network_up()
        _rewrite_etc_hosts(add=True)
        _start_munged(p)
        if accounting:
            _start_mariadb(p)
            _start_slurmdbd(p)  # and `sacctmgr add cluster`, both before slurmctld's first start
        _start_slurm(p)
    except BaseException as error:
        kept = _failed_logs(p)
        shutil.rmtree(kept, ignore_errors=True)
        if p.log.exists():
            shutil.copytree(p.log, kept)  # down() removes the lab dir; the logs explain the failure
        try:
            down(lab_dir)
        except Exception as cleanup_error:  # keep the first error
            print(f"lab: cleanup after a failed up() also failed: {cleanup_error}", file=sys.stderr)
        if isinstance(error, LabError):
            raise LabError(f"{error} [the lab's logs are kept in {kept}]") from error
        raise
    p.meta.write_text(json.dumps({"accounting": accounting, "complete": True, "made_run_sshd": made_privsep}))
    shutil.rmtree(_failed_logs(p), ignore_errors=True)
    return _lab(p, accounting)


def _failed_logs(p: _Paths) -> Path:
    return p.dir.with_name(p.dir.name + "-failed-logs")


@contextlib.contextmanager
def borrowed(lab_dir: Path = DEFAULT, accounting: bool = False):
    """The lab for a while (a benchmark, a demo): brought up if needed, left as it was found."""
    was_up = _healthy(_Paths(lab_dir))
    lab = up(lab_dir, accounting=accounting)
    saved = {name: os.environ.get(name) for name in lab.env}
    os.environ.update(lab.env)
    try:
        yield lab
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if not was_up:
            down(lab_dir)


def down(lab_dir: Path = DEFAULT) -> None:
    """Stop every lab process (by PID), remove veths, namespaces, bridge, /etc/hosts lines, lab dir."""
    p = _Paths(lab_dir)
    meta = _read_meta(p)
    _stop(p)
    _network_down()
    _rewrite_etc_hosts(add=False)
    if meta.get("made_run_sshd"):
        try:
            SSHD_PRIVSEP_DIR.rmdir()
        except OSError:
            pass
    shutil.rmtree(p.dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT, help=f"lab directory (default {DEFAULT})")
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="bring the lab up (idempotent)")
    up_parser.add_argument("--accounting", action="store_true", help="slurmdbd + MariaDB for real sacct")
    sub.add_parser("down", help="stop everything and remove every trace")
    sub.add_parser("status", help="print the lab's state as JSON; exit 0 if healthy")
    hosts_parser = sub.add_parser("hosts-file", help="write a slurmserve hosts file and print its path")
    hosts_parser.add_argument("kind", choices=("slurm", "ssh"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.command == "up":
            lab = up(args.dir, accounting=args.accounting)
            print(f"lab up in {time.monotonic() - started:.1f} s (accounting {'on' if lab.accounting else 'off'})")
            print(f"export SLURM_CONF={lab.slurm_conf}")
            print(f"ssh -i {lab.ssh_key} -o UserKnownHostsFile={lab.known_hosts} root@{lab.addresses['node1']}")
        elif args.command == "down":
            down(args.dir)
            print(f"lab down in {time.monotonic() - started:.1f} s")
        elif args.command == "status":
            state = status(args.dir)
            print(json.dumps(state, indent=2))
            return 0 if state["healthy"] else 1
        else:
            meta = _read_meta(_Paths(args.dir))
            if not meta:
                raise LabError("the lab is not up")
            print(_lab(_Paths(args.dir), bool(meta.get("accounting"))).hosts_file(args.kind))
    except LabError as error:
        print(f"lab: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `... up | head -1`: the lab is up all the same
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
