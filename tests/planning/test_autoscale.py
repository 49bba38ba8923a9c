"""Autoscaling's plan (capacity reserved): every worker up to each role's max placed (GPUs, ports, NICs), those
beyond min standby (not launched, not expected); Dynamo's planner last, its config derived from min/max and
accepted by Dynamo's own PlannerConfig; a max beyond the hosts' GPUs refused naming it."""

from __future__ import annotations

import json

import pytest

from slurmserve.backends import SSH_TRAITS, traits_for
from slurmserve.errors import UserError
from slurmserve.render.scripts import render_scripts

from ..conftest import plan_of

DECODE_1_TO_3 = ("autoscale.decode.min=1", "autoscale.decode.max=3")


def planner_config(plan) -> dict:
    command = plan.process("planner").command
    return json.loads(command[command.index("--config") + 1])


def test_reserved_places_every_worker_up_to_max_and_flags_those_beyond_min_standby():
    plan = plan_of("gpt-oss-120b-disagg", "dgx-h100-two-node.yaml", "decode.replicas=1", *DECODE_1_TO_3)
    workers = {p.name: p for p in plan.processes if p.is_worker}
    assert [(name, p.standby) for name, p in workers.items()] == [
        ("prefill-0", False),
        ("decode-0", False),
        ("decode-1", True),
        ("decode-2", True),
    ]
    gpus = [(p.host, gpu) for p in workers.values() for gpu in p.gpus]
    assert len(gpus) == len(set(gpus)) == 16  # each its own GPUs, standby ones too
    ports = [(p.host, port) for p in workers.values() for port in p.ports.values()]
    assert len(ports) == len(set(ports))
    assert all(p.env.get("UCX_NET_DEVICES") for p in workers.values())  # their GPUs' NICs, as for any worker
    assert plan.workers_expected == {"prefill": 1, "decode": 1}
    assert plan.autoscale is not None and plan.autoscale.capacity == "reserved"
    assert {role: (s.min, s.max) for role, s in plan.autoscale.roles.items()} == {"prefill": (1, 1), "decode": (1, 3)}


def test_standby_workers_are_not_launched_and_the_planner_starts_after_the_serving_workers():
    plan = plan_of("mocker-disagg-autoscale", "local.yaml")
    launched = [p.name for stage in plan.stages() for p in stage]
    assert "decode-1" not in launched and "decode-2" not in launched
    assert launched[-1] == "planner"
    assert set(plan.process("planner").after) == {"prefill-0", "decode-0", "frontend"}
    assert set(plan.process("frontend").after) == {"prefill-0", "decode-0"}
    assert plan.discovery == "etcd"  # the planner's decisions live in etcd


def test_the_planner_config_derives_its_bounds_from_min_and_max():
    config = planner_config(plan_of("mocker-disagg-autoscale", "local.yaml"))
    assert config["environment"] == "virtual" and config["optimization_target"] == "load"
    # Only decode autoscales: the planner scales decode alone, its budget that of decode's max.
    assert config["mode"] == "decode" and config["decode_min_endpoint"] == 1
    assert config["decode_engine_num_gpu"] == 2 and config["max_gpu_budget"] == 6
    assert config["model_name"] == "tiny-mock"
    # Its diagnostics reports go into the run directory, not ./planner_reports of wherever it was started.
    assert config["report_output_dir"] == "/runs/test-run/logs/planner-reports"
    assert config["control_api_port"] == config["live_dashboard_port"] == 0
    both = planner_config(
        plan_of("mocker-disagg-autoscale", "two-node-8gpu.yaml", "autoscale.prefill.min=1", "autoscale.prefill.max=2")
    )
    # At most the total that keeps each role within its max whichever takes it: prefill at its min leaves
    # decode up to its max (2 + 6), decode at its min prefill up to its (4 + 2).
    assert both["mode"] == "disagg" and both["max_gpu_budget"] == 6
    assert both["prefill_min_endpoint"] == both["decode_min_endpoint"] == 1


def test_the_recipes_planner_options_override_the_defaults():
    plan = plan_of("mocker-disagg-autoscale", "local.yaml", "autoscale.planner.decode_scale_up_kv_rate=50")
    assert planner_config(plan)["decode_scale_up_kv_rate"] == 50


def test_a_max_beyond_the_hosts_gpus_is_refused_naming_it():
    with pytest.raises(UserError, match=r"^autoscale.decode.max: capacity reserved holds GPUs for every worker"):
        plan_of("gpt-oss-120b-disagg", "single-node-8gpu.yaml", "decode.replicas=1", *DECODE_1_TO_3)


def test_real_engines_publish_the_forward_pass_metrics_the_planner_reads():
    trtllm = plan_of("gpt-oss-120b-disagg", "two-node-8gpu.yaml", "decode.replicas=1", *DECODE_1_TO_3)
    assert all("--publish-metrics" in p.command for p in trtllm.processes if p.is_worker)
    vllm = plan_of("gpt-oss-120b-vllm-disagg", "two-node-8gpu.yaml", "decode.replicas=1", *DECODE_1_TO_3)
    for worker in (p for p in vllm.processes if p.is_worker):
        assert worker.env["DYN_FORWARDPASS_METRIC_PORT"] == str(worker.ports["fpm"])


def test_standby_workers_can_be_started_by_name_over_ssh_but_no_stage_starts_them():
    plan = plan_of("mocker-disagg-autoscale", "ssh-two-hosts.yaml")
    scripts = render_scripts(plan, SSH_TRAITS)
    standby = [p for p in plan.processes if p.standby]
    for process in standby:
        host_script = scripts[f"launch-{process.host}.sh"]
        assert f"start {process.name} logs/{process.name}.log" in host_script
        assert process.name not in scripts["driver.sh"]


def test_the_local_launch_script_knows_standby_workers_but_starts_none():
    plan = plan_of("mocker-disagg-autoscale", "local.yaml")
    script = next(iter(render_scripts(plan, traits_for("local")).values()))
    assert "start decode-2 logs/decode-2.log" in script
    assert "\nlaunch decode-2\n" not in script and "\nlaunch decode-0\n" in script
