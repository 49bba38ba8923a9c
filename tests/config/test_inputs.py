"""Inputs are data, never code (issue: validation, quoting, run names, secrets, permissions).

The adversarial corpus puts shell payloads into every string field of the recipe, the hosts file and
the command line, through the real CLI. Each is refused (exit 2, the field named, no traceback), or
rendered, and then every rendered script is RUN with stub programs standing in for srun, ssh, setsid,
the engines and Python: the payload's command must not run (its marker file must not appear).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from slurmserve.runs import RunDir
from slurmserve.transport import slurm as slurm_commands
from slurmserve.transport.procfs import start_time

from ..conftest import HOSTS
from ..helpers import slurmserve, slurmserve_in_process

MARKER = Path("/tmp/slurmserve-injected")  # what every payload would create
PAYLOADS = [
    f";touch {MARKER}",
    f"$(touch {MARKER})",
    f"`touch {MARKER}`",
    f"\ntouch {MARKER}",
    f"a b' ; touch {MARKER} ; '",
    f'"; touch {MARKER}; "',
    "..",
    "-rf",
    "ünïcödé",
]
STUBS = ("srun", "ssh", "setsid", "nohup", "etcd", "nats-server", "trtllm-llmapi-launch", "python3")

RECIPE_FIELDS = [
    "name",
    "model.repo",
    "model.revision",
    "model.served_name",
    "model.allow",
    "frontend.extra_args",
    "prefill.extra_args",
    "prefill.args.max_batch_size",
    "prefill.engine_config",
    "env.SAFE_KEY",
    "decode.env.SAFE_KEY",
    "parsers.reasoning",
    "parsers.tool_call",
]
SSH_FIELDS = ["hosts.0.name", "hosts.0.address", "hosts.0.user", "hosts.0.identity_file", "hosts.0.jump", "run_root"]
SLURM_FIELDS = [
    "hosts.0.name",
    "hosts.0.address",
    "hosts.0.interface",
    "node.interface",
    "node.nics.0.name",
    "slurm.partition",
    "slurm.account",
    "slurm.time",
    "slurm.qos",
    "slurm.reservation",
    "slurm.container_image",
    "slurm.container_mounts",
    "slurm.container_bundle",
    "slurm.container_tools.python",
    "slurm.container_tools.llmapi_launch",
    "slurm.extra_sbatch",
    "topology.switches.0.name",
    "model_cache",
    "python",
    "run_root",
]


@pytest.fixture(autouse=True)
def no_marker():
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists(), "a payload ran as a command"


def set_path(data: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    target = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    existing = target[int(leaf)] if isinstance(target, list) else target.get(leaf)
    wrapped = (
        [value]
        if isinstance(existing, list) or leaf in ("allow", "extra_args", "container_mounts", "extra_sbatch")
        else value
    )
    if isinstance(target, list):
        target[int(leaf)] = wrapped
    else:
        target[leaf] = wrapped


# What two stubs leave behind, as the real program would, so that a script's bounded waits for it end at
# once (each would otherwise wait out its bound: seconds per script, minutes over the corpus). Neither
# runs anything it was given.
RECORDS = {
    # setsid [-f] bash -c RECORD_SELF record-self PID_FILE COMMAND...: the started process's PID record.
    "setsid": 'while [ $# -gt 1 ] && [ "$1" != record-self ]; do shift; done\n'
    '[ "$1" != record-self ] || echo "$$ 0" >"$2"\n',
    # python3 -m slurmserve.node.supervisor RUN_DIR: the supervisor's first state, which the job waits for.
    "python3": '[ "$2" != slurmserve.node.supervisor ] || : >"$3/state.json"\n',
}


def stubs(tmp_path: Path) -> dict[str, str]:
    """A PATH where the programs a script starts exit 0 at once, having run nothing."""
    folder = tmp_path / "stubs"
    folder.mkdir(exist_ok=True)
    for name in STUBS:
        stub = folder / name
        stub.write_text(f"#!/bin/sh\n{RECORDS.get(name, '')}exit 0\n")
        stub.chmod(0o755)
    return {"PATH": f"{folder}:/usr/bin:/bin", "HOME": str(tmp_path), "HF_TOKEN": "t"}


def run_every_script(out: Path, tmp_path: Path) -> None:
    """Each rendered script, run as its backend would run it, with stubs for what it starts."""
    env = stubs(tmp_path)
    plan = json.loads((out / "plan.json").read_text())
    runs = []
    for script in sorted(out.glob("*")):
        if script.suffix == ".sbatch" or script.name in ("launch.sh", "driver.sh"):
            runs.append([str(script)])
        elif script.name.startswith("launch-"):
            runs += [[str(script), str(stage)] for stage in range(1, 4)]
    for argv in runs:
        subprocess.run(["bash", *argv], env=env, cwd=out, capture_output=True, timeout=60)
    for process in plan["processes"]:  # every process's own start, as a restart runs it
        for script in out.glob("*"):
            if script.suffix == ".sbatch" or script.name == "launch.sh" or script.name.startswith("launch-"):
                subprocess.run(
                    ["bash", str(script), "--restart", process["name"]],
                    env=env,
                    cwd=out,
                    capture_output=True,
                    timeout=60,
                )


def check(result: subprocess.CompletedProcess, field: str, out: Path, tmp_path: Path) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 2:
        message = " ".join(result.stderr.split())
        assert field.split(".")[-1] in message or field.split(".")[0] in message, message
        return
    assert result.returncode == 0, result.stderr
    run_every_script(out, tmp_path)


def stub_python(tmp_path: Path) -> str:
    stubs(tmp_path)
    return str(tmp_path / "stubs" / "python3")


@pytest.mark.parametrize("field", RECIPE_FIELDS)
@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_recipe_payloads_are_refused_or_inert(tmp_path, field, payload):
    recipe = yaml.safe_load((Path("slurmserve/recipes/gpt-oss-120b-disagg.yaml")).read_text())
    set_path(recipe, field, payload)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    hosts = yaml.safe_load((HOSTS / "two-node-8gpu.yaml").read_text())
    hosts["python"] = stub_python(tmp_path)
    hosts.pop("model_cache")  # no hub to ask
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(hosts))
    out = tmp_path / "out"
    result = slurmserve_in_process(
        "render", "--recipe", str(tmp_path / "r.yaml"), "--hosts", str(tmp_path / "h.yaml"), "--out", str(out)
    )
    check(result, field, out, tmp_path)


@pytest.mark.parametrize("kind, field", [("slurm", f) for f in SLURM_FIELDS] + [("ssh", f) for f in SSH_FIELDS])
@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_hosts_payloads_are_refused_or_inert(tmp_path, field, payload, kind):
    hosts = yaml.safe_load((HOSTS / ("two-node-8gpu.yaml" if kind == "slurm" else "ssh-two-hosts.yaml")).read_text())
    hosts["python"] = stub_python(tmp_path)
    hosts.setdefault("node", {}).setdefault("nics", [{"name": "mlx5_0", "gpus": [0, 1]}])
    hosts["topology"] = {"switches": [{"name": "leaf1", "nodes": [hosts["hosts"][0]["name"]]}]}
    hosts.pop("model_cache", None)
    set_path(hosts, field, payload)
    if field.startswith("slurm.container_tools"):  # used only with a container
        hosts["slurm"]["container_image"] = "nvcr.io#nvidia/ai-dynamo/tensorrtllm-runtime:0.6.1"
    if field == "hosts.0.name":
        hosts["topology"]["switches"][0]["nodes"] = [payload]
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(hosts))
    out = tmp_path / "out"
    result = slurmserve_in_process(
        "render", "--recipe", "mocker-disagg", "--hosts", str(tmp_path / "h.yaml"), "--out", str(out)
    )
    check(result, field, out, tmp_path)


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
@pytest.mark.parametrize(
    "verb",
    [
        ["submit", "--recipe", "mocker-agg", "--dry-run", "--name"],
        ["status"],
        ["logs"],
        ["cancel"],
        ["plan", "--recipe", "mocker-agg", "--set"],
    ],
    ids=["submit-name", "status", "logs", "cancel", "set"],
)
def test_command_line_payloads_are_refused(payload, verb):
    argv = [*verb, payload if verb[-1] != "--set" else f"{payload}=1"]
    result = slurmserve_in_process(*argv)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


def test_a_run_name_cannot_leave_the_runs_folder(tmp_path):
    result = slurmserve("submit", "--recipe", "mocker-agg", "--name", "../../x", "--no-wait")
    assert result.returncode == 2 and "--name '../../x': must be letters" in " ".join(result.stderr.split())
    assert not (tmp_path / "x").exists()


# -- validation of what the issue found accepted ------------------------------------------------------------


def plan_with(tmp_path, *sets: str, hosts: str | None = None) -> subprocess.CompletedProcess:
    return slurmserve_in_process(
        "plan",
        "--recipe",
        "gpt-oss-120b-disagg",
        *[w for s in sets for w in ("--set", s)],
        *(["--hosts", hosts] if hosts else []),
        "--json",
    )


@pytest.mark.parametrize(
    "setting, message",
    [
        ("name=", "name: must be letters"),
        ("model.repo=", "model.repo: must not be empty"),
        ("model.revision=", "model.revision: must be a branch"),
        ("model.served_name=", "model.served_name: must not be empty"),
        ("prefill.expert_parallel=3", "prefill.expert_parallel: 3 does not divide the worker's 4 GPUs"),
        ("prefill.args.max_batch_size=.nan", "prefill.args.max_batch_size"),
        ("prefill.args.max_batch_size=.inf", "prefill.args.max_batch_size"),
        ("mocker.speedup_ratio=.inf", "mocker.speedup_ratio"),
        ("observability.scrape_interval_s=1e308", "observability.scrape_interval_s: must be at most"),
        ("restart.window_s=1e308", "restart.window_s: must be at most"),
        ("restart.max_restarts=5000", "restart.max_restarts: must be at most 100"),
        ("bench.isl=" + "9" * 400, "bench.isl: must be at most"),
        ("prefill.args.max_batch_size=" + "9" * 400, "prefill.args.max_batch_size"),
        ("model.repo=/models/m,/root/.ssh:/keys", "model.repo: must not contain ',' or ':'"),
        ("mocker.model_path=/models/m:/keys", "mocker.model_path: must not contain ',' or ':'"),
        ("model.repo=org/" + "x" * 300, "model.repo: a hub id or builtin:NAME must be at most 128 bytes"),
        ("model.served_name=" + "x" * 300, "model.served_name: each '/'-separated part must be at most"),
    ],
)
def test_nonsense_recipe_values_are_refused(tmp_path, setting, message):
    result = plan_with(tmp_path, setting)
    assert result.returncode == 2 and message in " ".join(result.stderr.split()), result.stderr


@pytest.mark.parametrize(
    "value, shown",
    [
        ("null", "must be text, not nothing"),
        ("[1, 2]", "must be text, not list"),
        ("0123", "must be text: YAML read 83 as a number; write the value in quotes"),
        ("on", "must be text: YAML read True as a boolean"),
        ("1.10", "must be text: YAML read 1.1 as a number"),
    ],
)
def test_env_values_must_be_quoted_text_in_a_recipe(tmp_path, value, shown):
    (tmp_path / "r.yaml").write_text(
        "name: r\nmodel: {repo: builtin:tiny-mock}\nengine: mocker\nmode: agg\nagg: {tensor_parallel: 1}\n"
        f"env: {{X: {value}}}\n"
    )
    result = slurmserve_in_process("plan", "--recipe", str(tmp_path / "r.yaml"))
    assert result.returncode == 2 and f"env.X: {shown}" in " ".join(result.stderr.split()), result.stderr


def test_env_values_from_the_command_line_are_the_text_written():
    result = slurmserve("plan", "--recipe", "mocker-agg", "--set", "env.X=0123", "--set", "env.Y=on", "--json")
    env = json.loads(result.stdout)["processes"][-1]["env"]
    assert env["X"] == "0123" and env["Y"] == "on"


@pytest.mark.parametrize("key", ["", "1X", "A B;C"])
def test_env_keys_must_be_names(tmp_path, key):
    (tmp_path / "r.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "r",
                "model": {"repo": "builtin:tiny-mock"},
                "engine": "mocker",
                "mode": "agg",
                "agg": {"tensor_parallel": 1},
                "env": {key: "v"},
            }
        )
    )
    result = slurmserve_in_process("plan", "--recipe", str(tmp_path / "r.yaml"))
    assert result.returncode == 2 and "env." in result.stderr and "must be a letter or '_'" in result.stderr


@pytest.mark.parametrize(
    "change, message",
    [
        ({"node": {"gpus": 0}}, "node.gpus: must be at least 1"),
        ({"model_cache": ""}, "model_cache: must not be empty"),
        ({"model_cache": "models"}, "model_cache: must be an absolute path"),
        ({"run_root": "runs"}, "run_root: must be an absolute path"),
        ({"run_root": "/runs,/root/.ssh:/keys"}, "run_root: must not contain ',' or ':'"),
        ({"model_cache": "/models:/keys"}, "model_cache: must not contain ',' or ':'"),
        (
            {"node": {"gpus": 8, "nics": [{"name": "mlx5_0", "port": 70000}]}},
            "node.nics[0] (mlx5_0): port: must be at most 65535",
        ),
        (
            {"node": {"gpus": 8, "nics": [{"name": "mlx5_0", "gpus": [10**400]}]}},
            "node.nics[0] (mlx5_0): gpus[0]: must be at most",
        ),
    ],
)
def test_nonsense_hosts_values_are_refused(tmp_path, change, message):
    hosts = yaml.safe_load((HOSTS / "two-node-8gpu.yaml").read_text()) | change
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(hosts))
    result = slurmserve_in_process("plan", "--recipe", "mocker-agg", "--hosts", str(tmp_path / "h.yaml"))
    assert result.returncode == 2 and message in " ".join(result.stderr.split()), result.stderr


def test_a_hosts_file_of_just_backend_local_means_this_machine(tmp_path):
    (tmp_path / "h.yaml").write_text("backend: local\n")
    result = slurmserve("plan", "--recipe", "mocker-agg", "--hosts", str(tmp_path / "h.yaml"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["nodes"][0]["address"] == "127.0.0.1"


def test_a_setting_the_engine_ignores_is_refused_on_the_command_line_and_warned_from_a_recipe():
    refused = slurmserve("plan", "--recipe", "mocker-disagg", "--set", 'decode.extra_args=["--x"]')
    assert refused.returncode == 2 and "--set decode.extra_args: engine mocker does not use" in refused.stderr
    rehearsal = slurmserve("plan", "--recipe", "gpt-oss-120b-disagg", "--set", "engine=mocker")
    assert rehearsal.returncode == 0 and "warning: engine mocker ignores" in rehearsal.stderr
    assert "prefill.args" in rehearsal.stderr


def test_each_node_counts_with_its_own_gpus(tmp_path):
    (tmp_path / "h.yaml").write_text(
        "backend: slurm\nhosts: [{name: a, address: 10.0.0.1, gpus: 4}, "
        "{name: b, address: 10.0.0.2}]\nnode: {gpus: 8}\n"
    )
    result = slurmserve(
        "plan",
        "--recipe",
        "gpt-oss-120b-disagg",
        "--hosts",
        str(tmp_path / "h.yaml"),
        "--json",
        "--set",
        "decode.tensor_parallel=8",
        "--set",
        "decode.expert_parallel=8",
    )
    assert result.returncode == 0, result.stderr
    placed = {p["name"]: (p["nodes"], p["gpus"]) for p in json.loads(result.stdout)["processes"]}
    assert placed["prefill-0"] == (["a"], [0, 1, 2, 3]) and placed["decode-0"] == (["b"], list(range(8)))


# -- no traceback on any input ------------------------------------------------------------------------------


def test_files_that_are_not_utf8_are_named(tmp_path):
    (tmp_path / "r.yaml").write_bytes(b"name: \xff\xfe\n")
    (tmp_path / "h.yaml").write_bytes(b"backend: \xc3\x28\n")
    for argv in (
        ["--recipe", str(tmp_path / "r.yaml")],
        ["--recipe", "mocker-agg", "--hosts", str(tmp_path / "h.yaml")],
    ):
        result = slurmserve("plan", *argv)
        assert result.returncode == 2 and "not UTF-8 text" in result.stderr and "Traceback" not in result.stderr


def test_a_number_too_long_for_python_to_read_is_named(tmp_path):
    digits = "9" * 5000
    (tmp_path / "r.yaml").write_text(
        f"name: r\nmodel: {{repo: builtin:tiny-mock}}\nengine: mocker\nmode: agg\nagg: {{}}\nbench: {{isl: {digits}}}\n"
    )
    in_file = slurmserve("plan", "--recipe", str(tmp_path / "r.yaml"))
    assert in_file.returncode == 2 and "Traceback" not in in_file.stderr, in_file.stderr[-300:]
    assert "r.yaml: a value YAML cannot read (Exceeds the limit (4300 digits)" in in_file.stderr
    on_command_line = slurmserve("plan", "--recipe", "mocker-agg", "--set", f"bench.isl={digits}")
    assert on_command_line.returncode == 2 and "--set bench.isl: a value YAML cannot read" in on_command_line.stderr


def test_a_malformed_engine_yaml_is_named_and_nothing_is_created(tmp_path):
    (tmp_path / "e.yaml").write_text("tensor_parallel_size: [4\n")
    result = slurmserve(
        "submit",
        "--recipe",
        "gpt-oss-120b-disagg",
        "--set",
        f"prefill.engine_config={tmp_path}/e.yaml",
        "--name",
        "badengine",
        "--no-wait",
    )
    assert result.returncode == 2 and "prefill.engine_config" in result.stderr and "not valid YAML" in result.stderr
    assert slurmserve("status", "badengine").returncode == 2  # no run was made


def test_a_misspelt_engine_key_is_exit_2_naming_file_key_and_the_closest_valid_one(tmp_path):
    shipped = Path(__file__).parent.parent.parent / "engine_configs" / "gpt-oss-120b" / "decode.yaml"
    typo = tmp_path / "decode.yaml"
    typo.write_text(shipped.read_text().replace("enable_attention_dp", "enable_atention_dp"))
    argv = ["--recipe", "gpt-oss-120b-disagg", "--set", f"decode.engine_config={typo}"]
    result = slurmserve("submit", *argv, "--name", "typo", "--no-wait")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        f"decode.engine_config: engine config {typo} does not fit the arguments of TensorRT-LLM 1.1.0rc5"
        in result.stderr
    )
    assert "unknown key 'enable_atention_dp' (did you mean 'enable_attention_dp'?)" in result.stderr
    assert slurmserve("status", "typo").returncode == 2  # no run was made
    typo.write_text(shipped.read_text().replace("max_batch_size: 128", "max_batch_size: lots", 1))
    result = slurmserve("plan", *argv)
    assert result.returncode == 2 and "max_batch_size: expected an integer, got 'lots'" in result.stderr


def test_render_into_an_unwritable_place_is_exit_2():
    result = slurmserve("render", "--recipe", "mocker-agg", "--out", "/dev/null/out")
    assert result.returncode == 2 and "--out /dev/null/out: cannot write there" in result.stderr


def test_probe_with_an_interface_this_machine_lacks():
    result = slurmserve("probe", "--interface", "nope0")
    assert result.returncode == 2 and "--interface: node" in result.stderr and "nope0" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_torn_plan_json_is_named_and_a_torn_state_json_is_survived(tmp_path):
    runs = Path(os.environ["SLURMSERVE_HOME"]) / "runs"
    (runs / "torn").mkdir(parents=True)
    (runs / "torn" / "plan.json").write_text('{"recipe": "mocker-ag')
    result = slurmserve("status", "torn")  # what its PID records and handle say: here, nothing started
    assert result.returncode == 0 and "plan.json is damaged" in " ".join(result.stdout.split()), result.stderr
    rendered = slurmserve("render", "--recipe", "mocker-agg", "--out", str(runs / "half"))
    assert rendered.returncode == 0
    (runs / "half" / "state.json").write_text('{"verdict": "rea')
    status = slurmserve("status", "half", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["supervised"] is False
    listing = slurmserve("status", "--json")  # the damaged run is listed as unreadable, not fatal to the list
    unreadable = {r["run"]: r["verdict"] == "unreadable" for r in json.loads(listing.stdout)}
    assert listing.returncode == 0 and unreadable == {"half": False, "torn": True}, listing.stdout


def test_a_run_whose_plan_json_is_damaged_is_still_shown_and_cancelled_from_its_pid_records(tmp_path):
    run = Path(os.environ["SLURMSERVE_HOME"]) / "runs" / "damaged"
    (run / "pids").mkdir(parents=True)
    (run / "plan.json").write_text('{"recipe": "mocker-agg", "scrape_interval_s": null}')
    (run / "hosts.yaml").write_text("backend: local\n")
    worker = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (run / "pids" / "agg-0.pid").write_text(f"{worker.pid} {start_time(worker.pid)}\n")
        (run / "pids" / "bench.lock").write_text("bench 20261207-010203 (started 01:02:03, pid 1)")
        (run / "pids" / "aiperf.bench").write_text("1 1\n")
        assert RunDir(run).process_names() == ["agg-0"]  # a benchmark's record and lock name no process
        shown = slurmserve("status", "damaged")
        said = " ".join(shown.stdout.split())
        assert shown.returncode == 0 and "plan.json is damaged" in said and "agg-0" in said, shown.stderr
        assert "slurmserve cancel damaged" in said
        cancelled = slurmserve("cancel", "damaged")
        assert cancelled.returncode == 0, cancelled.stderr
        assert worker.wait(timeout=10) is not None
    finally:
        worker.kill()
        worker.wait()


def test_slurm_job_lookups_are_the_users_own(monkeypatch):
    seen = []
    monkeypatch.setattr(
        slurm_commands,
        "slurm",
        lambda *args, check=True: seen.append(args) or subprocess.CompletedProcess(args, 0, "", ""),
    )
    slurm_commands.jobs_named("slurmserve-x")
    assert "--me" in seen[0]


# -- permissions --------------------------------------------------------------------------------------------


def assert_private(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"


@pytest.mark.slow
def test_a_local_run_directory_is_the_users_alone(cancel_later):
    cancel_later("private")
    result = slurmserve("submit", "--recipe", "mocker-agg", "--name", "private", "--timeout", "120")
    assert result.returncode == 0, result.stderr
    assert_private(Path(os.environ["SLURMSERVE_HOME"]) / "runs" / "private")


def test_render_writes_private_files(tmp_path):
    assert slurmserve("render", "--recipe", "mocker-agg", "--out", str(tmp_path / "out")).returncode == 0
    assert_private(tmp_path / "out")
