"""What a plan says beside itself: GPUs it simulates on a machine without any, a GPU whose own HCA is down,
a hub model each node downloads for itself; and the hint when expert parallelism no longer fits."""

from __future__ import annotations

import pytest

from slurmserve.backends import LOCAL_TRAITS, traits_for
from slurmserve.config.hosts import HostEntry, Hosts, NodeSpec, concrete_nodes, load_hosts
from slurmserve.config.recipe import load_recipe
from slurmserve.errors import UserError
from slurmserve.planning.planner import make_plan, simulated_gpus
from slurmserve.planning.topology import nic_fallbacks

from ..conftest import HOSTS, plan_of

NO_GPUS = Hosts(backend="local", hosts=[HostEntry(name="here", address="127.0.0.1", gpus=0)])


def local_plan(recipe: str, *sets: str, hosts: Hosts = NO_GPUS):
    return make_plan(
        load_recipe(recipe, list(sets)), hosts, LOCAL_TRAITS, run_name="r", run_dir="/tmp/r", python="python3"
    )


@pytest.mark.parametrize(
    "recipe, sets, count",
    [
        ("mocker-disagg", (), 8),  # as many as a real node: the indices an 8-GPU recipe gets there
        ("mocker-disagg", ("decode.replicas=2",), 12),
        ("mocker-agg", ("agg.tensor_parallel=16",), 16),
        ("mocker-disagg", ("prefill.tensor_parallel=3", "prefill.expert_parallel=1"), 12),  # 3 and 4 both divide
    ],
)
def test_gpus_simulated_where_there_are_none_fit_the_recipe(recipe, sets, count):
    assert simulated_gpus(load_recipe(recipe, list(sets)), concrete_nodes(NO_GPUS), LOCAL_TRAITS) == count


def test_the_mock_engine_on_simulated_gpus_is_planned_and_said_so():
    plan = local_plan("mocker-disagg", "decode.replicas=2")
    assert [p.gpus for p in plan.processes if p.is_worker] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert any("this machine has no GPUs: the mock engine needs none" in warning for warning in plan.warnings)


def test_a_real_engine_on_simulated_gpus_is_shown_with_the_way_out():
    plan = local_plan("gpt-oss-120b-agg")
    assert any("submit refuses it here" in w and "--set engine=mocker" in w for w in plan.warnings), plan.warnings


def test_declared_or_real_gpus_are_never_simulated():
    declared = Hosts(backend="local", hosts=[HostEntry(name="here", address="127.0.0.1")], node=NodeSpec(gpus=8))
    assert simulated_gpus(load_recipe("mocker-agg"), concrete_nodes(declared), LOCAL_TRAITS) == 0
    assert not any("simulated" in warning for warning in local_plan("mocker-agg", hosts=declared).warnings)


def test_a_gpu_whose_own_hca_is_down_is_warned_of_with_the_hcas_it_gets():
    plan = plan_of(
        "gpt-oss-120b-disagg", "dgx-h100-two-node.yaml", "decode.tensor_parallel=8", "decode.expert_parallel=8"
    )
    fallbacks = [warning for warning in plan.warnings if "is down" in warning]
    assert fallbacks == [
        "gpu02 GPU 3: its own HCA mlx5_5 is down; its rank uses mlx5_0, mlx5_3, mlx5_4, mlx5_6, mlx5_9, mlx5_10, "
        "mlx5_11 instead"
    ]
    gpu01 = next(node for node in concrete_nodes_of("dgx-h100-two-node.yaml") if node.name == "gpu01")
    assert nic_fallbacks(gpu01, list(range(8))) == []


def concrete_nodes_of(hosts: str):
    return concrete_nodes(load_hosts(HOSTS / hosts))


def download_warnings(recipe: str, hosts: str, cache: str | None) -> list[str]:
    loaded = load_hosts(HOSTS / hosts).model_copy(update={"model_cache": cache})
    plan = make_plan(
        load_recipe(recipe), loaded, traits_for(loaded.backend), run_name="r", run_dir="/runs/r", python="python3"
    )
    return [warning for warning in plan.warnings if warning.startswith("model_cache:")]


def test_a_hub_model_without_a_model_cache_is_said_to_download_on_each_node():
    (said,) = download_warnings("gpt-oss-120b-disagg", "ssh-two-hosts.yaml", None)
    assert "each of the deployment's 2 nodes downloads it from the hub (openai/gpt-oss-120b)" in said
    assert download_warnings("gpt-oss-120b-disagg", "ssh-two-hosts.yaml", "/shared/models") == []
    assert download_warnings("mocker-disagg", "ssh-two-hosts.yaml", None) == []  # the tiny model ships with us


def test_tensor_parallel_changed_alone_says_to_set_expert_parallel_too():
    with pytest.raises(UserError) as caught:
        plan_of("gpt-oss-120b-disagg", "two-node-8gpu.yaml", "decode.tensor_parallel=2")
    assert str(caught.value) == (
        "decode.expert_parallel: 4 is larger than the worker's 2 GPUs (tensor_parallel 2 x pipeline_parallel 1), "
        "over which experts are split evenly: set decode.expert_parallel too, to a divisor of 2, "
        "e.g. --set decode.expert_parallel=2"
    )
