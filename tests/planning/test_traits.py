"""The planner, rendering and the node needs take the backend's traits as an input: each fact changes the
plan the way it says, whatever the hosts file's backend."""

from __future__ import annotations

from slurmserve.backends import LOCAL_TRAITS, SLURM_TRAITS, SSH_TRAITS
from slurmserve.config.hosts import load_hosts
from slurmserve.config.recipe import load_recipe
from slurmserve.planning.needs import HELPERS, needs_of
from slurmserve.planning.planner import make_plan
from slurmserve.planning.traits import BackendTraits
from slurmserve.render.scripts import render_scripts

from ..conftest import HOSTS


def plan_with(traits: BackendTraits, recipe: str = "gpt-oss-120b-disagg", hosts: str = "pyxis-two-node.yaml"):
    return make_plan(
        load_recipe(recipe), load_hosts(HOSTS / hosts), traits, run_name="r", run_dir="/runs/r", python="python3"
    )


def test_an_allocation_brings_the_slurm_section_the_container_and_mpi_worlds():
    in_job = plan_with(SLURM_TRAITS)
    assert in_job.slurm is not None and in_job.container is not None
    assert in_job.process("decode-0").tasks == 4 and in_job.process("decode-0").in_container
    without = plan_with(SLURM_TRAITS.model_copy(update={"has_allocation": False}))
    assert without.slurm is None and without.container is None
    assert without.process("decode-0").tasks == 1 and not without.process("decode-0").in_container


def test_file_discovery_only_where_everything_runs_on_this_machine():
    assert plan_with(LOCAL_TRAITS, "mocker-disagg", "local.yaml").discovery == "file"
    elsewhere = LOCAL_TRAITS.model_copy(update={"runs_on_this_machine": False})
    assert plan_with(elsewhere, "mocker-disagg", "local.yaml").discovery == "etcd"


def test_nodes_keep_how_they_are_reached_only_where_the_backend_uses_ssh():
    over_ssh = plan_with(SSH_TRAITS, "mocker-disagg", "ssh-two-hosts.yaml")
    assert over_ssh.nodes[0].ssh is not None and over_ssh.nodes[0].ssh.user == "svc"
    not_over_ssh = SSH_TRAITS.model_copy(update={"reaches_nodes_over_ssh": False})
    assert all(node.ssh is None for node in plan_with(not_over_ssh, "mocker-disagg", "ssh-two-hosts.yaml").nodes)


def test_the_nodes_need_slurmserves_helpers_unless_they_are_this_machine():
    plan = plan_with(LOCAL_TRAITS, "mocker-disagg", "local.yaml")
    node = plan.nodes[0].name
    assert HELPERS not in needs_of(plan, LOCAL_TRAITS).nodes[node].modules
    assert HELPERS in needs_of(plan, SSH_TRAITS).nodes[node].modules


def test_the_scripts_are_the_traits_launch_script_and_what_it_uses():
    assert set(render_scripts(plan_with(SLURM_TRAITS), SLURM_TRAITS)) == {"slurmserve.sbatch"}
    assert set(render_scripts(plan_with(LOCAL_TRAITS, "mocker-disagg", "local.yaml"), LOCAL_TRAITS)) == {"launch.sh"}
    ssh = render_scripts(plan_with(SSH_TRAITS, "mocker-disagg", "ssh-two-hosts.yaml"), SSH_TRAITS)
    assert list(ssh) == ["driver.sh", "launch-gpu01.sh", "launch-gpu02.sh"]  # the launch script first


def test_the_recipes_env_may_set_the_etcd_lease_but_not_where_etcd_is():
    recipe = load_recipe("mocker-disagg", ["discovery=etcd", "env.ETCD_LEASE_TTL=60", "env.ETCD_ENDPOINTS=http://x:1"])
    plan = make_plan(recipe, load_hosts(HOSTS / "local.yaml"), LOCAL_TRAITS, run_name="r", run_dir="/r", python="py")
    env = plan.process("decode-0").env
    assert env["ETCD_LEASE_TTL"] == "60" and env["ETCD_ENDPOINTS"] == plan.etcd_endpoint != "http://x:1"
