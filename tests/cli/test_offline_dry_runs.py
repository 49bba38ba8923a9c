"""`plan`, `render` and `submit --dry-run` never need the Hugging Face hub; `submit` needs it only when the
model must be fetched. HF_HUB_OFFLINE=1 is honoured everywhere. The hub here: tests/hub_server.py, or a
port nothing listens on."""

from __future__ import annotations

import socket

import pytest
from huggingface_hub import constants
from typer.testing import CliRunner

from slurmserve import deploy
from slurmserve.cli import app
from slurmserve.config.recipe import ModelSpec, builtin_recipe_names
from slurmserve.errors import UserError
from slurmserve.modelcache.staging import fetch_to_cache

from ..conftest import HOSTS
from ..helpers import local_hosts_with_cache, slurmserve
from ..hub_server import FakeRepo, HubServer, tiny_model_files

REPO = "acme/tiny-chat"
TINY = FakeRepo(tiny_model_files())
SLURM_HOSTS = str(HOSTS / "four-node-8gpu.yaml")  # a shared model cache, and room for every shipped recipe
STAGED = [f"model.repo={REPO}", "model.served_name=tiny-chat", "mocker.use_recipe_model=true"]


@pytest.fixture(autouse=True)
def no_token(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture
def unreachable_hub(monkeypatch) -> str:
    """HF_ENDPOINT at a port nothing listens on."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    return endpoint


def cli(*argv: str):
    return CliRunner().invoke(app, list(argv))


@pytest.mark.parametrize("offline", [False, True], ids=["unreachable", "HF_HUB_OFFLINE"])
def test_plan_and_render_of_every_recipe_need_no_hub(unreachable_hub, monkeypatch, tmp_path, offline):
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for recipe in builtin_recipe_names():
        planned = cli("plan", "--recipe", recipe, "--hosts", SLURM_HOSTS, "--json")
        assert planned.exit_code == 0, f"plan {recipe}: {planned.output}"
        rendered = cli("render", "--recipe", recipe, "--hosts", SLURM_HOSTS, "--out", str(tmp_path / recipe))
        assert rendered.exit_code == 0, f"render {recipe}: {rendered.output}"
        assert (tmp_path / recipe / "slurmserve.sbatch").exists()
        if deploy.stages_a_model(deploy.load_inputs(recipe, SLURM_HOSTS)):
            assert "not verified" in rendered.output, rendered.output


def test_submit_dry_run_warns_and_prints_the_script_without_the_hub(unreachable_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = slurmserve("submit", "--recipe", "gpt-oss-120b-disagg", "--hosts", SLURM_HOSTS, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "#SBATCH" in result.stdout and "not verified (HF_HUB_OFFLINE=1)" in result.stderr


def test_a_dry_run_still_checks_the_revision_when_the_hub_answers(monkeypatch, tmp_path):
    with HubServer({REPO: TINY}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        sets = [word for value in [*STAGED, "model.revision=" + "0" * 40] for word in ("--set", value)]
        result = cli("render", "--recipe", "mocker-disagg", "--hosts", SLURM_HOSTS, *sets, "--out", str(tmp_path))
    assert result.exit_code == 2 and "model.revision" in result.output, result.output


@pytest.fixture
def staged_then_offline(unreachable_hub, monkeypatch, tmp_path) -> str:
    """A local hosts file whose cache got the model while the hub answered; now the hub is unreachable and
    HF_HUB_OFFLINE=1."""
    hosts = local_hosts_with_cache(tmp_path)
    with HubServer({REPO: TINY}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        fetch_to_cache(ModelSpec(repo=REPO, revision=TINY.sha), tmp_path / "models")
    monkeypatch.setenv("HF_ENDPOINT", unreachable_hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return str(hosts)


def test_submit_needs_no_hub_when_the_cache_holds_the_pinned_snapshot(staged_then_offline):
    pinned = [*STAGED, f"model.revision={TINY.sha}"]
    prepared = deploy.prepare("mocker-disagg", staged_then_offline, pinned)
    assert prepared.plan.model_stage is not None and prepared.plan.model_stage.revision == TINY.sha
    assert not prepared.plan.warnings


@pytest.mark.slow
def test_submit_serves_from_the_cache_with_the_hub_unreachable(staged_then_offline, cancel_later):
    """End to end: staged once while the hub answered, then submitted with HF_HUB_OFFLINE=1 and no hub."""
    sets = [word for value in [*STAGED, f"model.revision={TINY.sha}"] for word in ("--set", value)]
    cancel_later("offline")
    result = slurmserve(
        "submit", "--recipe", "mocker-disagg", "--hosts", staged_then_offline, *sets, "--name", "offline"
    )
    assert result.returncode == 0, result.stderr
    assert slurmserve("cancel", "offline").returncode == 0


def test_submit_of_a_model_not_in_the_cache_under_hf_hub_offline_says_so(unreachable_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hosts = str(local_hosts_with_cache(tmp_path))
    with pytest.raises(UserError, match="HF_HUB_OFFLINE=1") as raised:
        deploy.prepare("mocker-disagg", hosts, [*STAGED, f"model.revision={TINY.sha}"])
    assert "stage" in str(raised.value)
