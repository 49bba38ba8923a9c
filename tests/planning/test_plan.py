"""The planner: placements, ports, env and command lines for the built-in recipes."""

from __future__ import annotations

import json
import socket
from collections import Counter

import pytest

from slurmserve.backends import LOCAL_TRAITS
from slurmserve.config.recipe import builtin_recipe_names, load_recipe
from slurmserve.errors import UserError
from slurmserve.hardware.discovery import local_hosts
from slurmserve.planning.planner import make_plan
from slurmserve.planning.ports import PORT_RANGE_END

from ..conftest import plan_of


def workers(plan, role=None):
    return [p for p in plan.processes if p.is_worker and (role is None or p.role == role)]


def test_gpt_oss_disagg_on_one_node_follows_dynamos_layout():
    plan = plan_of("gpt-oss-120b-disagg", "single-node-8gpu.yaml")
    prefill, decode = plan.process("prefill-0"), plan.process("decode-0")
    assert prefill.nodes == decode.nodes == ["gpu01"]
    assert prefill.gpus == [0, 1, 2, 3] and decode.gpus == [4, 5, 6, 7]
    assert prefill.env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3" and decode.env["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
    for worker, mode, tokens, batch in ((prefill, "prefill", "20000", "32"), (decode, "decode", "16384", "128")):
        command = worker.command
        # Under Slurm each worker is one MPI world: a task per GPU behind TRT-LLM's launcher.
        assert command[:4] == ["trtllm-llmapi-launch", "/usr/bin/python3", "-m", "dynamo.trtllm"] and worker.tasks == 4
        assert command[command.index("--disaggregation-mode") + 1] == mode
        assert command[command.index("--extra-engine-args") + 1] == f"/runs/test-run/engine/{mode}.yaml"
        assert command[command.index("--max-num-tokens") + 1] == tokens
        assert command[command.index("--max-batch-size") + 1] == batch
        assert command[command.index("--free-gpu-memory-fraction") + 1] == "0.9"
        assert command[command.index("--dyn-reasoning-parser") + 1] == "gpt_oss"
        assert command[command.index("--dyn-tool-call-parser") + 1] == "harmony"
        assert command[command.index("--served-model-name") + 1] == "openai/gpt-oss-120b"
        assert worker.env["TRTLLM_ENABLE_PDL"] == "1"
        assert worker.env["TRT_LLM_DISABLE_LOAD_WEIGHTS_IN_PARALLEL"] == "True"
        assert worker.env["HF_HUB_OFFLINE"] == "1"
        assert (
            "/shared/models/hub/models--openai--gpt-oss-120b/snapshots/b5c939de"
            in command[command.index("--model") + 1]
        )
        assert worker.ports.keys() == {"system", "rpc"} and worker.env["DYN_TCP_RPC_PORT"] == str(worker.ports["rpc"])


def test_gpt_oss_disagg_on_two_nodes_puts_roles_apart_and_points_everyone_at_etcd():
    plan = plan_of("gpt-oss-120b-disagg", "two-node-8gpu.yaml")
    assert plan.process("prefill-0").nodes == ["gpu01"] and plan.process("decode-0").nodes == ["gpu02"]
    etcd = plan.process("etcd")
    etcd_address = next(n.address for n in plan.nodes if n.name == etcd.nodes[0])
    for process in plan.processes:
        if process.role != "etcd":
            assert process.env["ETCD_ENDPOINTS"] == f"http://{etcd_address}:{etcd.ports['client']}"
            assert process.env["DYN_DISCOVERY_BACKEND"] == "etcd"
            assert process.env["ETCD_LEASE_TTL"] == "5"  # a dead worker leaves the frontend's list in seconds
            assert "etcd" in process.after or process.role == "frontend"
    # Each process advertises its own node's control-plane address.
    assert plan.process("decode-0").env["DYN_TCP_RPC_HOST"] == "10.0.0.12"
    assert plan.process("prefill-0").env["DYN_TCP_RPC_HOST"] == "10.0.0.11"


def test_two_replicas_each_on_two_nodes_plan_cleanly():
    plan = plan_of("gpt-oss-120b-disagg", "two-node-8gpu.yaml", "prefill.replicas=2", "decode.replicas=2")
    assert [(p.name, p.nodes, p.gpus) for p in workers(plan)] == [
        ("prefill-0", ["gpu01"], [0, 1, 2, 3]),
        ("prefill-1", ["gpu01"], [4, 5, 6, 7]),
        ("decode-0", ["gpu02"], [0, 1, 2, 3]),
        ("decode-1", ["gpu02"], [4, 5, 6, 7]),
    ]


def test_replicas_spread_over_spare_nodes():
    plan = plan_of("gpt-oss-120b-disagg", "four-node-8gpu.yaml", "prefill.replicas=2", "decode.replicas=2")
    assert Counter(node for p in workers(plan) for node in p.nodes) == Counter({"gpu01": 2, "gpu02": 2})
    plan = plan_of("mocker-agg", "four-node-8gpu.yaml", "agg.replicas=8")
    assert Counter(p.nodes[0] for p in workers(plan)) == Counter({"gpu01": 2, "gpu02": 2, "gpu03": 2, "gpu04": 2})


def test_qwen3_kv_router_layout():
    plan = plan_of("qwen3-32b-disagg", "two-node-8gpu.yaml")
    assert len(workers(plan, "prefill")) == 6 and len(workers(plan, "decode")) == 2
    assert all(len(p.gpus) == 2 for p in workers(plan))
    assert plan.process("frontend").command[plan.process("frontend").command.index("--router-mode") + 1] == "kv"
    assert all("--publish-kv-events" in p.command for p in workers(plan, "prefill"))
    assert not any(p.role == "nats" for p in plan.processes)  # tcp request plane + zmq events: no NATS


def test_nats_only_when_a_plane_needs_it():
    plan = plan_of("mocker-disagg", "two-node-8gpu.yaml", "event_plane=nats")
    nats = plan.process("nats")
    assert all(p.env.get("NATS_SERVER") == f"nats://10.0.0.11:{nats.ports['client']}" for p in workers(plan))
    assert nats.ready_url.endswith("/healthz")


def test_wide_ep_workers_take_whole_nodes_as_one_mpi_world():
    plan = plan_of("deepseek-r1-wide-ep", "four-node-8gpu.yaml")
    prefill, decode = plan.process("prefill-0"), plan.process("decode-0")
    assert prefill.nodes == ["gpu01", "gpu02"] and decode.nodes == ["gpu03", "gpu04"]
    assert prefill.gpus == list(range(8)) and prefill.tasks == 16
    assert prefill.command[0] == "trtllm-llmapi-launch"
    assert plan.engine_files[0].overrides == {
        "tensor_parallel_size": 16,
        "pipeline_parallel_size": 1,
        "moe_expert_parallel_size": 16,
    }


@pytest.mark.parametrize("recipe", ["gpt-oss-120b-disagg", "gpt-oss-120b-vllm-disagg"])
@pytest.mark.parametrize("router", ["round-robin", "kv"])
def test_rehearsal_keeps_placement_ports_and_env(recipe, router):
    sets = [f"frontend.router_mode={router}"]
    real = plan_of(recipe, "two-node-8gpu.yaml", *sets)
    rehearsal = plan_of(recipe, "two-node-8gpu.yaml", *sets, "engine=mocker")
    for a, b in zip(real.processes, rehearsal.processes, strict=True):
        assert (a.name, a.nodes, a.gpus, a.ports, a.after) == (b.name, b.nodes, b.gpus, b.ports, b.after)
        model_env = {"HF_HOME", "HF_HUB_OFFLINE"}
        assert {k: v for k, v in a.env.items() if k not in model_env} == {
            k: v for k, v in b.env.items() if k not in model_env
        }
    assert rehearsal.process("decode-0").command[2] == "dynamo.mocker"
    assert "--disaggregation-mode" in rehearsal.process("decode-0").command


@pytest.mark.parametrize("recipe", builtin_recipe_names())
def test_ports_are_unique_per_node_and_below_the_ephemeral_range(recipe):
    hosts = "four-node-8gpu.yaml"
    plan = plan_of(recipe, hosts)
    used = [(node, port) for p in plan.processes for port in p.ports.values() for node in p.nodes[:1]]
    assert len(used) == len(set(used))
    assert all(port < PORT_RANGE_END for _, port in used)


def test_two_runs_get_different_port_blocks():
    a, b = (
        plan_of("mocker-disagg", "two-node-8gpu.yaml", run_name="a"),
        plan_of("mocker-disagg", "two-node-8gpu.yaml", run_name="b"),
    )
    assert a.port_block != b.port_block
    assert not set(a.process("frontend").ports.values()) & set(b.process("frontend").ports.values())


def test_fixed_frontend_port_is_honoured_and_kept_out_of_the_block():
    plan = plan_of("mocker-disagg", "single-node-8gpu.yaml", "frontend.http_port=8000")
    assert plan.endpoint == "http://10.0.0.11:8000"
    others = [port for p in plan.processes if p.role != "frontend" for port in p.ports.values()]
    assert 8000 not in others


def test_trtllm_worker_on_one_node_outside_slurm_is_one_process():
    plan = plan_of("gpt-oss-120b-disagg", "ssh-two-hosts.yaml")
    assert plan.process("prefill-0").command[:3] == ["/usr/bin/python3", "-m", "dynamo.trtllm"]
    assert plan.process("prefill-0").tasks == 1


def test_local_backend_uses_file_discovery_and_no_etcd():
    plan = make_plan(
        load_recipe("mocker-disagg"), local_hosts(), LOCAL_TRAITS, run_name="r", run_dir="/tmp/r", python="python3"
    )
    assert plan.discovery == "file" and not any(p.role == "etcd" for p in plan.processes)
    assert all(p.env["DYN_FILE_KV"] == "/tmp/r/discovery" for p in plan.processes)
    assert plan.endpoint.startswith("http://127.0.0.1:")


def test_plan_is_deterministic_and_json_round_trips():
    first, second = plan_of("qwen3-32b-disagg", "two-node-8gpu.yaml"), plan_of("qwen3-32b-disagg", "two-node-8gpu.yaml")
    assert first.model_dump_json() == second.model_dump_json()
    data = json.loads(first.model_dump_json())
    assert {"recipe", "backend", "run_name", "nodes", "processes"} <= set(data)
    assert {"name", "role", "replica", "nodes", "gpus", "ports", "env", "command", "after"} <= set(data["processes"][1])


@pytest.mark.parametrize(
    "sets, field",
    [
        (["prefill.tensor_parallel=3"], "prefill.tensor_parallel"),
        (["decode.tensor_parallel=12"], "decode.tensor_parallel"),
        (["prefill.replicas=3", "decode.replicas=3"], "prefill.replicas"),
        (["decode.expert_parallel=8"], "decode.expert_parallel"),
    ],
)
def test_impossible_requests_fail_at_plan_time_naming_the_field(sets, field):
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        plan_of("gpt-oss-120b-disagg", "two-node-8gpu.yaml", *sets)


def test_a_worker_wider_than_the_hosts_names_its_parallel_field_not_only_the_replicas():
    with pytest.raises(UserError) as refused:
        plan_of("gpt-oss-120b-disagg", "single-node-8gpu.yaml", "prefill.tensor_parallel=16")
    said = str(refused.value)
    assert said.startswith("prefill.replicas/prefill.tensor_parallel/decode.replicas/decode.tensor_parallel: "), said
    assert "the recipe needs 20 GPUs" in said


def test_a_plan_that_would_not_read_back_from_plan_json_is_refused_before_anything_starts(monkeypatch):
    from slurmserve import deploy

    from ..conftest import HOSTS

    planned = deploy.plan_for

    def with_infinity(*args, **kwargs):  # a number JSON has no form for: plan.json would say null
        plan = planned(*args, **kwargs)
        return plan.model_copy(update={"global_router_config": {"ttft_max_ms": float("inf")}})

    monkeypatch.setattr(deploy, "plan_for", with_infinity)
    with pytest.raises(UserError, match=r"plan\.global_router_config\.ttft_max_ms: does not read back"):
        deploy.prepare("mocker-agg", str(HOSTS / "local.yaml"))


def test_every_shipped_recipes_plan_reads_back_from_its_json():
    for recipe in builtin_recipe_names():
        plan_of(recipe, "four-node-8gpu.yaml").checked_json()


def test_no_secret_values_in_a_plan(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_planted_secret_value")
    for recipe in builtin_recipe_names():
        assert "hf_planted_secret_value" not in plan_of(recipe, "four-node-8gpu.yaml").model_dump_json()


def test_a_live_run_holding_the_port_block_moves_the_new_run_to_the_next(tmp_path):
    from slurmserve.deploy import load_inputs, plan_for
    from slurmserve.planning.ports import PORT_BLOCKS, default_port_block
    from slurmserve.runs import create_run

    from ..conftest import HOSTS

    inputs = load_inputs("mocker-agg", str(HOSTS / "local.yaml"), [])
    assert plan_for(inputs, "newcomer", avoid_live_runs=True).port_block == default_port_block("newcomer")
    holder = make_plan(
        inputs.recipe,
        inputs.hosts,
        LOCAL_TRAITS,
        run_name="holder",
        run_dir=str(tmp_path / "holder"),
        python="python3",
        port_block=default_port_block("newcomer"),
    )
    create_run(holder)
    moved = plan_for(inputs, "newcomer", avoid_live_runs=True)
    assert moved.port_block == (default_port_block("newcomer") + 1) % PORT_BLOCKS
    assert not set(moved.process("frontend").ports.values()) & {
        p for proc in holder.processes for p in proc.ports.values()
    }


def test_another_program_listening_on_a_port_of_the_block_moves_a_local_run_on():
    """An ephemeral port some other program took inside the run's block (seen in CI: a run's four ports
    held) moves the run to a block where it can listen, rather than stopping its submit."""
    from slurmserve.deploy import load_inputs, plan_for
    from slurmserve.planning.ports import PORT_BLOCKS, default_port_block

    from ..conftest import HOSTS

    inputs = load_inputs("mocker-agg", str(HOSTS / "local.yaml"), [])
    first = plan_for(inputs, "newcomer", avoid_live_runs=True)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", first.process("frontend").ports["http"]))
        listener.listen()
        moved = plan_for(inputs, "newcomer", avoid_live_runs=True)
    assert moved.port_block == (default_port_block("newcomer") + 1) % PORT_BLOCKS
