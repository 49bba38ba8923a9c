"""Plan time: a flag a recipe or `--set` adds, which the Dynamo the plan runs rejects, is exit 2 naming the
recipe, the process, the flag and that Dynamo's version, as a person reads it; nothing is asked of an
interpreter this machine does not have (the job's node preflight asks the nodes' own)."""

from __future__ import annotations

import importlib.metadata

import pytest
import yaml

from ..conftest import HOSTS
from ..helpers import VLLM_PYTHON, slurmserve_in_process

DYNAMO = importlib.metadata.version("ai-dynamo")
LOCAL = str(HOSTS / "local.yaml")


@pytest.fixture(autouse=True)
def narrow_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")


def one_paragraph(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return " ".join(result.stderr.split())


def test_a_frontend_flag_the_pinned_dynamo_dropped_is_refused_at_plan_time():
    result = slurmserve_in_process(
        "plan", "--recipe", "mocker-agg", "--hosts", LOCAL, "--set", 'frontend.extra_args=["--router-reset-states"]'
    )
    said = one_paragraph(result)
    assert said.startswith(
        f"error: recipe mocker-agg: frontend: Dynamo {DYNAMO}'s dynamo.frontend rejects --router-reset-states: "
        "Unknown arguments specified: ['--router-reset-states']"
    ), said
    assert "frontend.extra_args" in said


def test_a_misspelt_engine_flag_in_a_workers_args_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "rendered"
    result = slurmserve_in_process(
        "render", "--recipe", "gpt-oss-120b-disagg", "--hosts", LOCAL, "--out", str(out), "--set",
        "decode.args.max_num_tokenz=16384",
    )  # fmt: skip
    said = one_paragraph(result)
    assert (
        f"recipe gpt-oss-120b-disagg: decode-0: Dynamo {DYNAMO}'s dynamo.trtllm rejects --max-num-tokenz (closest: --max-num-tokens)"
        in said
    )
    assert not out.exists()


def test_the_shipped_recipe_as_it_stands_plans():
    assert slurmserve_in_process("plan", "--recipe", "gpt-oss-120b-disagg", "--hosts", LOCAL).returncode == 0


def test_an_interpreter_this_machine_lacks_is_left_to_the_nodes_preflight(tmp_path):
    hosts = yaml.safe_load((HOSTS / "local.yaml").read_text())
    hosts["python"] = str(tmp_path / "elsewhere" / "bin" / "python")
    (tmp_path / "hosts.yaml").write_text(yaml.safe_dump(hosts))
    result = slurmserve_in_process(
        "plan", "--recipe", "mocker-agg", "--hosts", str(tmp_path / "hosts.yaml"), "--set",
        'frontend.extra_args=["--router-reset-states"]',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_submit_asks_beside_its_preflight_and_starts_nothing_when_refused(tmp_path, monkeypatch):
    """submit's parser check runs while the backend's preflight does (it is on the way to the first answer),
    and a refusal still comes before anything starts: no run directory, no process."""
    monkeypatch.setenv("SLURMSERVE_HOME", str(tmp_path))
    result = slurmserve_in_process(
        "submit", "--recipe", "mocker-agg", "--hosts", LOCAL, "--name", "refused", "--set",
        'frontend.extra_args=["--router-reset-states"]',
    )  # fmt: skip
    assert "rejects --router-reset-states" in one_paragraph(result)
    assert not list(tmp_path.rglob("refused"))


def test_a_shipped_recipe_as_shipped_is_not_asked_again(monkeypatch):
    """Its command lines are the ones tests/node/test_flagcheck.py proves against this venv's Dynamo: planning
    spends no interpreter start on them (a third of a second on the way to every first answer)."""
    from slurmserve.runtime import inputs

    monkeypatch.setattr(inputs, "flag_rejections", lambda plan: pytest.fail(f"asked about {plan.recipe}"))
    for verb in ("plan", "submit"):
        extra = ("--dry-run",) if verb == "submit" else ()
        result = slurmserve_in_process(verb, "--recipe", "mocker-agg", "--hosts", LOCAL, *extra)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow  # vLLM's import takes 10-20 s here
def test_a_misspelt_vllm_flag_is_refused_by_the_nodes_vllm(tmp_path):
    """vLLM's flags are vLLM's: where the nodes' interpreter has vLLM (here install.sh --test's $VENV/vllm), its
    own definitions refuse a misspelling at plan time."""
    hosts = yaml.safe_load((HOSTS / "local.yaml").read_text()) | {"python": str(VLLM_PYTHON)}
    (tmp_path / "hosts.yaml").write_text(yaml.safe_dump(hosts))
    result = slurmserve_in_process(
        "plan", "--recipe", "gpt-oss-120b-vllm-agg", "--hosts", str(tmp_path / "hosts.yaml"), "--set",
        "agg.args.gpu_memory_utilizatoin=0.9",
    )  # fmt: skip
    said = one_paragraph(result)
    assert (
        f"recipe gpt-oss-120b-vllm-agg: agg-0: Dynamo {DYNAMO}'s dynamo.vllm rejects --gpu-memory-utilizatoin "
        "(closest: --gpu-memory-utilization)"
    ) in said, said


def test_without_vllm_a_vllm_workers_dynamo_flags_are_still_refused():
    result = slurmserve_in_process(
        "plan", "--recipe", "gpt-oss-120b-vllm-disagg", "--hosts", LOCAL, "--set", "decode.args.disaggregation_mode=pd2"
    )
    assert f"decode-0: Dynamo {DYNAMO}'s dynamo.vllm rejects --disaggregation-mode: " in one_paragraph(result)


def test_a_planner_setting_dynamos_planner_config_refuses_is_exit_2_at_plan_time():
    result = slurmserve_in_process(
        "plan", "--recipe", "mocker-disagg-autoscale", "--set", "autoscale.planner.decode_scale_up_kv_rate=5"
    )
    said = one_paragraph(result)
    assert f"planner: Dynamo {DYNAMO}'s dynamo.planner rejects" in said, said
    assert "decode_scale_up_kv_rate must be greater than decode_scale_down_kv_rate" in said
    assert "autoscale.planner" in said
