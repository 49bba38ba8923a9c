"""Staging through `submit`: the model comes from a hub endpoint (tests/hub_server.py), is fetched once
into the shared cache, and every worker loads it offline. The token never lands in a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slurmserve.runs import open_run
from slurmserve.transport.procfs import task_records

from ..helpers import completion_tokens, lab_hosts_variant, local_hosts_with_cache, slurmserve, status_of
from ..hub_server import FakeRepo, HubServer, tiny_model_files

pytestmark = pytest.mark.slow

TOKEN = "hf_plantedSecretTokenValue0123456789"
REPO = "acme/tiny-chat"
STAGED = [
    "--recipe",
    "mocker-disagg",
    "--set",
    f"model.repo={REPO}",
    "--set",
    "model.served_name=tiny-chat",
    "--set",
    "mocker.use_recipe_model=true",
]


@pytest.fixture
def hub_on(monkeypatch):
    """A token-guarded hub serving REPO on the given address; HF_ENDPOINT and HF_TOKEN point at it."""
    servers = []

    def start(host: str) -> HubServer:
        hub = HubServer({REPO: FakeRepo(tiny_model_files())}, token=TOKEN, host=host).__enter__()
        servers.append(hub)
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        return hub

    yield start
    for hub in servers:
        hub.__exit__(None, None, None)


def assert_token_in_no_file(*folders: Path) -> None:
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert TOKEN not in path.read_text(errors="replace"), f"token found in {path}"


def assert_workers_load_the_snapshot_offline(run: str, snapshot: str) -> None:
    for process in open_run(run).plan().processes:
        if process.is_worker:
            assert process.command[process.command.index("--model-path") + 1] == snapshot
            assert process.env["HF_HUB_OFFLINE"] == "1"


def test_slurm_submit_stages_once_and_workers_load_it_offline(slurm_lab, hub_on, tmp_path, cancel_later):
    hub = hub_on(slurm_lab.controller_address)  # the stage step runs on node1, inside its namespace
    cache = tmp_path / "models"
    cache.mkdir()
    hosts = lab_hosts_variant(slurm_lab, "slurm", tmp_path, lambda h: h.update(model_cache=str(cache)))
    for run in ("staged-1", "staged-2"):
        cancel_later(run)
        result = slurmserve("submit", *STAGED, "--hosts", hosts, "--name", run, "--timeout", "120")
        assert result.returncode == 0, result.stdout + result.stderr
        assert completion_tokens(status_of(run)["endpoint"], "tiny-chat") > 0
        assert hub.bytes_served == hub.model_bytes  # the second run fetched nothing
    sha = FakeRepo(tiny_model_files()).sha
    snapshot = f"{cache}/hub/models--acme--tiny-chat/snapshots/{sha}"
    assert (Path(snapshot) / "config.json").exists() and (Path(snapshot) / ".slurmserve-manifest.json").exists()
    assert_workers_load_the_snapshot_offline("staged-1", snapshot)
    record = task_records(open_run("staged-1").path / "pids" / "decode-0.tasks")[0]
    environ = open(f"/proc/{record.pid}/environ").read().split("\0")
    assert "HF_HUB_OFFLINE=1" in environ  # the running worker, not just the plan
    for run in ("staged-1", "staged-2"):
        assert slurmserve("cancel", run).returncode == 0
    assert_token_in_no_file(open_run("staged-1").path, open_run("staged-2").path)


def test_local_submit_stages_in_process(hub_on, tmp_path, cancel_later):
    hub = hub_on("127.0.0.1")
    hosts = local_hosts_with_cache(tmp_path)
    cancel_later("staged-local")
    result = slurmserve("submit", *STAGED, "--hosts", str(hosts), "--name", "staged-local", "--timeout", "120")
    assert result.returncode == 0, result.stdout + result.stderr
    assert hub.bytes_served == hub.model_bytes
    assert json.loads(slurmserve("status", "staged-local", "--json").stdout)["verdict"] == "ready"
    assert slurmserve("cancel", "staged-local").returncode == 0
    assert_token_in_no_file(open_run("staged-local").path, tmp_path / "models")


@pytest.mark.parametrize(
    "change, expected",
    [
        (["--set", "model.repo=acme/missing"], "model.repo"),
        (["--set", "model.revision=no-such-branch"], "model.revision"),
    ],
)
def test_a_bad_model_fails_before_anything_starts(hub_on, tmp_path, change, expected):
    hub_on("127.0.0.1")
    hosts = local_hosts_with_cache(tmp_path)
    result = slurmserve("submit", *STAGED, *change, "--hosts", str(hosts), "--name", "bad-model")
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and TOKEN not in result.stderr
    assert slurmserve("status", "bad-model").returncode == 2  # no run was created
