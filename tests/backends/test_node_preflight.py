"""The node preflight: what each node needs (a pure function of the plan) and the check a node runs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from slurmserve.backends import LOCAL_TRAITS, SLURM_TRAITS
from slurmserve.backends.preflight import check_here
from slurmserve.node import node_check
from slurmserve.planning.needs import NodeNeeds, needs_of
from slurmserve.runs import RunDir

from ..conftest import plan_of
from ..node.test_flagcheck import DYNAMO, FLAGCHECK


def test_each_node_needs_what_its_processes_run():
    needs = needs_of(plan_of("gpt-oss-120b-disagg", "two-node-8gpu.yaml"), SLURM_TRAITS)
    head, other = needs.nodes["gpu01"], needs.nodes["gpu02"]
    assert head.modules == {"dynamo.trtllm": ["tensorrt_llm"], "dynamo.frontend": [], "slurmserve": []}
    assert "etcd" in head.programs and "trtllm-llmapi-launch" in head.programs
    assert head.programs["ucx_perftest"] == "for the KV-path preflight"
    assert head.paths == {"/shared/models": "model cache"} and head.writable == {"/runs/test-run": "run directory"}
    assert "frontend http" in head.ports and not any(label.startswith("frontend") for label in other.ports)
    assert head.gpus == 4 and other.gpus == 4
    assert needs.container == {}


def test_in_a_container_the_image_must_have_the_engine_and_the_node_the_rest():
    needs = needs_of(plan_of("gpt-oss-120b-disagg", "pyxis-two-node.yaml"), SLURM_TRAITS)
    on_node, inside = needs.nodes["gpu02"], needs.container["gpu02"]
    assert on_node.modules == {"slurmserve": []} and on_node.gpus == 4
    assert inside.python == "python3" and inside.modules == {"dynamo.trtllm": ["tensorrt_llm"]}
    assert set(inside.programs) == {"trtllm-llmapi-launch", "ucx_perftest"}  # the image's UCX runs the KV check
    assert inside.writable == {"/runs/test-run": "run directory"} and inside.gpus == 0
    assert "ucx_perftest" not in on_node.programs


def test_the_mock_engine_needs_no_gpus_and_no_engine_package():
    needs = needs_of(plan_of("gpt-oss-120b-disagg", "two-node-8gpu.yaml", "engine=mocker"), SLURM_TRAITS)
    assert all(node.gpus == 0 for node in needs.nodes.values())
    assert needs.nodes["gpu02"].modules == {"dynamo.mocker": [], "slurmserve": []}


def needs_here(tmp_path, **fields) -> NodeNeeds:
    return NodeNeeds(node="node2", address="127.0.0.1", python=sys.executable, **fields)


def test_a_node_with_everything_reports_nothing(tmp_path):
    needs = needs_here(
        tmp_path,
        modules={"json": []},
        programs={sys.executable: "run by frontend", "sh": "run by x"},
        paths={str(tmp_path): "model cache"},
        writable={str(tmp_path): "run directory", str(tmp_path / "to-be" / "made"): "run directory"},
    )
    assert node_check.problems(needs.model_dump()) == []
    assert check_here(needs) is None


def test_a_node_lacking_things_gets_one_line_naming_each(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    needs = needs_here(
        tmp_path,
        modules={"dynamo.trtllm": ["tensorrt_llm_absent"], "no_such_pkg.sub": []},
        programs={"/nonexistent/etcd": "run by etcd"},
        paths={"/nonexistent/models": "model cache"},
        writable={"/proc/slurmserve/run": "run directory"},  # not even root makes files in /proc
        ports={"frontend http": port},
    )
    with busy:
        line = check_here(needs)
    assert line is not None and line.startswith("node2: ")
    assert f"cannot be imported by {sys.executable} (No module named 'tensorrt_llm_absent')" in line
    assert "no_such_pkg.sub cannot be imported" in line and "No module named 'no_such_pkg'" in line
    assert "/nonexistent/etcd not found (run by etcd)" in line
    assert "model cache /nonexistent/models does not exist" in line
    assert "run directory /proc/slurmserve/run is not writable (" in line
    assert f"port {port} (frontend http) is in use on 127.0.0.1" in line
    assert "\n" not in line


def test_the_check_runs_as_a_plain_script_from_the_needs_file(tmp_path):
    """As the job runs it: a copy of the file, under any Python, picking its node from SLURMD_NODENAME."""
    needs = {
        "nodes": {"node2": needs_here(tmp_path, paths={"/nonexistent": "model folder"}).model_dump()},
        "container": {},
    }
    (tmp_path / "preflight.json").write_text(json.dumps(needs))
    script = tmp_path / "node-preflight.py"
    script.write_text(open(node_check.__file__).read())
    run = subprocess.run(
        [sys.executable, "-I", str(script), str(tmp_path / "preflight.json")],
        capture_output=True,
        text=True,
        env={"SLURMD_NODENAME": "node2"},
    )
    assert (run.returncode, run.stdout) == (1, "node2: model folder /nonexistent does not exist\n")
    container = subprocess.run(
        [sys.executable, "-I", str(script), str(tmp_path / "preflight.json"), "--part", "container", "--node", "node2"],
        capture_output=True,
        text=True,
    )
    assert (container.returncode, container.stdout) == (0, "")  # nothing of that part runs there


def test_each_place_asks_about_the_dynamo_command_lines_that_start_there():
    needs = needs_of(plan_of("mocker-disagg", "pyxis-two-node.yaml"), SLURM_TRAITS)
    asked = {node: [c["process"] for c in part.commands] for node, part in needs.container.items()}
    assert asked == {"gpu01": ["prefill-0", "frontend"], "gpu02": ["decode-0"]}
    assert all(not part.commands for part in needs.nodes.values())  # etcd and nats: no parser to ask
    (decode,) = needs.container["gpu02"].commands
    assert decode["module"] == "dynamo.mocker" and decode["argv"][0] == "--model-path"
    # Where nothing runs in a job, only this machine's interpreter is asked, before submit.
    assert not needs_of(plan_of("mocker-disagg", "local.yaml"), LOCAL_TRAITS).nodes["localhost"].commands


def frontend_asked_with(flag: str) -> list[dict]:
    return [{"process": "frontend", "module": "dynamo.frontend", "argv": ["--http-port", "8000", flag], "env": {}}]


@pytest.mark.slow  # Dynamo's own parser, in a Python of its own: about 1 s
def test_a_flag_the_nodes_dynamo_rejects_is_named_with_its_version(tmp_path):
    needs = needs_here(tmp_path, modules={"dynamo.frontend": []}, commands=frontend_asked_with("--router-reset-states"))
    line = node_check.report(needs.model_dump(), flagcheck=str(FLAGCHECK))
    assert line is not None and line.startswith(
        f"node2: frontend: Dynamo {DYNAMO}'s dynamo.frontend rejects --router-reset-states: "
    )
    accepted = needs_here(tmp_path, modules={"dynamo.frontend": []}, commands=frontend_asked_with("--no-kv-events"))
    assert node_check.report(accepted.model_dump(), flagcheck=str(FLAGCHECK)) is None


def test_what_this_interpreter_accepted_before_submit_is_not_asked_again(tmp_path):
    record = tmp_path / "flags-accepted.json"
    rejected = needs_here(tmp_path, commands=frontend_asked_with("--router-reset-states")).model_dump()
    missing_script = str(tmp_path / "no-flagcheck.py")  # asking would fail loudly
    record.write_text(json.dumps({"python": sys.executable, "dynamo": DYNAMO}))
    assert node_check.problems(rejected, missing_script, str(record)) == []
    record.write_text(json.dumps({"python": sys.executable, "dynamo": "1.5.0"}))  # another Dynamo since
    assert "could not be asked" in node_check.problems(rejected, missing_script, str(record))[0]
    record.write_text(json.dumps({"python": "/opt/dynamo/bin/python3", "dynamo": None}))  # an image's
    assert node_check.problems(rejected, missing_script, str(record)) != []


def test_without_dynamo_the_module_line_says_so_and_no_parser_is_asked(tmp_path):
    needs = needs_here(tmp_path, modules={"no_dynamo_here": []}, commands=frontend_asked_with("--x"))
    assert node_check.problems(needs.model_dump(), str(tmp_path / "no-flagcheck.py")) == [
        f"no_dynamo_here cannot be imported by {sys.executable} (No module named 'no_dynamo_here')"
    ]


def test_an_interpreter_that_does_not_run_is_named(tmp_path):
    needs = needs_here(tmp_path).model_copy(update={"python": "/nonexistent/python"})
    assert check_here(needs) == "node2: python /nonexistent/python cannot run (No such file or directory)"


def test_the_report_reads_each_nodes_line_and_what_srun_said(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "preflight").mkdir()
    (tmp_path / "preflight" / "node1.log").write_text("")
    (tmp_path / "preflight" / "node2.log").write_text("node2: etcd binary missing\n")
    (tmp_path / "preflight" / "node3@container.log").write_text(
        "slurmstepd: error: execve(): python3: No such file or directory\n"
    )
    assert run.preflight_report() == [
        "node2: etcd binary missing",
        "node3 (in the container): the preflight could not run: slurmstepd: error: execve(): python3: "
        "No such file or directory",
    ]
