from __future__ import annotations

from pathlib import Path

import pytest

from slurmserve.backends import traits_for
from slurmserve.config.hosts import load_hosts
from slurmserve.config.recipe import load_recipe
from slurmserve.planning.planner import make_plan
from tests.cluster.lab import DEFAULT

REPO = Path(__file__).resolve().parent.parent
LAB_FIXTURES = {"slurm_lab", "slurm_lab_accounting"}
LAB_KNOWN_HOSTS = DEFAULT / "ssh" / "known_hosts"  # written by tests/cluster/lab.py when the lab comes up
HOSTS = REPO / "hosts"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that brings up the test cluster, directly or through another fixture (the SSH-lab tests
    ask for its hosts file), carries `lab`: `-m "not slow and not lab"` is the fast tier without root."""
    for item in items:
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch, request):
    """Every test gets its own run registry and its own HOME: nothing reads or writes the user's
    ~/.slurmserve, and Dynamo's frontend starts with an empty model-card cache ($HOME/.cache/dynamo).
    Only the tests that ask for the test cluster see it: once a lab test has run, the session's
    SLURM_CONF would turn every other test's no-`--hosts` submit into a Slurm one."""
    if not LAB_FIXTURES & set(request.fixturenames):
        monkeypatch.setenv("SLURM_CONF", str(tmp_path / "no-slurm.conf"))
    monkeypatch.setenv("SLURMSERVE_HOME", str(tmp_path / "slurmserve-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # As a user of the test cluster would have it: ssh knows its nodes' host keys (and checks them).
    ssh = tmp_path / "home" / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "config").write_text(f"Host *\n    UserKnownHostsFile {LAB_KNOWN_HOSTS}\n")


@pytest.fixture
def cancel_later():
    """Runs a test started are cancelled even when the test fails half-way."""
    from .helpers import slurmserve

    started = []
    yield started.append
    for run in started:
        slurmserve("cancel", run)


def plan_of(recipe: str, hosts: str, *sets: str, run_name: str = "test-run", **kwargs):
    hosts_file = load_hosts(HOSTS / hosts)
    return make_plan(
        load_recipe(recipe, list(sets)),
        hosts_file,
        traits_for(hosts_file.backend),
        run_name=run_name,
        run_dir=f"/runs/{run_name}",
        python="/usr/bin/python3",
        **kwargs,
    )


def local_run(recipe: str, run_name: str, *sets: str):
    """A run directory written by hand from a plan for this machine, its files rendered; nothing started."""
    from slurmserve.render.files import rendered_files, write_files
    from slurmserve.runs import create_run, run_dir_for

    plan = make_plan(
        load_recipe(recipe, list(sets)),
        load_hosts(HOSTS / "local.yaml"),
        traits_for("local"),
        run_name=run_name,
        run_dir=str(run_dir_for(run_name, None)),
        python="python3",
    )
    run = create_run(plan)
    write_files(rendered_files(plan, traits_for(plan.backend)), run.path, overwrite=True)
    return run


# The real Slurm test cluster (network namespaces, slurmd per node): session fixtures `slurm_lab`
# and `slurm_lab_accounting`, brought up only by the tests that ask for them.
pytest_plugins = ["tests.cluster.fixtures"]
