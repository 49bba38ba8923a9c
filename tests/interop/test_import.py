"""DynamoGraphDeployment -> recipe: Dynamo's published manifests (mirrored under manifests/) import, plan and refuse
what has no plain meaning, exit 2 naming the place in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from slurmserve.config.recipe import Recipe
from slurmserve.errors import UserError
from slurmserve.interop.files import imported_from
from slurmserve.interop.schema import schema_problems, schema_source
from slurmserve.runtime.inputs import load_inputs, plan_for

from ..helpers import slurmserve_in_process

MANIFESTS = Path(__file__).parent / "manifests"
GPT_OSS = MANIFESTS / "gpt-oss-120b-trtllm-disagg.yaml"
TWO_NODES = """backend: slurm
slurm: {partition: gpu}
hosts:
  - {name: gpu01, address: 10.0.0.11}
  - {name: gpu02, address: 10.0.0.12}
node: {gpus: 8, interface: ib0}
model_cache: /shared/models
"""


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def graph_of(path: Path) -> dict:
    return next(doc for doc in documents(path) if doc["kind"] == "DynamoGraphDeployment")


def write_manifest(tmp_path: Path, docs: list[dict]) -> Path:
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


@pytest.mark.parametrize("manifest", sorted(MANIFESTS.glob("*.yaml")), ids=lambda path: path.stem)
def test_each_test_manifest_names_its_source_and_fits_the_shipped_crd_schema(manifest):
    assert "ai-dynamo/dynamo@" in manifest.read_text().splitlines()[1]
    assert schema_problems(graph_of(manifest)) == []
    assert "ai-dynamo/dynamo@2a6da14c8361" in schema_source()


def test_gpt_oss_trtllm_disagg_imports_with_its_engine_configs_and_plans_on_two_nodes(tmp_path):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(TWO_NODES)
    result = slurmserve_in_process("import", str(GPT_OSS), "-o", str(tmp_path / "gpt-oss.yaml"))
    assert result.returncode == 0, result.stderr
    recipe = Recipe.model_validate(yaml.safe_load((tmp_path / "gpt-oss.yaml").read_text()))
    assert (recipe.engine, recipe.mode, recipe.model.repo) == ("trtllm", "disagg", "openai/gpt-oss-120b")
    assert (recipe.prefill.gpus, recipe.decode.gpus) == (1, 4)
    decode_config = yaml.safe_load((tmp_path / "gpt-oss-disagg.decode.yaml").read_text())
    assert decode_config["tensor_parallel_size"] == 4 and decode_config["max_batch_size"] == 1280
    assert "affinity" in result.stderr and "sharedMemory" in result.stderr  # listed, never dropped silently

    plan = plan_for(load_inputs(str(GPT_OSS), str(hosts)), check_flags=False)  # the manifest itself as --recipe
    workers = {p.name: p for p in plan.processes if p.role in ("prefill", "decode")}
    assert {name: (p.nodes, p.gpus) for name, p in workers.items()} == {
        "prefill-0": (["gpu01"], [0]),
        "decode-0": (["gpu02"], [0, 1, 2, 3]),
    }
    assert workers["decode-0"].env["OVERRIDE_QUANT_ALGO"] == "W4A8_MXFP4_MXFP8"
    assert workers["decode-0"].env["HF_TOKEN"] == "${HF_TOKEN}"  # a reference, never a value
    assert "--extra-engine-args" in workers["decode-0"].command
    assert any("affinity" in warning for warning in plan.warnings)


def test_the_imported_manifest_rehearses_on_the_mock_engine(tmp_path):
    plan = plan_for(load_inputs(str(GPT_OSS), None, ["engine=mocker"]), check_flags=False)
    assert [p.module for p in plan.processes if p.role == "decode"] == ["dynamo.mocker"]
    assert json.loads(plan.model_dump_json())["recipe"] == "gpt-oss-disagg"


def test_v1beta1_components_shell_commands_and_multinode_workers_import():
    imported = imported_from(MANIFESTS / "trtllm-disagg-v1beta1.yaml", check_flags=False)
    recipe = imported.recipe
    assert recipe["prefill"]["replicas"] == 2 and recipe["decode"]["tensor_parallel"] == 8
    assert recipe["decode"]["env"]["TRTLLM_ENABLE_PDL"] == "1"  # the shell line's leading assignment
    assert recipe["env"] == {"DYN_LOG": "info"}
    assert set(imported.engine_files) == {"trtllm-disagg.prefill.yaml", "trtllm-disagg.decode.yaml"}
    assert any("tolerations" in w and "requests.cpu" in w for w in imported.warnings)


def test_v1beta1_mocker_imports_with_the_secret_as_a_reference_of_the_chosen_name():
    imported = imported_from(
        MANIFESTS / "mocker-disagg-v1beta1.yaml", {"hf-token-secret": "HUGGING_FACE_HUB_TOKEN"}, False
    )
    assert imported.recipe["engine"] == "mocker" and imported.recipe["mode"] == "disagg"
    assert imported.recipe["prefill"]["env"] == {"HUGGING_FACE_HUB_TOKEN": "${HUGGING_FACE_HUB_TOKEN}"}
    Recipe.model_validate(imported.recipe)


def test_vllm_disagg_with_a_kv_router_imports_its_counts_and_flags(tmp_path):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(TWO_NODES)
    recipe = imported_from(MANIFESTS / "qwen3-32b-vllm-disagg-kv-router.yaml").recipe
    assert recipe["frontend"]["router_mode"] == "kv"
    assert (recipe["prefill"]["replicas"], recipe["decode"]["replicas"]) == (6, 2)
    assert recipe["prefill"]["tensor_parallel"] == recipe["decode"]["tensor_parallel"] == 2
    assert recipe["decode"]["args"]["gpu_memory_utilization"] == "0.90"  # as written
    assert recipe["decode"]["args"]["block_size"] == 64  # a number, which the KV router's block size must equal
    plan = plan_for(load_inputs(str(MANIFESTS / "qwen3-32b-vllm-disagg-kv-router.yaml"), str(hosts)), check_flags=False)
    frontend = plan.process("frontend").command
    assert frontend[frontend.index("--kv-cache-block-size") + 1] == "64"
    assert [p.role for p in plan.processes].count("prefill") == 6


def bad(change, path: Path = GPT_OSS):
    docs = documents(path)
    change(next(doc for doc in docs if doc["kind"] == "DynamoGraphDeployment"))
    return docs


@pytest.mark.parametrize(
    "change, named",
    [
        (
            lambda g: (
                g["spec"]["services"].pop("TrtllmDecodeWorker") and g["spec"]["services"].pop("TrtllmPrefillWorker")
            ),
            "no worker",
        ),
        (
            lambda g: g["spec"]["services"]["TrtllmDecodeWorker"]["resources"]["limits"].update(gpu="2"),
            "spec.services.TrtllmDecodeWorker.resources.limits.gpu is 2",
        ),
        (
            lambda g: g["spec"]["services"]["TrtllmDecodeWorker"].update(componentType="wroker"),
            "spec.services.TrtllmDecodeWorker.componentType: unknown component type 'wroker'",
        ),
        (lambda g: g["spec"]["services"]["Frontend"].update(replicas="one"), "spec.services.Frontend.replicas"),
        (lambda g: g.update(kind="Deployment", apiVersion="apps/v1"), "expected one DynamoGraphDeployment"),
    ],
    ids=["no-workers", "gpus-disagree-with-tp", "unknown-type", "schema", "a-deployment"],
)
def test_bad_manifests_exit_2_naming_the_path(tmp_path, change, named):
    path = write_manifest(tmp_path, bad(change))
    result = slurmserve_in_process("plan", "--recipe", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert named in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_v1beta1_type_is_refused_by_the_schema_naming_the_component(tmp_path):
    path = write_manifest(
        tmp_path,
        bad(lambda g: g["spec"]["components"][1].update(type="wroker"), MANIFESTS / "trtllm-disagg-v1beta1.yaml"),
    )
    with pytest.raises(UserError, match=r"spec\.components\[1\]\.type"):
        imported_from(path)


@pytest.mark.parametrize(
    "script, words",
    [
        ("python3 -m dynamo.trtllm --a 1 && echo done", "&&"),
        ("python3 -m dynamo.trtllm --a 1 | tee log", "|"),
        ("python3 -m dynamo.trtllm --model-path $(cat /m)", "command substitution"),
        ("cd /x\npython3 -m dynamo.trtllm", "several commands"),
        ("python3 -m dynamo.trtllm --model-path ${NOWHERE}", "${NOWHERE} is not set"),
    ],
)
def test_shell_commands_that_are_more_than_one_plain_command_are_refused_naming_the_service(tmp_path, script, words):
    def shell(graph):
        graph["spec"]["services"]["TrtllmPrefillWorker"]["extraPodSpec"]["mainContainer"]["args"] = [script]

    with pytest.raises(UserError, match="TrtllmPrefillWorker") as caught:
        imported_from(write_manifest(tmp_path, bad(shell)))
    assert words in str(caught.value)


def test_flags_the_pinned_dynamo_rejects_are_left_out_and_reported_with_the_parsers_words(tmp_path):
    def drifted(graph):
        services = graph["spec"]["services"]
        frontend = services["Frontend"]["extraPodSpec"]["mainContainer"]
        frontend["args"] = [frontend["args"][0] + " --router-reset-states"]
        prefill = services["TrtllmPrefillWorker"]["extraPodSpec"]["mainContainer"]
        prefill["args"] = [prefill["args"][0].rstrip() + " --is-prefill-worker\n"]

    path = write_manifest(tmp_path, bad(drifted))
    result = slurmserve_in_process("plan", "--recipe", str(path), "--set", "engine=mocker")
    assert result.returncode == 0, result.stderr
    message = " ".join(result.stderr.split())
    assert "spec.services.Frontend: Dynamo 1.6.1's dynamo.frontend rejects --router-reset-states" in message
    assert "left out of the recipe's frontend.extra_args" in message
    assert "spec.services.TrtllmPrefillWorker: Dynamo 1.6.1's dynamo.trtllm rejects --is-prefill-worker" in message
    recipe = imported_from(path).recipe
    assert "extra_args" not in recipe["frontend"] and "args" not in recipe["prefill"]


def test_the_manifests_image_runs_where_the_hosts_file_asks_for_the_recipes_container(tmp_path):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(TWO_NODES.replace("slurm: {partition: gpu}", "slurm: {partition: gpu, container_image: recipe}"))
    plan = plan_for(load_inputs(str(GPT_OSS), str(hosts)), check_flags=False)
    assert plan.container is not None and plan.container.kind == "pyxis"
    assert plan.container.source == "nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:1.3.0"
    result = slurmserve_in_process("plan", "--recipe", "mocker-disagg", "--hosts", str(hosts))
    assert result.returncode == 2 and "names no container_image" in " ".join(result.stderr.split())


def test_a_token_written_into_the_manifest_as_a_value_is_imported_as_a_reference(tmp_path):
    def literal(graph):
        graph["spec"]["services"]["TrtllmDecodeWorker"]["extraPodSpec"]["mainContainer"]["env"].append(
            {"name": "HF_TOKEN", "value": "hf_planted_secret_value"}
        )

    imported = imported_from(write_manifest(tmp_path, bad(literal)), check_flags=False)
    assert "hf_planted_secret_value" not in str(imported.recipe)
    assert imported.recipe["decode"]["env"]["HF_TOKEN"] == "${HF_TOKEN}"
    assert any("values of HF_TOKEN are not imported" in warning for warning in imported.warnings)


def test_a_snapshot_in_the_model_cache_keeps_its_revision_and_a_framework_must_match_the_workers(tmp_path):
    snapshot = "/opt/models/hub/models--openai--gpt-oss-120b/snapshots/b5c939de8f754692c1647ca79fbf85e8c1e70f8a"

    def pinned(graph):
        for name in ("TrtllmPrefillWorker", "TrtllmDecodeWorker"):
            env = graph["spec"]["services"][name]["extraPodSpec"]["mainContainer"]["env"]
            next(item for item in env if item["name"] == "MODEL_PATH")["value"] = snapshot

    model = imported_from(write_manifest(tmp_path, bad(pinned)), check_flags=False).recipe["model"]
    assert (model["repo"], model["revision"]) == ("openai/gpt-oss-120b", "b5c939de8f754692c1647ca79fbf85e8c1e70f8a")
    with pytest.raises(UserError, match="spec.backendFramework is vllm, but the workers run trtllm"):
        imported_from(write_manifest(tmp_path, bad(lambda g: g["spec"].update(backendFramework="vllm"))))


def test_import_cli_names_secrets_as_asked_and_writes_over_nothing(tmp_path):
    out = str(tmp_path / "m.yaml")
    manifest = str(MANIFESTS / "mocker-disagg-v1beta1.yaml")
    assert slurmserve_in_process("import", manifest, "-o", out, "--secret", "hf-token-secret=HF_READ").returncode == 0
    assert yaml.safe_load(Path(out).read_text())["decode"]["env"] == {"HF_READ": "${HF_READ}"}
    again = slurmserve_in_process("import", manifest, "-o", out)
    assert again.returncode == 2 and "already exist" in again.stderr
    bad_secret = slurmserve_in_process("import", manifest, "-o", str(tmp_path / "n.yaml"), "--secret", "x=1A")
    assert bad_secret.returncode == 2 and "SECRET=VARIABLE" in bad_secret.stderr
