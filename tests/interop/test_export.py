"""recipe -> DynamoGraphDeployment: valid against the shipped CRD schema in both API versions, and round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slurmserve.config.hosts import load_hosts
from slurmserve.config.recipe import builtin_recipe_names, load_recipe
from slurmserve.errors import UserError
from slurmserve.interop.exporter import export_recipe
from slurmserve.interop.files import imported_from, write_imported
from slurmserve.interop.schema import schema_problems
from slurmserve.render.files import engine_yaml
from slurmserve.runtime.inputs import Inputs, plan_for

from ..helpers import slurmserve_in_process
from .test_import import MANIFESTS, TWO_NODES

# Pools and autoscaling have no DGD export (refused, see below).
ONE_POOL = [name for name in builtin_recipe_names() if not load_recipe(name).pools]
FOUR_NODES = TWO_NODES.replace(
    "hosts:\n", "hosts:\n  - {name: gpu03, address: 10.0.0.13}\n  - {name: gpu04, address: 10.0.0.14}\n"
)


def round_trip(name: str, api: str, folder: Path):
    exported = export_recipe(load_recipe(name), api)
    manifest = folder / "deploy.yaml"
    manifest.write_text(exported.yaml())
    write_imported(imported_from(manifest, check_flags=False), folder / "recipe.yaml")
    return load_recipe(str(folder / "recipe.yaml"))


def planned(recipe, hosts) -> dict:
    """What must be the same: each process's placement, command line and env, and the engine YAMLs' content."""
    plan = plan_for(Inputs(recipe, hosts), run_name="same", check_flags=False)
    return {
        "processes": [
            p.model_dump(include={"name", "role", "nodes", "gpus", "command", "env", "tasks", "standby"})
            for p in plan.processes
        ],
        "autoscale": plan.autoscale,
        "engine": {f.path: yaml.safe_load(engine_yaml(f.source, f.overrides)) for f in plan.engine_files},
    }


@pytest.mark.parametrize("api", ["v1alpha1", "v1beta1"])
@pytest.mark.parametrize("name", ONE_POOL)
def test_every_one_pool_recipe_exports_valid_and_plans_identically_after_import(tmp_path, name, api):
    hosts_file = tmp_path / "hosts.yaml"
    hosts_file.write_text(FOUR_NODES)
    hosts = load_hosts(str(hosts_file))
    exported = export_recipe(load_recipe(name), api)
    assert schema_problems(exported.documents[-1]) == []
    again = round_trip(name, api, tmp_path)
    assert planned(again, hosts) == planned(load_recipe(name), hosts)


def test_pools_have_no_dgd_form_exit_2():
    result = slurmserve_in_process("export", "--recipe", "mocker-two-pools")
    assert result.returncode == 2 and "no DynamoGraphDeployment form" in result.stderr


def test_a_lifetime_has_no_dgd_form_exit_2(tmp_path):
    recipe = tmp_path / "chained.yaml"
    recipe.write_text(
        yaml.safe_dump(
            load_recipe("mocker-agg").model_dump(mode="json", exclude_unset=True) | {"lifetime": {"total": "14d"}}
        )
    )
    result = slurmserve_in_process("export", "--recipe", str(recipe))
    assert (
        result.returncode == 2 and "lifetime (a chain of Slurm jobs) has no DynamoGraphDeployment form" in result.stderr
    )


def test_export_of_an_import_keeps_services_replicas_gpus_args_env_and_secrets(tmp_path):
    write_imported(imported_from(MANIFESTS / "gpt-oss-120b-trtllm-disagg.yaml"), tmp_path / "r.yaml")
    graph = export_recipe(load_recipe(str(tmp_path / "r.yaml")), "v1alpha1").documents[-1]
    services = graph["spec"]["services"]
    assert {
        n: (s.get("subComponentType"), s["replicas"], s.get("resources", {}).get("limits")) for n, s in services.items()
    } == {"frontend": (None, 1, None), "prefill": ("prefill", 1, {"gpu": "1"}), "decode": ("decode", 1, {"gpu": "4"})}
    decode = services["decode"]
    assert decode["envFromSecret"] == "hf-token-secret"
    assert {"name": "OVERRIDE_QUANT_ALGO", "value": "W4A8_MXFP4_MXFP8"} in decode["extraPodSpec"]["mainContainer"][
        "env"
    ]
    args = decode["extraPodSpec"]["mainContainer"]["args"]
    assert args[args.index("--disaggregation-mode") + 1] == "decode"
    assert "HF_TOKEN" not in str(decode["extraPodSpec"]["mainContainer"].get("env"))  # a Secret, never a value


def test_export_cli_writes_a_file_and_refuses_an_unknown_api(tmp_path):
    out = tmp_path / "dgd.yaml"
    assert (
        slurmserve_in_process("export", "--recipe", "mocker-disagg", "--api", "v1beta1", "-o", str(out)).returncode == 0
    )
    assert [doc["kind"] for doc in yaml.safe_load_all(out.read_text())] == ["DynamoGraphDeployment"]
    result = slurmserve_in_process("export", "--recipe", "mocker-disagg", "--api", "v2")
    assert result.returncode == 2 and "v1alpha1, v1beta1" in result.stderr
    with pytest.raises(UserError):
        write_imported(
            imported_from(MANIFESTS / "mocker-disagg-v1beta1.yaml", check_flags=False), out
        )  # never over a file


def test_export_takes_a_manifest_as_its_recipe_too():
    manifest = str(MANIFESTS / "trtllm-disagg-v1beta1.yaml")
    result = slurmserve_in_process("export", "--recipe", manifest, "--api", "v1beta1", "--gpus-per-node", "4")
    assert result.returncode == 0, result.stderr
    components = list(yaml.safe_load_all(result.stdout))[-1]["spec"]["components"]
    assert [c["replicas"] for c in components] == [1, 2, 1]
    decode = components[2]
    assert decode["multinode"] == {"nodeCount": 2}  # TP8 as 2 nodes of 4 GPUs, as the manifest had it
    assert decode["podTemplate"]["spec"]["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "4"}}
