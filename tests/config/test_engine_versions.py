"""Engine YAMLs are checked against the TensorRT-LLM that the nodes' Dynamo runs: the venv's, or the hosts
file's `runtime: {dynamo: ...}`; a key another version has is reported with that version."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from slurmserve.config import engine_schema
from slurmserve.config.engine_schema import EngineSchema, engine_config_problems, engine_file_problems, load_schema
from slurmserve.config.hosts import load_hosts
from slurmserve.config.recipe import load_recipe
from slurmserve.config.runtimes import RUNTIMES, Runtime, runtime_for, venv_dynamo
from slurmserve.errors import UserError

from ..conftest import REPO
from ..helpers import slurmserve_in_process

ENGINE_YAMLS = sorted((REPO / "engine_configs").rglob("*.yaml"))


def yaml_id(path: Path) -> str:
    return str(path.relative_to(REPO / "engine_configs"))


@pytest.mark.parametrize("dynamo", sorted(RUNTIMES))
@pytest.mark.parametrize("path", ENGINE_YAMLS, ids=yaml_id)
def test_every_shipped_engine_yaml_passes_the_schema_each_supported_dynamo_is_checked_against(path, dynamo):
    assert engine_file_problems(path, load_schema(RUNTIMES[dynamo].schema)) == []


def test_the_table_says_what_the_installed_dynamo_pins():
    """The row of this venv's Dynamo names the TensorRT-LLM its wheel's `trtllm` extra pins."""
    pins = [requirement for requirement in metadata.requires("ai-dynamo") or [] if requirement.startswith("tensorrt")]
    runtime = RUNTIMES[venv_dynamo()]
    assert pins == [f"tensorrt-llm=={runtime.tensorrt_llm}; extra == 'trtllm'"]
    assert runtime == Runtime(dynamo="1.6.1", tensorrt_llm="1.3.0rc29", schema="1.1.0rc5")


def test_every_row_names_a_shipped_schema():
    for runtime in RUNTIMES.values():
        assert load_schema(runtime.schema).tensorrt_llm_version == runtime.schema


def test_a_stand_in_schema_is_named_as_one():
    assert RUNTIMES["1.6.1"].checked_against() == (
        "TensorRT-LLM 1.1.0rc5 (Dynamo 1.6.1 runs TensorRT-LLM 1.3.0rc29, whose schema is not shipped yet)"
    )
    assert Runtime("9.9.9", "2.0.0", "2.0.0").checked_against() == "TensorRT-LLM 2.0.0"


def variant(schema: EngineSchema, version: str, changes: dict[str, dict[str, dict]]) -> EngineSchema:
    """`schema` as another version: fields added to (a dict) or removed from (None) its models."""
    data = schema.model_dump()
    data["tensorrt_llm_version"] = version
    for model, fields in changes.items():
        for name, field in fields.items():
            if field is None:
                del data["models"][model]["fields"][name]
            else:
                data["models"][model]["fields"][name] = field
    return EngineSchema.model_validate(data)


INT = {"type": {"kind": "int"}}


KVC = "kv_cache_config"
# A key planted into another version's model (1.0.0 before the shipped schema, 1.3.0rc29 after it), what an
# engine YAML sets, and what the check against the shipped 1.1.0rc5 says.
OTHER_VERSIONS = {
    "removed": (
        "1.0.0",
        "KvCacheConfig",
        "foo",
        {KVC: {"foo": 1}},
        f"{KVC}.foo: not in TensorRT-LLM 1.1.0rc5 (present in 1.0.0)",
    ),
    "moved": (
        "1.0.0",
        "TorchLlmArgs",
        "max_tokens_in_buffer",
        {"max_tokens_in_buffer": 9216},
        "max_tokens_in_buffer: not in TensorRT-LLM 1.1.0rc5 "
        "(present in 1.0.0; now at 'cache_transceiver_config.max_tokens_in_buffer')",
    ),
    # Checked against an older TensorRT-LLM than the one that has the key: the user learns which one does.
    "added later": (
        "1.3.0rc29",
        "KvCacheConfig",
        "bar",
        {KVC: {"bar": 1}},
        f"{KVC}.bar: not in TensorRT-LLM 1.1.0rc5 (present in 1.3.0rc29)",
    ),
}


@pytest.mark.parametrize("other, model, key, data, problem", OTHER_VERSIONS.values(), ids=OTHER_VERSIONS)
def test_a_key_of_another_version_is_reported_with_that_version(other, model, key, data, problem):
    current = load_schema("1.1.0rc5")
    planted = variant(current, other, {model: {key: INT}})
    assert engine_config_problems(data, current, [planted]) == [problem]


def test_a_setting_at_the_wrong_level_is_pointed_to_its_place():
    assert engine_config_problems({"free_gpu_memory_fraction": 0.9}) == [
        "unknown key 'free_gpu_memory_fraction' (it belongs at 'kv_cache_config.free_gpu_memory_fraction')"
    ]


def test_the_default_history_is_every_other_shipped_schema(monkeypatch):
    current = load_schema("1.1.0rc5")
    older = variant(current, "1.0.0", {"KvCacheConfig": {"foo": INT}})
    monkeypatch.setattr(engine_schema, "shipped_versions", lambda: ["1.0.0", "1.1.0rc5"])
    monkeypatch.setattr(engine_schema, "load_schema", {"1.0.0": older, "1.1.0rc5": current}.__getitem__)
    assert engine_config_problems({"kv_cache_config": {"foo": 1}}, current) == [
        "kv_cache_config.foo: not in TensorRT-LLM 1.1.0rc5 (present in 1.0.0)"
    ]


def hosts_file(tmp_path: Path, runtime: str = "") -> Path:
    path = tmp_path / "hosts.yaml"
    path.write_text(f"backend: ssh\nhosts:\n  - {{name: gpu01, address: 10.0.0.11}}\n{runtime}")
    return path


def test_the_runtime_field_picks_the_schema(tmp_path, monkeypatch):
    """A Dynamo the nodes hold is checked with its own TensorRT-LLM's schema, not the venv's."""
    hosts = load_hosts(hosts_file(tmp_path, "runtime: {dynamo: 1.6.1}\n"))
    assert hosts.runtime.dynamo == "1.6.1"
    assert runtime_for(hosts.runtime.dynamo) == RUNTIMES["1.6.1"]
    assert load_hosts(hosts_file(tmp_path)).runtime.dynamo is None  # the venv's, then
    assert runtime_for(None) == RUNTIMES[venv_dynamo()]

    # A second supported Dynamo whose TensorRT-LLM lacks a key the shipped gpt-oss decode YAML sets.
    strict = variant(load_schema("1.1.0rc5"), "8.0.0", {"TorchLlmArgs": {"enable_attention_dp": None}})
    monkeypatch.setitem(RUNTIMES, "9.0.0", Runtime(dynamo="9.0.0", tensorrt_llm="8.0.0", schema="8.0.0"))
    monkeypatch.setattr(engine_schema, "load_schema", lambda version=None: strict)
    monkeypatch.setattr(engine_schema, "shipped_versions", lambda: [])
    with pytest.raises(UserError, match=r"does not fit the arguments of TensorRT-LLM 8\.0\.0: .*enable_attention_dp"):
        load_recipe("gpt-oss-120b-disagg", dynamo="9.0.0")


def test_an_unsupported_dynamo_is_refused_naming_the_field_and_the_supported_ones(tmp_path):
    hosts = hosts_file(tmp_path, "runtime: {dynamo: 1.5.0}\n")
    result = slurmserve_in_process("plan", "--recipe", "gpt-oss-120b-disagg", "--hosts", str(hosts))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{hosts}: runtime.dynamo: Dynamo 1.5.0 is not supported (supported: 1.6.1)" in result.stderr


def test_an_unsupported_venv_dynamo_is_refused(monkeypatch):
    monkeypatch.setattr("slurmserve.config.runtimes.venv_dynamo", lambda: "0.6.1")
    with pytest.raises(
        UserError, match=r"this venv's ai-dynamo: Dynamo 0\.6\.1 is not supported \(supported: 1\.6\.1\)"
    ):
        load_recipe("gpt-oss-120b-disagg")
