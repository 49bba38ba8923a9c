"""Rendering: every built-in recipe on every example hosts file gives valid bash; golden sbatch text."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from slurmserve.backends import SLURM_TRAITS, SSH_TRAITS, traits_for
from slurmserve.config.hosts import concrete_nodes, load_hosts
from slurmserve.config.recipe import builtin_recipe_names, load_recipe
from slurmserve.errors import UserError
from slurmserve.planning.planner import make_plan
from slurmserve.planning.processes.scaling import reserved_groups
from slurmserve.render.files import rendered_files, write_files
from slurmserve.render.scripts import env_command, render_script, render_scripts, secret_assignments

from ..conftest import HOSTS, plan_of
from ..helpers import SHELLCHECK

GOLDEN = Path(__file__).parent.parent / "golden"
UPDATE_GOLDEN = os.environ.get("SLURMSERVE_UPDATE_GOLDEN") == "1"
EXAMPLE_HOSTS = sorted(path.name for path in HOSTS.glob("*.yaml"))


def fits(recipe: str, hosts: str) -> bool:
    """Recipes whose workers need more GPUs than a hosts file has (an autoscaled role's max of them: reserved)
    are expected to fail there."""
    demand = sum(group.spec.replicas * group.spec.gpus for group in reserved_groups(load_recipe(recipe)))
    return demand <= sum(node.gpus for node in concrete_nodes(load_hosts(HOSTS / hosts)))


@pytest.mark.parametrize("hosts", EXAMPLE_HOSTS)
@pytest.mark.parametrize("recipe", builtin_recipe_names())
def test_every_recipe_renders_valid_bash(recipe, hosts, tmp_path):
    if not fits(recipe, hosts):
        with pytest.raises(UserError, match="replicas"):
            plan_of(recipe, hosts)
        return
    scripts = []
    plan = plan_of(recipe, hosts)
    for name, text in render_scripts(plan, traits_for(plan.backend)).items():
        script = tmp_path / name
        script.write_text(text)
        subprocess.run(["bash", "-n", str(script)], check=True)
        scripts.append(str(script))
    if SHELLCHECK:  # all of them in one call: its findings name the file
        result = subprocess.run(
            [SHELLCHECK, "--shell=bash", "--severity=warning", *scripts], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    "recipe, hosts",
    [
        ("gpt-oss-120b-disagg", "single-node-8gpu.yaml"),
        ("gpt-oss-120b-disagg", "two-node-8gpu.yaml"),
        ("deepseek-r1-wide-ep", "four-node-8gpu.yaml"),
        ("gpt-oss-120b-disagg", "pyxis-two-node.yaml"),
        ("gpt-oss-120b-disagg", "oci-two-node.yaml"),
        ("gpt-oss-120b-vllm-disagg", "two-node-8gpu.yaml"),
    ],
)
def test_sbatch_matches_golden_file(recipe, hosts):
    text = render_script(plan_of(recipe, hosts), SLURM_TRAITS)
    golden = GOLDEN / f"{recipe}@{hosts.removesuffix('.yaml')}.sbatch"
    if UPDATE_GOLDEN:
        golden.write_text(text)
    assert text == golden.read_text(), f"rendered sbatch differs from {golden} (SLURMSERVE_UPDATE_GOLDEN=1 rewrites it)"


def test_ssh_render_is_a_driver_plus_one_stage_script_per_host():
    scripts = render_scripts(plan_of("mocker-disagg", "ssh-two-hosts.yaml"), SSH_TRAITS)
    assert set(scripts) == {"driver.sh", "launch-gpu01.sh", "launch-gpu02.sh"}
    driver = scripts["driver.sh"]
    assert "ssh_1() { ssh -o BatchMode=yes -p 22 svc@10.0.0.11" in driver
    assert "ssh_2 'bash /runs/test-run/launch-gpu02.sh 2' &" in driver  # decode-0 lives on gpu02
    assert "start decode-0 logs/decode-0.log env" in scripts["launch-gpu02.sh"]
    host = scripts["launch-gpu01.sh"]
    assert 'DETACH="nohup"' in host and 'setsid ${DETACH:-} bash -c "$RECORD_SELF"' in host and "decode-0" not in host


def test_sbatch_pins_steps_to_planned_nodes_and_gpus():
    text = render_script(plan_of("deepseek-r1-wide-ep", "four-node-8gpu.yaml"), SLURM_TRAITS)
    assert "#SBATCH --nodelist=gpu01,gpu02,gpu03,gpu04" in text
    assert "#SBATCH --account=llm-serving" in text
    assert "--nodes=2 --ntasks=16 --nodelist=gpu01,gpu02" in text
    assert "--mpi=pmix --ntasks-per-node=8" in text
    assert "--gres=gpu:8" in text and "--gpus-per-node" not in text  # every GPU of the node; CUDA_VISIBLE_DEVICES picks
    assert not re.search(r"^\s*sleep \d", text, re.MULTILINE)  # readiness by probes, never fixed sleeps


def test_env_is_explicit_on_every_command_line():
    plan = plan_of("deepseek-r1-wide-ep", "four-node-8gpu.yaml")
    line = env_command(plan.process("decode-0"))
    assert line.startswith("env -u NATS_SERVER -u DYN_FILE_KV ")
    assert "ETCD_ENDPOINTS=http://10.0.0.11:" in line and "TRTLLM_ENABLE_PDL=1" in line
    assert "trtllm-llmapi-launch /usr/bin/python3 -m dynamo.trtllm" in line


def test_secret_references_stay_references_and_out_of_argv():
    plan = plan_of("mocker-agg", "local.yaml")
    worker = plan.process("agg-0").model_copy(update={"env": {"HF_TOKEN": "${HF_TOKEN}", "X": "a b"}})
    assert env_command(worker).split(" -m ")[0].endswith("X='a b' /usr/bin/python3")
    assert "HF_TOKEN" not in env_command(worker)
    assert secret_assignments(worker) == 'HF_TOKEN="${HF_TOKEN-}" '  # unset in the launching shell: empty


def test_in_a_container_dynamo_runs_on_the_images_python_and_helpers_on_the_nodes():
    plan = plan_of("gpt-oss-120b-disagg", "pyxis-two-node.yaml")
    steps = render_script(plan, SLURM_TRAITS).split("step() {")[1].split("\n}")[0]
    decode = steps.split("decode-0)")[1].split(";;")[0]
    # The leftovers (slurmserve's Python) on the node first, then the task in the image, mounts and all.
    prepare, task = decode.split("--prepare &&")
    assert "--container" not in prepare and 'SLURMSERVE_PYTHON="$PYTHON"' in prepare
    assert (
        "'--container-image=nvcr.io#nvidia/ai-dynamo/tensorrtllm-runtime:0.6.1' "
        "--container-mounts=/runs/test-run:/runs/test-run,/shared/models:/shared/models" in task
    )
    assert "trtllm-llmapi-launch python3 -m dynamo.trtllm" in task and "SLURMSERVE_PYTHON" not in task
    etcd = steps.split("etcd)")[1].split(";;")[0]
    assert "--container" not in etcd  # the control plane runs from the venv, on the node


def test_an_oci_bundle_becomes_the_runs_own_bundle_with_the_image_mounted(tmp_path):
    """Slurm runs BUNDLE/rootfs whatever config.json says: the run's bundle has an empty root of its own,
    and the image's entries (a merged-/usr link followed within the image) come in as mounts."""
    bundle = tmp_path / "bundle"
    for folder in ("rootfs/usr/bin", "rootfs/etc", "rootfs/tmp", "rootfs/proc"):
        (bundle / folder).mkdir(parents=True)
    (bundle / "rootfs" / "bin").symlink_to("usr/bin")
    (bundle / "rootfs" / "lib64").symlink_to("/usr/lib64")  # absolute: the image's /usr/lib64
    image = {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": True},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp", "type": "tmpfs"},
        ],
    }
    (bundle / "config.json").write_text(json.dumps(image))
    hosts = load_hosts(HOSTS / "oci-two-node.yaml").model_copy(deep=True)
    hosts.slurm.container_bundle = str(bundle)
    hosts.slurm.container_mounts = ["/scratch:/scratch:ro"]
    plan = make_plan(
        load_recipe("mocker-disagg"), hosts, SLURM_TRAITS, run_name="c", run_dir="/runs/c", python="/venv/bin/python"
    )
    files = rendered_files(plan, SLURM_TRAITS)
    config = json.loads(files["oci/config.json"])
    assert config["root"] == {"path": "rootfs", "readonly": True}
    rootfs = str(bundle / "rootfs")

    def bind(source, target, mode="rw"):
        return {"destination": target, "type": "bind", "source": source, "options": ["rbind", mode]}

    assert config["mounts"] == [
        bind(f"{rootfs}/usr/bin", "/bin"),
        bind(f"{rootfs}/etc", "/etc"),
        bind(f"{rootfs}/usr/lib64", "/lib64"),
        bind(f"{rootfs}/usr", "/usr"),
        *image["mounts"],  # the image's own: /proc and /tmp are not bound from the image
        bind("/runs/c", "/runs/c"),
        bind("/shared/models", "/shared/models"),
        bind("/scratch", "/scratch", "ro"),
    ]
    # The image's root is read-only: so are its entries, once the runtime has mounted everything.
    assert config["linux"]["readonlyPaths"] == ["/bin", "/etc", "/lib64", "/usr"]
    sbatch = files["slurmserve.sbatch"]
    assert "--container=/runs/c/oci" in sbatch and 'mkdir -p "$RUN_DIR/oci/rootfs"' in sbatch
    assert plan.process("decode-0").command[:3] == ["/opt/dynamo/bin/python3", "-m", "dynamo.mocker"]
    (bundle / "config.json").unlink()
    with pytest.raises(UserError, match="slurm.container_bundle .*: not an OCI bundle"):
        rendered_files(plan, SLURM_TRAITS)


def test_oci_containers_run_a_trtllm_worker_as_one_process_and_refuse_one_wider_than_a_node():
    plan = plan_of("gpt-oss-120b-disagg", "oci-two-node.yaml")
    decode = plan.process("decode-0")
    assert decode.tasks == 1 and decode.command[0] == "/opt/dynamo/bin/python3"  # it spawns its own ranks
    sbatch = render_script(plan, SLURM_TRAITS)
    assert 'SLURMSERVE_GPU_GRANTS="$RUN_DIR/preflight"' in sbatch and '--save-gpus "$RUN_DIR/preflight"' in sbatch
    with pytest.raises(UserError, match="slurm.container_bundle: worker agg-0 spans 2 nodes"):
        plan_of("gpt-oss-120b-agg", "oci-two-node.yaml", "agg.tensor_parallel=16", "agg.expert_parallel=16")


def test_engine_yaml_gets_the_recipes_parallelism():
    files = rendered_files(
        plan_of("gpt-oss-120b-disagg", "two-node-8gpu.yaml", "decode.tensor_parallel=8", "decode.expert_parallel=8"),
        SLURM_TRAITS,
    )
    decode = yaml.safe_load(files["engine/decode.yaml"])
    assert decode["tensor_parallel_size"] == 8 and decode["moe_expert_parallel_size"] == 8
    assert decode["cache_transceiver_config"]["backend"] == "UCX"
    prefill = yaml.safe_load(files["engine/prefill.yaml"])
    assert prefill["tensor_parallel_size"] == 4 and prefill["enable_chunked_prefill"] is True


def test_writing_never_overwrites_a_users_file(tmp_path):
    (tmp_path / "plan.json").write_text("mine")
    with pytest.raises(UserError, match="would overwrite"):
        write_files({"plan.json": "{}", "launch.sh": ""}, tmp_path)
    assert (tmp_path / "plan.json").read_text() == "mine" and not (tmp_path / "launch.sh").exists()


def test_an_elastic_worker_has_a_job_script_of_its_own_that_starts_its_step_in_place(tmp_path):
    """Its job asks for its node and its own GPUs only, and runs the deployment's script's `--restart NAME`:
    the same step (node, ports, env) as a reserved worker, its GPUs within its own job."""
    plan = plan_of("mocker-disagg-autoscale", "two-node-8gpu.yaml", "autoscale.capacity=elastic")
    scripts = render_scripts(plan, SLURM_TRAITS)
    assert sorted(scripts) == ["elastic-decode-1.sbatch", "elastic-decode-2.sbatch", "slurmserve.sbatch"]
    job = scripts["elastic-decode-1.sbatch"]
    node = plan.process("decode-1").host
    assert f"#SBATCH --nodelist={node}\n#SBATCH --gres=gpu:2\n" in job
    assert f"#SBATCH --job-name=slurmserve-{plan.run_name}+decode-1\n" in job
    assert job.rstrip().endswith(f"exec bash {plan.run_dir}/slurmserve.sbatch --restart decode-1")
    assert "#SBATCH --gres=gpu:2\n" in scripts["slurmserve.sbatch"]  # the deployment's job: its own workers'
    step = scripts["slurmserve.sbatch"].split("    decode-1)\n")[1].split(";;")[0]
    assert "--gres=gpu:2" in step and "SLURMSERVE_GPUS=0,1" in step
    folder = tmp_path / "scripts"
    folder.mkdir()
    for name, text in scripts.items():
        (folder / name).write_text(text)
    if SHELLCHECK:
        checked = subprocess.run(
            [SHELLCHECK, "--shell=bash", "--severity=warning", *map(str, folder.iterdir())],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stdout
