"""A recipe's `autoscale:` section: per-role min/max the only bounds, the planner's options under Dynamo's own
names (the list checked against the installed PlannerConfig), sla refused with its reason; and the
aisimulate_core shim install.sh puts behind site-packages."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from slurmserve.backends import SLURM_TRAITS
from slurmserve.config.autoscale import PLANNER_OPTIONS
from slurmserve.config.recipe import load_recipe
from slurmserve.errors import UserError
from slurmserve.render.scripts import render_scripts

from ..conftest import HOSTS, plan_of

SHIMS = Path(__file__).resolve().parents[2] / "shims"
DECODE_1_TO_3 = ("autoscale.decode.min=1", "autoscale.decode.max=3")


def refusal(*sets: str, recipe: str = "mocker-disagg") -> str:
    with pytest.raises(UserError) as caught:
        load_recipe(recipe, list(sets))
    return str(caught.value)


def test_the_planner_options_are_those_of_the_installed_dynamos_planner_config():
    from dynamo.planner.config.planner_config import PlannerConfig

    assert set(PlannerConfig.model_fields) == PLANNER_OPTIONS


def test_the_aisimulate_shim_comes_after_site_packages_and_raises_when_used():
    import aisimulate_core
    from aisimulate_core.sdk import ForwardPassPerfModelConfig

    assert Path(aisimulate_core.__file__).parent.parent == SHIMS
    site_packages = next(index for index, path in enumerate(sys.path) if path.endswith("site-packages"))
    assert sys.path.index(str(SHIMS)) > site_packages
    with pytest.raises(ImportError, match="import shim"):
        ForwardPassPerfModelConfig()
    with pytest.raises(ImportError, match="import shim"):
        ForwardPassPerfModelConfig.best_available  # noqa: B018 (the attribute read is what raises)


def test_bounds_of_the_modes_roles_are_taken():
    recipe = load_recipe("mocker-disagg", [*DECODE_1_TO_3, "autoscale.planner.decode_scale_up_kv_rate=90"])
    assert recipe.autoscale is not None
    assert {role: (b.min, b.max) for role, b in recipe.autoscale.bounds().items()} == {"decode": (1, 3)}
    assert recipe.autoscale.capacity == "reserved"


@pytest.mark.parametrize(
    "sets, expected",
    [
        (("autoscale.decode.min=3", "autoscale.decode.max=2"), "autoscale.decode: min 3 is more than max 2"),
        (
            (*DECODE_1_TO_3, "autoscale.planner.decode_scale_up_kv=80"),
            "decode_scale_up_kv: Dynamo's planner has no such option (did you mean 'decode_scale_up_kv_rate'?)",
        ),
        ((*DECODE_1_TO_3, "autoscale.planner.optimization_target=sla"), "optimization_target sla needs the engine's"),
        ((*DECODE_1_TO_3, "autoscale.planner.optimization_target=throughput"), "with optimization_target load"),
        ((*DECODE_1_TO_3, "autoscale.planner.model_name=x"), "model_name: slurmserve sets this"),
        ((*DECODE_1_TO_3, "autoscale.planner.report_output_dir=x"), "report_output_dir: slurmserve sets this"),
        (("autoscale.agg.min=1", "autoscale.agg.max=2"), "autoscale.agg: mode disagg has no agg workers"),
        (("autoscale.capacity=reserved",), "autoscale: give the bounds of at least one of prefill or decode"),
        ((*DECODE_1_TO_3, "decode.replicas=2"), "decode.replicas: an autoscaled role starts with autoscale.decode.min"),
        ((*DECODE_1_TO_3, "autoscale.capacity=spot"), "autoscale.capacity"),
        (("autoscale.decode.min=0", "autoscale.decode.max=2"), "autoscale.decode.min: must be at least 1"),
    ],
)
def test_bad_autoscale_settings_are_refused_naming_the_field(sets, expected):
    assert expected in refusal(*sets)


@pytest.mark.parametrize(
    "bound", ["min_endpoint", "prefill_min_endpoint", "decode_min_endpoint", "max_gpu_budget", "min_gpu_budget"]
)
def test_the_planners_own_bounds_beside_min_and_max_are_refused(bound):
    message = refusal(*DECODE_1_TO_3, f"autoscale.planner.{bound}=4")
    assert f"{bound}: the planner's bounds come from autoscale's per-role min and max" in message


def test_autoscale_with_pools_is_refused():
    message = refusal(*DECODE_1_TO_3, recipe="mocker-two-pools-disagg")
    assert "autoscale: not with pools" in message


def test_elastic_capacity_is_slurms():
    with pytest.raises(UserError, match="elastic submits a Slurm job per added worker, so it needs the slurm backend"):
        plan_of("mocker-disagg", "local.yaml", *DECODE_1_TO_3, "autoscale.capacity=elastic")


def test_elastic_workers_are_standby_in_jobs_of_their_own_on_the_deployments_nodes():
    """The deployment's job asks for the GPUs of the workers it starts with; each elastic worker's own job
    for its own (Slurm chooses which: its GPUs count within that job), on a node of the deployment's job."""
    plan = plan_of("mocker-disagg-autoscale", "two-node-8gpu.yaml", "autoscale.capacity=elastic")
    elastic = [p for p in plan.processes if p.elastic]
    assert [p.name for p in elastic] == ["decode-1", "decode-2"] and all(p.standby for p in elastic)
    assert all(p.gpus == [0, 1] for p in elastic)
    assert plan.gpus_per_node_used() == 2  # prefill-0 on one node, decode-0 on the other
    reserved = plan_of("mocker-disagg-autoscale", "two-node-8gpu.yaml")
    assert reserved.gpus_per_node_used() == 6 and not any(p.elastic for p in reserved.processes)


def test_an_elastic_worker_placed_where_the_deployment_has_no_worker_is_refused():
    sets = ("autoscale.capacity=elastic", "decode.tensor_parallel=8", "decode.expert_parallel=8")
    with pytest.raises(UserError, match="autoscale.decode.max: elastic worker decode-1 would be placed on gpu03"):
        plan_of("mocker-disagg-autoscale", "four-node-8gpu.yaml", *sets)


def test_elastic_workers_jobs_carry_the_hosts_sbatch_options_and_exclusive_nodes_are_refused(tmp_path):
    hosts = yaml.safe_load((HOSTS / "two-node-8gpu.yaml").read_text())
    hosts["slurm"]["extra_sbatch"] = ["--mem=0"]
    (tmp_path / "mem.yaml").write_text(yaml.safe_dump(hosts))
    plan = plan_of("mocker-disagg-autoscale", str(tmp_path / "mem.yaml"), "autoscale.capacity=elastic")
    assert "#SBATCH --mem=0\n" in render_scripts(plan, SLURM_TRAITS)["elastic-decode-1.sbatch"]
    hosts["slurm"]["extra_sbatch"] = ["--exclusive"]
    (tmp_path / "exclusive.yaml").write_text(yaml.safe_dump(hosts))
    with pytest.raises(UserError, match="slurm.extra_sbatch --exclusive keeps to itself"):
        plan_of("mocker-disagg-autoscale", str(tmp_path / "exclusive.yaml"), "autoscale.capacity=elastic")
