"""GPU<->NIC affinity per rank, inactive HCAs never chosen, and switch-aware node choice."""

from __future__ import annotations

import re
import subprocess

import pytest

from slurmserve.backends import SLURM_TRAITS
from slurmserve.render.scripts import render_script
from slurmserve.resources import resource_dir

from ..conftest import plan_of

HCA_OF_GPU = ["mlx5_0", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_9", "mlx5_10", "mlx5_11"]
DOWN_ON_GPU02 = "mlx5_5"


def expected_hcas(node: str, gpu: int) -> list[str]:
    if node == "gpu02" and HCA_OF_GPU[gpu] == DOWN_ON_GPU02:  # its own HCA is down: every active one
        return [hca for hca in HCA_OF_GPU if hca != DOWN_ON_GPU02]
    return [HCA_OF_GPU[gpu]]


def assert_ranks_get_their_own_hcas(process) -> None:
    ranks = [(node, gpu) for node in process.nodes for gpu in process.gpus]
    assert len(process.rank_env) == len(ranks) == process.tasks
    for (node, gpu), env in zip(ranks, process.rank_env):
        hcas = expected_hcas(node, gpu)
        assert env["UCX_NET_DEVICES"] == ",".join(f"{hca}:1" for hca in hcas)
        assert env["NCCL_IB_HCA"] == "=" + ",".join(hcas)


@pytest.mark.parametrize("tp", [1, 4, 8])
def test_every_rank_gets_exactly_the_active_hcas_of_its_gpu(tp):
    plan = plan_of(
        "gpt-oss-120b-disagg",
        "dgx-h100-two-node.yaml",
        f"prefill.tensor_parallel={tp}",
        f"prefill.expert_parallel={tp}",
        f"decode.tensor_parallel={tp}",
        f"decode.expert_parallel={tp}",
    )
    workers = [p for p in plan.processes if p.is_worker]
    assert {node for p in workers for node in p.nodes} == {"gpu01", "gpu02"}
    for worker in workers:
        assert_ranks_get_their_own_hcas(worker)
        # The process-wide value (single-process launches) is the union of its GPUs' HCAs.
        union = {hca for node in worker.nodes for gpu in worker.gpus for hca in expected_hcas(node, gpu)}
        assert set(re.findall(r"(mlx5_\d+):1", worker.env["UCX_NET_DEVICES"])) == union


def test_a_sixteen_gpu_worker_across_two_nodes():
    plan = plan_of(
        "deepseek-r1-wide-ep",
        "dgx-h100-two-node.yaml",
        "mode=agg",
        "prefill=null",
        "decode=null",
        "agg.tensor_parallel=16",
        "agg.expert_parallel=16",
        "agg.engine_config=deepseek-r1/decode.yaml",
    )
    worker = plan.process("agg-0")
    assert worker.nodes == ["gpu01", "gpu02"] and worker.tasks == 16
    assert_ranks_get_their_own_hcas(worker)
    assert all(DOWN_ON_GPU02 not in env["UCX_NET_DEVICES"] for env in worker.rank_env[8:])


def test_inactive_hcas_are_never_chosen_anywhere():
    for recipe in ("gpt-oss-120b-disagg", "qwen3-32b-disagg", "gpt-oss-120b-agg"):
        plan = plan_of(recipe, "dgx-h100-two-node.yaml")
        for worker in (p for p in plan.processes if p.is_worker and "gpu02" in p.nodes):
            assert DOWN_ON_GPU02 not in worker.env.get("UCX_NET_DEVICES", "")
            assert all(DOWN_ON_GPU02 not in env["UCX_NET_DEVICES"] for env in worker.rank_env)


def test_the_recipe_can_override_the_transport_settings():
    plan = plan_of(
        "gpt-oss-120b-disagg",
        "dgx-h100-two-node.yaml",
        "env.UCX_TLS=rc,cuda_copy",
        "decode.env.UCX_NET_DEVICES=mlx5_0:1",
    )
    assert plan.process("decode-0").env["UCX_TLS"] == "rc,cuda_copy"
    assert plan.process("decode-0").env["UCX_NET_DEVICES"] == "mlx5_0:1"


def test_each_task_of_a_step_exports_its_own_rank_env():
    """Run the sbatch script's task wrapper in bash, as srun would for each rank."""
    plan = plan_of("gpt-oss-120b-disagg", "dgx-h100-two-node.yaml")
    script = render_script(plan, SLURM_TRAITS)
    start = str(resource_dir("sbatch_templates") / "task-start.sh")
    decode = plan.process("decode-0")
    rank_ucx = ";".join(env["UCX_NET_DEVICES"] for env in decode.rank_env)
    rank_hca = ";".join(env["NCCL_IB_HCA"] for env in decode.rank_env)
    assert f"SLURMSERVE_RANK_UCX={rank_ucx}" in script.replace("'", "")
    for rank, env in enumerate(decode.rank_env):
        result = subprocess.run(
            ["bash", start, "/dev/null", "bash", "-c", 'echo "$UCX_NET_DEVICES $NCCL_IB_HCA"'],
            env={
                "PATH": "/usr/bin:/bin",
                "SLURM_PROCID": str(rank),
                "SLURMSERVE_RANK_UCX": rank_ucx,
                "SLURMSERVE_RANK_HCA": rank_hca,
            },
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout.split() == [env["UCX_NET_DEVICES"], env["NCCL_IB_HCA"]]


def test_one_prefill_and_one_decode_stay_inside_one_leaf(tmp_path):
    from slurmserve.config.hosts import load_hosts
    from slurmserve.config.recipe import load_recipe
    from slurmserve.planning.planner import make_plan

    hosts_file = tmp_path / "hosts.yaml"  # the first node listed sits alone under leaf2
    hosts_file.write_text(
        "backend: slurm\nhosts: [{name: node3, address: 10.0.0.13}, {name: node1, address: 10.0.0.11}, {name: node2, address: 10.0.0.12}]\n"
        "node: {gpus: 8}\ntopology: {switches: [{name: leaf1, nodes: [node1, node2]}, {name: leaf2, nodes: [node3]}]}\n"
    )
    plan = make_plan(
        load_recipe("gpt-oss-120b-disagg"),
        load_hosts(hosts_file),
        SLURM_TRAITS,
        run_name="r",
        run_dir="/runs/r",
        python="python3",
    )
    assert {n.name for n in plan.nodes} == {"node1", "node2"} and {n.switch for n in plan.nodes} == {"leaf1"}
    assert "#SBATCH --switches=1" in render_script(plan, SLURM_TRAITS)
    three_nodes = make_plan(
        load_recipe("gpt-oss-120b-disagg", ["prefill.replicas=3"]),
        load_hosts(hosts_file),
        SLURM_TRAITS,
        run_name="r",
        run_dir="/runs/r",
        python="python3",
    )
    assert "--switches" not in render_script(three_nodes, SLURM_TRAITS)  # it cannot fit one leaf: no impossible request
