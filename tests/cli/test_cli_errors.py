"""Bad input through the real CLI (its app, in this process for the matrix): exit status 2, the field or
file named, no traceback, nothing started."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ..conftest import HOSTS
from ..helpers import slurmserve, slurmserve_in_process

TWO_NODES = str(HOSTS / "two-node-8gpu.yaml")


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


MINIMAL_RECIPE = "name: r\nmodel: {repo: builtin:tiny-mock}\nengine: mocker\nmode: agg\nagg: {tensor_parallel: 1}\n"

BAD_INPUTS = [
    # (description, CLI arguments (tmp_path-relative files made by `files`), text expected in the message)
    ("unknown recipe", ["plan", "--recipe", "no-such-recipe"], "--recipe 'no-such-recipe'"),
    ("malformed YAML", ["plan", "--recipe", "{bad.yaml}"], "not valid YAML"),
    ("unknown recipe key", ["plan", "--recipe", "{typo.yaml}"], "prefil: unknown key"),
    ("agg recipe with prefill", ["plan", "--recipe", "{mixed.yaml}"], "mode agg takes an agg section"),
    (
        "replicas not a number",
        ["plan", "--recipe", "gpt-oss-120b-disagg", "--set", "decode.replicas=two"],
        "decode.replicas",
    ),
    ("zero replicas", ["plan", "--recipe", "gpt-oss-120b-disagg", "--set", "decode.replicas=0"], "decode.replicas"),
    ("unknown engine", ["plan", "--recipe", "gpt-oss-120b-disagg", "--set", "engine=vllm"], "engine"),
    (
        "unknown engine config",
        ["plan", "--recipe", "gpt-oss-120b-disagg", "--set", "prefill.engine_config=nope.yaml"],
        "prefill.engine_config",
    ),
    (
        "TP not dividing a node",
        ["plan", "--recipe", "gpt-oss-120b-disagg", "--hosts", TWO_NODES, "--set", "prefill.tensor_parallel=3"],
        "prefill.tensor_parallel",
    ),
    (
        "wide worker not whole nodes",
        ["plan", "--recipe", "gpt-oss-120b-disagg", "--hosts", TWO_NODES, "--set", "decode.tensor_parallel=12"],
        "decode.tensor_parallel",
    ),
    (
        "more GPUs than exist",
        ["plan", "--recipe", "gpt-oss-120b-disagg", "--hosts", TWO_NODES, "--set", "decode.replicas=4"],
        "decode.replicas",
    ),
    (
        "EP wider than TP",
        ["plan", "--recipe", "gpt-oss-120b-disagg", "--set", "prefill.expert_parallel=8"],
        "prefill.expert_parallel",
    ),
    (
        "file discovery on two nodes",
        ["plan", "--recipe", "mocker-disagg", "--hosts", TWO_NODES, "--set", "discovery=file"],
        "discovery",
    ),
    ("--set without =", ["plan", "--recipe", "mocker-agg", "--set", "agg.replicas"], "--set 'agg.replicas'"),
    ("--set into a value", ["plan", "--recipe", "mocker-agg", "--set", "engine.kind=x"], "engine is not a section"),
    (
        "missing hosts file",
        ["plan", "--recipe", "mocker-agg", "--hosts", "/nonexistent/hosts.yaml"],
        "/nonexistent/hosts.yaml: cannot read",
    ),
    ("unknown hosts key", ["plan", "--recipe", "mocker-agg", "--hosts", "{hosts-typo.yaml}"], "node.gpu: unknown key"),
    (
        "ssh hosts without hosts",
        ["plan", "--recipe", "mocker-agg", "--hosts", "{hosts-empty.yaml}"],
        "needs a hosts: list",
    ),
    (
        "NIC paired with a missing GPU",
        ["plan", "--recipe", "mocker-agg", "--hosts", "{hosts-nic.yaml}"],
        "node.nics[0] (mlx5_0)",
    ),
    ("unknown run", ["status", "no-such-run"], "run 'no-such-run'"),
    ("unknown process", ["logs", "{run}", "no-such-process"], "no process 'no-such-process'"),
    (
        "unknown backend",
        ["plan", "--recipe", "mocker-agg", "--hosts", "{hosts-backend.yaml}"],
        "backend: must be 'slurm', 'ssh' or 'local' (got 'kubernetes')",
    ),
]

FILES = {
    "bad.yaml": "name: [unclosed\n",
    "typo.yaml": MINIMAL_RECIPE + "prefil: {replicas: 1}\n",
    "mixed.yaml": MINIMAL_RECIPE + "prefill: {replicas: 1}\n",
    "hosts-typo.yaml": "backend: local\nhosts: [{name: a}]\nnode: {gpu: 8}\n",
    "hosts-empty.yaml": "backend: ssh\n",
    "hosts-backend.yaml": "backend: kubernetes\nhosts: [{name: a}]\n",
    "hosts-nic.yaml": "backend: local\nhosts: [{name: a}]\nnode: {gpus: 2, nics: [{name: mlx5_0, gpus: [0, 5]}]}\n",
}


@pytest.fixture
def a_run(tmp_path):
    """A run directory made by the real CLI (render's plan of a local run is enough for status/logs)."""
    from slurmserve.deploy import load_inputs, plan_for
    from slurmserve.runs import create_run

    return create_run(plan_for(load_inputs("mocker-agg", str(HOSTS / "local.yaml"), []), "existing-run")).name


@pytest.mark.parametrize("description, args, expected", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_exits_2_naming_the_field(description, args, expected, tmp_path, a_run):
    for name, text in FILES.items():
        write(tmp_path, name, text)
    placeholders = {"{run}": a_run} | {f"{{{name}}}": str(tmp_path / name) for name in FILES}
    args = [placeholders.get(arg, arg) for arg in args]
    result = slurmserve_in_process(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    message = " ".join(result.stderr.split())
    assert expected in message, message
    assert "Traceback" not in result.stderr + result.stdout


def test_render_refuses_to_overwrite(tmp_path):
    (tmp_path / "launch.sh").write_text("my own script")
    result = slurmserve("render", "--recipe", "mocker-agg", "--out", str(tmp_path))
    assert result.returncode == 2 and "would overwrite" in result.stderr
    assert (tmp_path / "launch.sh").read_text() == "my own script"


def test_busy_fixed_frontend_port_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = slurmserve("submit", "--recipe", "mocker-agg", "--set", f"frontend.http_port={port}", "--name", "busy")
    assert result.returncode == 2 and "frontend.http_port" in result.stderr, result.stderr
    assert not list((tmp_path / "slurmserve-home").glob("runs/busy"))  # no run directory, nothing launched
