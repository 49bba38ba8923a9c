"""A newcomer's first hour, the plans: what `plan` shows is honest (simulated GPUs said as such, each rank's
NICs, a summary line, what the hosts file leaves to each node), and what it shows is what `submit` starts.
The real CLI in a subprocess, at 80 columns, output to a pipe, as a person runs it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from ..conftest import HOSTS, REPO
from .as_a_user import user_runs, words

NO_GPUS = shutil.which("nvidia-smi") is None
without_gpus = pytest.mark.skipif(not NO_GPUS, reason="this machine has GPUs: nothing is simulated")


@without_gpus
def test_the_mock_engine_on_a_machine_without_gpus_says_they_are_simulated():
    result = user_runs("plan", "--recipe", "mocker-disagg", "--set", "decode.replicas=2")
    assert result.returncode == 0, result.stderr
    assert "warning: this machine has no GPUs: the mock engine needs none, so its workers are placed on 12 " \
        "simulated GPUs" in words(result.stderr)  # fmt: skip
    assert "uses 1 of 1 node and 12 of its 12 GPUs (simulated)" in words(result.stdout)


@without_gpus
def test_a_real_engine_on_a_machine_without_gpus_is_refused_with_the_mock_engine_as_the_way_out():
    planned = user_runs("plan", "--recipe", "gpt-oss-120b-agg")
    assert planned.returncode == 0, planned.stderr
    assert "engine trtllm needs real ones, so submit refuses it here" in words(planned.stderr)
    submitted = user_runs("submit", "--recipe", "gpt-oss-120b-agg", "--name", "real")
    said = words(submitted.stderr)
    assert submitted.returncode == 2 and "Traceback" not in said, said
    assert "no nvidia-smi" in said and "--set engine=mocker" in said
    assert "Install Dynamo with ./install.sh" not in said  # it never installs TensorRT-LLM


def test_plan_ranks_shows_each_ranks_nics_warns_of_a_down_hca_and_sums_up():
    result = user_runs("plan", "--recipe", "gpt-oss-120b-disagg", "--hosts", str(HOSTS / "dgx-h100-two-node.yaml"),
                       "--set", "decode.tensor_parallel=8", "--set", "decode.expert_parallel=8", "--ranks")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = {" ".join(line.split()) for line in result.stdout.splitlines()}
    assert {"prefill-0 1 gpu01 1 mlx5_3:1", "decode-0 7 gpu02 7 mlx5_11:1"} <= lines, result.stdout
    assert "decode-0 3 gpu02 3 mlx5_0:1, mlx5_3:1, mlx5_4:1, mlx5_6:1," in lines  # wrapped between HCAs
    assert "warning: gpu02 GPU 3: its own HCA mlx5_5 is down; its rank uses mlx5_0, mlx5_3" in words(result.stderr)
    assert result.stdout.rstrip().endswith("uses 2 of 2 nodes and 12 of their 16 GPUs; under 1 leaf switch (leaf1)")


def test_the_plan_reads_whole_at_80_columns():
    result = user_runs("plan", "--recipe", "gpt-oss-120b-disagg", "--hosts", str(HOSTS / "two-node-8gpu.yaml"))
    assert result.returncode == 0, result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith(" ")]  # title and caption: one line each
    assert "…" not in result.stdout and max(map(len, table)) <= 80, result.stdout
    assert "response_stream=" in result.stdout


def test_a_hub_model_without_a_model_cache_is_said_to_download_on_each_node(tmp_path):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("backend: ssh\nhosts: [{name: gpu01}, {name: gpu02}]\nnode: {gpus: 4}\n")
    result = user_runs("plan", "--recipe", "gpt-oss-120b-disagg", "--hosts", str(hosts))
    assert result.returncode == 0, result.stderr
    assert "model_cache: the hosts file names no shared model cache, so each of the deployment's 2 nodes " \
        "downloads it from the hub (openai/gpt-oss-120b)" in words(result.stderr)  # fmt: skip


def test_plan_and_render_under_one_name_give_the_same_ports_and_names(tmp_path):
    planned = user_runs("plan", "--recipe", "mocker-agg", "--name", "reviewed", "--json")
    again = user_runs("plan", "--recipe", "mocker-agg", "--name", "reviewed", "--json")
    rendered = user_runs("render", "--recipe", "mocker-agg", "--name", "reviewed", "--out", str(tmp_path / "out"))
    assert planned.returncode == again.returncode == rendered.returncode == 0, rendered.stderr
    ports = [ports_of(json.loads(text)) for text in (planned.stdout, again.stdout)]
    ports.append(ports_of(json.loads((tmp_path / "out" / "plan.json").read_text())))
    assert ports[0] == ports[1] == ports[2], ports


def ports_of(plan: dict) -> tuple:
    return plan["run_name"], plan["port_block"], [(p["name"], p["ports"]) for p in plan["processes"]]


@pytest.mark.slow
def test_submit_under_the_reviewed_name_runs_what_plan_showed(cancel_later):
    planned = user_runs("plan", "--recipe", "mocker-agg", "--name", "reviewed", "--json")
    submitted = user_runs("submit", "--recipe", "mocker-agg", "--name", "reviewed", "--no-wait")
    cancel_later("reviewed")
    assert submitted.returncode == 0, submitted.stderr
    from slurmserve.runs import open_run

    ran = json.loads(open_run("reviewed").paths.plan.read_text())
    assert ports_of(ran) == ports_of(json.loads(planned.stdout))


def readme_python_example() -> str:
    """The Python API example as the docs show it (README.md, or the docs/ page it moved to)."""
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL):
            if "deploy.prepare(" in block and "decode.replicas=2" in block:
                return block
    raise AssertionError("no Python API example (deploy.prepare with decode.replicas=2) in README.md or docs/")


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(tmp_path):
    example = tmp_path / "example.py"
    example.write_text(readme_python_example())
    result = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
