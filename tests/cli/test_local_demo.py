"""The local demo end to end: real Dynamo frontend + mock workers on this machine, through the CLI."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from ..helpers import completion_tokens, leftover_processes, slurmserve, status_of

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("recipe", ["mocker-disagg", "mocker-agg"])
def test_demo_serves_a_real_completion_then_cancel_leaves_nothing(recipe, cancel_later):
    result = slurmserve("submit", "--recipe", recipe, "--name", f"demo-{recipe}", "--timeout", "120")
    cancel_later(f"demo-{recipe}")
    assert result.returncode == 0, result.stderr
    assert "is ready at http://127.0.0.1:" in result.stdout and "sample completion: 16 tokens" in result.stdout

    status = status_of(f"demo-{recipe}")
    assert status["verdict"] == "ready" and {p["state"] for p in status["processes"]} == {"ready"}
    assert completion_tokens(status["endpoint"], "tiny-mock") > 0
    logs = slurmserve("logs", f"demo-{recipe}", "frontend")
    assert logs.returncode == 0 and "\x1b[" not in logs.stdout and logs.stdout.strip()

    result = slurmserve("cancel", f"demo-{recipe}")
    assert result.returncode == 0, result.stderr
    assert leftover_processes(f"demo-{recipe}") == []
    assert status_of(f"demo-{recipe}")["verdict"] == "stopped"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{status['endpoint']}/health", timeout=2)


def test_two_deployments_side_by_side(cancel_later):
    endpoints = []
    for name in ("left", "right"):
        result = slurmserve("submit", "--recipe", "mocker-agg", "--name", name, "--timeout", "120")
        cancel_later(name)
        assert result.returncode == 0, result.stderr
        endpoints.append(status_of(name)["endpoint"])
    assert endpoints[0] != endpoints[1]
    assert all(completion_tokens(endpoint, "tiny-mock") > 0 for endpoint in endpoints)
    listed = json.loads(slurmserve("status", "--json").stdout)
    assert {(r["run"], r["verdict"]) for r in listed} == {("left", "ready"), ("right", "ready")}


@pytest.mark.parametrize("recipe", ["gpt-oss-120b-disagg", "gpt-oss-120b-vllm-disagg"])
def test_rehearsal_of_a_real_engines_recipe_runs_on_the_mock_engine(cancel_later, recipe):
    name = f"rehearsal-{recipe.removeprefix('gpt-oss-120b-')}"
    result = slurmserve("submit", "--recipe", recipe, "--set", "engine=mocker", "--name", name, "--timeout", "120")
    cancel_later(name)
    assert result.returncode == 0, result.stderr
    status = status_of(name)
    assert completion_tokens(status["endpoint"], "openai/gpt-oss-120b") > 0


def test_a_model_folder_that_is_not_there_is_found_before_anything_starts(tmp_path):
    result = slurmserve("submit", "--recipe", "mocker-agg", "--set", f"mocker.model_path={tmp_path}/nothing")
    assert result.returncode == 2 and f"model folder {tmp_path}/nothing does not exist" in result.stderr


def test_a_worker_that_dies_fails_submit_and_leaves_nothing_running(tmp_path, cancel_later):
    (tmp_path / "empty-model").mkdir()  # there, but no model in it: the workers exit at start-up
    result = slurmserve(
        "submit",
        "--recipe",
        "mocker-disagg",
        "--set",
        f"mocker.model_path={tmp_path}/empty-model",
        "--name",
        "broken",
        "--timeout",
        "60",
    )
    cancel_later("broken")
    assert result.returncode == 1
    assert "prefill-0 exited" in result.stderr and "last lines of" in result.stderr
    assert leftover_processes("broken") == []
    assert status_of("broken")["verdict"] in ("failed", "stopped")


def test_no_wait_returns_at_once_and_status_follows(cancel_later):
    result = slurmserve("submit", "--recipe", "mocker-agg", "--name", "nowait", "--no-wait")
    cancel_later("nowait")
    assert result.returncode == 0 and "started" in result.stdout
    from slurmserve.waiting import wait_until

    assert wait_until(lambda: status_of("nowait")["verdict"] == "ready", 60)


def test_frontend_binds_loopback_only():
    result = slurmserve("plan", "--recipe", "mocker-disagg", "--json")
    plan = json.loads(result.stdout)
    frontend = next(p for p in plan["processes"] if p["role"] == "frontend")
    assert frontend["command"][frontend["command"].index("--http-host") + 1] == "127.0.0.1"
    assert socket.gethostname() in {n["name"] for n in plan["nodes"]}


def test_the_timeout_bounds_the_whole_submit():
    """The launch included: a deployment that cannot be ready in 0.2 s fails then, everything stopped."""
    result = slurmserve("submit", "--recipe", "mocker-disagg", "--name", "hurried", "--timeout", "0.2")
    assert result.returncode == 1 and "the start timed out (not ready within --timeout 0.2 s)" in result.stderr, (
        result.stderr
    )
    assert leftover_processes("hurried") == []
