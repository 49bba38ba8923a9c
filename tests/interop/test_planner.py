"""`autoscale:` <-> a DynamoGraphDeployment's planner service (slurmserve.interop.planner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from slurmserve.config.recipe import load_recipe
from slurmserve.errors import UserError
from slurmserve.interop.exporter import export_recipe
from slurmserve.interop.files import imported_from

RECIPE = "mocker-disagg-autoscale"


def exported(api: str = "v1alpha1") -> tuple[dict, dict]:
    """(the ConfigMap's data, the graph) of the autoscaled recipe's export."""
    config_map, graph = export_recipe(load_recipe(RECIPE), api).documents
    return config_map["data"], graph


def test_autoscale_becomes_a_planner_service_on_kubernetes_with_its_bounds_beside_it():
    data, graph = exported()
    planner = graph["spec"]["services"]["planner"]
    assert planner["componentType"] == "planner" and planner["replicas"] == 1
    main = planner["extraPodSpec"]["mainContainer"]
    assert main["command"] == ["python3", "-m", "dynamo.planner"]
    assert main["args"] == ["--config", "/opt/dynamo/configs/planner.json"]
    config = json.loads(data["planner.json"])
    assert config["environment"] == "kubernetes" and config["mode"] == "decode"
    assert config["optimization_target"] == "load" and config["decode_min_endpoint"] == 1
    assert json.loads(data["autoscale.json"]) == {"capacity": "reserved", "decode": {"min": 1, "max": 3}}
    assert graph["spec"]["services"]["decode"]["replicas"] == 1  # the graph starts with min


def test_in_v1beta1_the_planner_is_a_component_of_type_planner():
    _, graph = exported("v1beta1")
    (planner,) = [c for c in graph["spec"]["components"] if c["name"] == "planner"]
    assert planner["type"] == "planner"
    assert planner["podTemplate"]["spec"]["containers"][0]["args"][0] == "--config"


def test_the_exported_planner_config_is_one_dynamos_planner_takes():
    planner_config = pytest.importorskip("dynamo.planner.config.planner_config")
    data, _ = exported()
    planner_config.PlannerConfig.model_validate(json.loads(data["planner.json"]))


def manifest_with(tmp_path, data: dict) -> Path:
    config_map, graph = export_recipe(load_recipe(RECIPE)).documents
    config_map["data"] = data
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump_all([config_map, graph]))
    return path


def test_without_slurmserves_bounds_a_roles_max_is_what_the_gpu_budget_leaves_it(tmp_path):
    data, _ = exported()
    config = json.loads(data["planner.json"]) | {"max_gpu_budget": 10}
    imported = imported_from(manifest_with(tmp_path, {"planner.json": json.dumps(config)}), check_flags=False)
    # prefill keeps 1 worker of 2 GPUs; decode workers of 2 GPUs share the other 8.
    assert imported.recipe["autoscale"]["decode"] == {"min": 1, "max": 4}
    assert "max_gpu_budget" not in imported.recipe["autoscale"]["planner"]


def test_an_sla_planner_is_refused_naming_where_and_why(tmp_path):
    data, _ = exported()
    config = json.loads(data["planner.json"]) | {"optimization_target": "sla"}
    with pytest.raises(UserError) as refused:
        imported_from(manifest_with(tmp_path, {"planner.json": json.dumps(config)}), check_flags=False)
    assert "spec.services.planner: ConfigMap" in str(refused.value) and "performance model" in str(refused.value)
