"""A newcomer's first hour, the errors: bad input as a user types it (the real CLI in a subprocess, 80 columns,
output to a pipe) ends with exit 2 and one paragraph that names where the mistake is (the `--set`, the file and
line, the host entry) and what to write instead, in the user's words, without a traceback or pydantic's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slurmserve.runs.events import Cancelled, Failed

from ..conftest import HOSTS, local_run
from .as_a_user import user_runs, words

PYDANTIC_WORDING = ("Value error", "Input should be", "Field required", "<unicode string>", "Traceback")


def refused(*args: str) -> str:
    """The one paragraph of a refusal (exit 2), its lines joined as a person reads them."""
    result = user_runs(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    said = words(result.stderr)
    assert said.startswith("error: "), said
    assert not any(words in result.stderr + result.stdout for words in PYDANTIC_WORDING), said
    return said


def write(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(text)
    return str(folder / name)


def test_a_mistyped_set_key_names_the_set_and_the_key_meant():
    said = refused("plan", "--recipe", "mocker-disagg", "--set", "decode.replica=2")
    assert said == "error: --set decode.replica=2: decode.replica: unknown key (did you mean 'decode.replicas'?)"


def test_a_mistyped_recipe_name_suggests_the_closest_one():
    said = refused("plan", "--recipe", "mocker-disag")
    assert "--recipe 'mocker-disag': no such file" in said and "(did you mean 'mocker-disagg'?)" in said


def test_a_mistyped_recipe_key_suggests_the_key_meant(tmp_path):
    recipe = write(
        tmp_path,
        "r.yaml",
        "name: r\nmodel: {repo: builtin:tiny-mock}\nengine: mocker\nmode: disagg\n"
        "prefil: {replicas: 1}\ndecode: {replicas: 1}\n",
    )
    said = refused("plan", "--recipe", recipe)
    assert f"{recipe}: prefil: unknown key (did you mean 'prefill'?)" in said


def test_a_mistyped_value_suggests_the_value_meant():
    said = refused("plan", "--recipe", "mocker-agg", "--set", "engine=mocer")
    assert (
        said
        == "error: --set engine=mocer: engine: must be 'trtllm', 'vllm' or 'mocker' (got 'mocer') (did you mean 'mocker'?)"
    )


def refused_hosts(folder: Path, entries: str) -> tuple[str, str]:
    """A hosts file of two SSH hosts whose entries are `entries`, refused: its path and the paragraph."""
    hosts = write(folder, "hosts.yaml", f"backend: ssh\nhosts:\n  - {{name: gpu01, address: 10.0.0.1}}\n{entries}")
    return hosts, refused("plan", "--recipe", "mocker-agg", "--hosts", hosts)


def test_a_mistyped_hosts_key_names_the_host_entry_and_the_key_meant(tmp_path):
    hosts, said = refused_hosts(tmp_path, "  - {name: gpu02, adress: 10.0.0.2}\n")
    assert f"{hosts}: hosts[1] (gpu02): adress: unknown key (did you mean 'address'?)" in said


def test_tensor_parallel_changed_alone_says_to_set_expert_parallel_too():
    said = refused("plan", "--recipe", "gpt-oss-120b-disagg", "--hosts", str(HOSTS / "local.yaml"),
                   "--set", "decode.tensor_parallel=2")  # fmt: skip
    assert "decode.expert_parallel: 4 is larger than the worker's 2 GPUs" in said
    assert "set decode.expert_parallel too" in said and "--set decode.expert_parallel=2" in said


def test_a_yaml_error_names_the_file_and_line(tmp_path):
    recipe = write(tmp_path, "r.yaml", "name: r\nmodel:\n  repo: x\n   extra: 1\n")
    said = refused("plan", "--recipe", recipe)
    assert said.startswith(f"error: {recipe}, line 4, column 9: not valid YAML: mapping values are not allowed"), said


def test_an_address_that_is_no_address_is_refused_naming_the_host(tmp_path):
    hosts, said = refused_hosts(tmp_path, "  - {name: gpu02, address: 10.0.0.312}\n")
    assert f"{hosts}: hosts[1] (gpu02): address: is no IP address" in said and "(got '10.0.0.312')" in said


def test_a_wrong_nic_line_of_the_shared_node_block_is_named_there(tmp_path):
    hosts = write(
        tmp_path,
        "hosts.yaml",
        "backend: ssh\nhosts: [{name: gpu01}]\nnode: {gpus: 8, nics: [{name: mlx5_0, gpus: [0, 9]}]}\n",
    )
    said = refused("plan", "--recipe", "mocker-agg", "--hosts", hosts)
    assert "node.nics[0] (mlx5_0): gpus lists GPU(s) [9] (the shared node: block)" in said
    assert "hosts[0] (gpu01) has 8 GPUs" in said


def test_status_after_a_start_that_timed_out_says_it_timed_out():
    run = local_run("mocker-agg", "late")
    run.record(Failed(waiting_for="workers registered with the frontend", dead=[], timeout_s=3))
    result = user_runs("status", "late")
    said = words(result.stdout)
    assert result.returncode == 0, result.stderr
    assert "the start timed out: not ready within submit's --timeout of 3 s" in said, said
    assert "submit again with a longer --timeout" in said and "the start failed" not in said


def test_metrics_grafana_without_the_runs_own_prometheus_says_what_to_do():
    run = local_run("mocker-agg", "plain")
    result = user_runs("metrics", "plain", "--grafana")
    said = words(result.stderr)
    assert result.returncode == 0, result.stderr
    assert "run plain has no Prometheus of its own, so no datasource file was written" in said
    assert "--set observability.prometheus=true" in said
    assert not (run.path / "prometheus" / "grafana-datasource.yaml").exists()
    variables = {v["name"]: v["current"] for v in json.loads(result.stdout)["templating"]["list"]}
    assert variables["datasource"] == {}  # Grafana's default Prometheus, not a uid that nothing provides


def test_cancel_on_a_stopped_run_says_it_was_already_stopped():
    run = local_run("mocker-agg", "done")
    run.record(Cancelled(leftovers=[]))
    result = user_runs("cancel", "done")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "run done was already stopped; no process left"


@pytest.mark.slow
def test_status_after_submit_timeout_says_the_start_timed_out(cancel_later):
    # 0.2 s: less than a frontend's own start, so never ready in time (a second no longer is, always).
    submitted = user_runs("submit", "--recipe", "mocker-agg", "--name", "hurried", "--timeout", "0.2")
    cancel_later("hurried")
    assert submitted.returncode == 1, submitted.stderr
    said = words(user_runs("status", "hurried").stdout)
    assert "failed (the start timed out: not ready within submit's --timeout of 0.2 s" in said, said


@pytest.mark.parametrize("timeout", ["nan", "inf", "-1", "0", "1e9"])
def test_a_timeout_is_a_finite_number_of_seconds(timeout):
    for verb in (["submit"], ["sweep", "--vary", "decode.replicas=1,2"]):
        result = user_runs(*verb, "--recipe", "mocker-agg", "--timeout", timeout)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"--timeout {float(timeout):g}: must be a number of seconds above 0" in words(result.stderr)
