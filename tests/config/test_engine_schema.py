"""Engine YAMLs are checked against TensorRT-LLM's argument schema (engine_configs/schema/), shipped as data."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from slurmserve.config.engine_schema import (
    EngineSchema,
    engine_config_problems,
    engine_file_problems,
    load_schema,
    schema_version,
)

from ..conftest import REPO

SCHEMA_DIR = REPO / "engine_configs" / "schema"
ENGINE_YAMLS = sorted((REPO / "engine_configs").rglob("*.yaml"))


def generator() -> ModuleType:
    """engine_configs/schema/generate.py, a script beside the data rather than a module of the package."""
    spec = importlib.util.spec_from_file_location("generate_engine_schema", SCHEMA_DIR / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its own module up while being defined
    spec.loader.exec_module(module)
    return module


def test_there_are_engine_yamls_to_check():
    assert len(ENGINE_YAMLS) >= 8, ENGINE_YAMLS


@pytest.mark.parametrize("path", ENGINE_YAMLS, ids=lambda path: str(path.relative_to(REPO / "engine_configs")))
def test_every_shipped_engine_yaml_passes(path):
    assert engine_file_problems(path) == []


def test_the_data_file_names_its_version_and_source():
    schema = load_schema()
    assert schema_version() == schema.tensorrt_llm_version == "1.1.0rc5"
    assert [path.name for path in SCHEMA_DIR.glob("tensorrt_llm-*.json")] == ["tensorrt_llm-1.1.0rc5.json"]
    repository, tag, commit, *paths = schema.source.split()
    assert (repository, tag, paths) == ("NVIDIA/TensorRT-LLM", "v1.1.0rc5", ["tensorrt_llm/llmapi/llm_args.py"])
    assert len(commit) == 40
    assert schema.root == "TorchLlmArgs"
    assert {"KvCacheConfig", "CudaGraphConfig", "MoeConfig", "CacheTransceiverConfig"} <= set(schema.models)


def test_the_data_file_is_in_the_generators_canonical_form():
    """Sorted keys, one-space indent: regenerating from the same source leaves no diff."""
    text = (SCHEMA_DIR / "tensorrt_llm-1.1.0rc5.json").read_text()
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n"


def test_a_misspelt_key_names_the_file_and_the_closest_valid_key(tmp_path):
    engine = tmp_path / "decode.yaml"
    engine.write_text(
        "tensor_parallel_size: 4\nenable_atention_dp: true\nkv_cache_config:\n  free_gpu_memory_fracton: 0.8\n"
    )
    assert engine_file_problems(engine) == [
        f"{engine}: unknown key 'enable_atention_dp' (did you mean 'enable_attention_dp'?)",
        f"{engine}: unknown key 'kv_cache_config.free_gpu_memory_fracton' (did you mean 'kv_cache_config.free_gpu_memory_fraction'?)",
    ]


def test_a_key_like_no_setting_says_so():
    assert engine_config_problems({"zzzz": 1}) == ["unknown key 'zzzz' (not a TensorRT-LLM 1.1.0rc5 setting)"]


@pytest.mark.parametrize(
    "data, problem",
    [
        (
            {"kv_cache_config": {"free_gpu_memory_fraction": "high"}},
            "kv_cache_config.free_gpu_memory_fraction: expected a number, got 'high'",
        ),
        ({"enable_attention_dp": "true"}, "enable_attention_dp: expected true or false, got 'true'"),
        ({"max_batch_size": True}, "max_batch_size: expected an integer, got true"),
        ({"max_num_tokens": 8192.5}, "max_num_tokens: expected an integer, got 8192.5"),
        ({"disable_overlap_scheduler": None}, "disable_overlap_scheduler: expected true or false, got null"),
        (
            {"moe_config": {"backend": "cutlass"}},
            "moe_config.backend: expected one of 'CUTLASS', 'CUTEDSL', 'WIDEEP', 'TRTLLM', 'DEEPGEMM', 'VANILLA', 'TRITON', got 'cutlass' (did you mean 'CUTLASS'?)",
        ),
        (
            {"cache_transceiver_config": {"backend": "ucx"}},
            "cache_transceiver_config.backend: expected one of 'DEFAULT', 'UCX', 'NIXL', 'MPI', got 'ucx' (did you mean 'UCX'?)",
        ),
        (
            {"cuda_graph_config": {"batch_sizes": [1, 2, "4"]}},
            "cuda_graph_config.batch_sizes[2]: expected an integer, got '4'",
        ),
        ({"cuda_graph_config": 128}, "cuda_graph_config: expected a mapping of settings, got 128"),
        (
            {"scheduler_config": {"capacity_scheduler_policy": "MAX_UTILIZATON"}},
            "scheduler_config.capacity_scheduler_policy: expected one of 'MAX_UTILIZATION', 'GUARANTEED_NO_EVICT', 'STATIC_BATCH', got 'MAX_UTILIZATON' (did you mean 'MAX_UTILIZATION'?)",
        ),
    ],
)
def test_a_value_of_the_wrong_type_is_reported(data, problem):
    assert engine_config_problems(data) == [problem]


def test_what_the_schema_cannot_describe_is_accepted():
    lenient = {
        "moe_config": {"load_balancer": {"num_slots": 256, "layer_updates_per_iter": 1}},  # Union[object, str]
        "speculative_config": {"decoding_type": "MTP", "num_nextn_predict_layers": 3},  # picked by decoding_type
        "lora_config": {"max_lora_rank": 64},  # a dataclass, not a pydantic model
        "cuda_graph_config": None,  # Optional
        "free_gpu_memory_fraction_is_not_here": None,
    }
    assert engine_config_problems(lenient) == [
        "unknown key 'free_gpu_memory_fraction_is_not_here' (not a TensorRT-LLM 1.1.0rc5 setting)"
    ]


SYNTHETIC_SOURCE = """
from typing import ClassVar, Dict, List, Literal, Optional, Union
from pydantic import BaseModel, Field, PrivateAttr
from strenum import StrEnum


class StrictBaseModel(BaseModel):
    class Config:
        extra = "forbid"


class Mode(StrEnum):
    FAST = "fast"
    SAFE = "safe"


class Inner(StrictBaseModel):
    size: int = Field(default=1, description="How big.")
    mode: Mode = Mode.FAST


Alias = Optional[Union[Inner, "Inner"]]


class Base(StrictBaseModel):
    name: str = Field(alias="model_name")
    ratio: float | None = None
    inner: Alias = None
    kind: ClassVar[str] = "base"
    _hidden: int = PrivateAttr(default=0)
    session: Optional[object] = Field(default=None, exclude=True)


class Root(Base):
    flags: Dict[str, bool] = {}
    sizes: List[int] = []
    policy: Literal["a", "b"] = "a"
    ratio: Optional[int] = None


class Loose(BaseModel):
    anything: int = 0
"""


def generate(module: ModuleType, source: Path, out: Path) -> dict:
    argv = [str(source), "--version", "9.9.9", "--tag", "v9.9.9", "--commit", "f" * 40, "--root", "Root"]
    module.main([*argv, "--out", str(out)])
    return json.loads(out.read_text())


def test_the_generator_reads_models_from_source_and_is_deterministic(tmp_path):
    source = tmp_path / "tensorrt_llm" / "llmapi" / "llm_args.py"
    source.parent.mkdir(parents=True)
    source.write_text(SYNTHETIC_SOURCE)
    module = generator()
    data = generate(module, source, tmp_path / "first.json")
    generate(module, source, tmp_path / "second.json")
    assert (tmp_path / "first.json").read_bytes() == (tmp_path / "second.json").read_bytes()

    assert data["source"] == f"NVIDIA/TensorRT-LLM v9.9.9 {'f' * 40} tensorrt_llm/llmapi/llm_args.py"
    assert (data["tensorrt_llm_version"], data["root"]) == ("9.9.9", "Root")
    root = data["models"]["Root"]
    assert root["extra"] == "forbid"  # inherited from StrictBaseModel's class Config
    # ClassVar, private and excluded fields are no settings; inherited ones are.
    assert sorted(root["fields"]) == ["flags", "inner", "name", "policy", "ratio", "sizes"]
    assert root["fields"]["name"] == {"aliases": ["model_name"], "type": {"kind": "str"}}
    assert root["fields"]["ratio"]["type"] == {"kind": "optional", "of": {"kind": "int"}}  # the subclass wins
    assert root["fields"]["inner"]["type"] == {"kind": "optional", "of": {"kind": "model", "model": "Inner"}}
    assert root["fields"]["flags"]["type"] == {"kind": "dict", "values": {"kind": "bool"}}
    assert root["fields"]["policy"]["type"] == {"kind": "literal", "values": ["a", "b"]}
    assert data["models"]["Inner"]["fields"]["mode"]["type"] == {"kind": "literal", "values": ["fast", "safe"]}
    assert "Loose" not in data["models"]  # only what the root reaches

    schema = EngineSchema.model_validate(data)
    assert engine_config_problems({"model_name": "x", "inner": {"size": 2, "mode": "safe"}}, schema) == []
    assert engine_config_problems({"inner": {"mode": "saf", "sise": 1}}, schema) == [
        "inner.mode: expected one of 'fast', 'safe', got 'saf' (did you mean 'safe'?)",
        "unknown key 'inner.sise' (did you mean 'inner.size'?)",
    ]


def test_the_generator_reads_the_documentations_source_view(tmp_path):
    """The published docs' `_modules/...html` page holds the module's source: the same models come out."""
    page = (
        '<html><body><h1>Source code</h1><div class="highlight"><pre><span></span>'
        '<span class="kn">from</span> <span class="nn">pydantic</span> <span class="kn">import</span> BaseModel\n'
        '<div class="viewcode-block" id="Root">\n'
        '<a class="viewcode-back" href="../reference.html#Root">[docs]</a>\n'
        '<span class="k">class</span> <span class="nc">Root</span>(BaseModel):\n'
        '    <span class="n">backend</span>: Literal[<span class="s2">&quot;UCX&quot;</span>] = '
        '<span class="s1">&#39;UCX&#39;</span></div>\n'
        "</pre></div></body></html>"
    )
    html_source = tmp_path / "1.1.0rc5" / "_modules" / "tensorrt_llm" / "llmapi" / "llm_args.html"
    html_source.parent.mkdir(parents=True)
    html_source.write_text(page)
    module = generator()
    assert "class Root(BaseModel):" in module.python_from_viewcode(page)
    data = generate(module, html_source, tmp_path / "out.json")
    assert data["source"].endswith(" tensorrt_llm/llmapi/llm_args.py")
    assert data["models"]["Root"] == {
        "extra": "ignore",  # pydantic's default when the class says nothing
        "fields": {"backend": {"type": {"kind": "literal", "values": ["UCX"]}}},
    }


def test_the_generator_reads_a_release_tag_from_a_git_directory(tmp_path):
    work = tmp_path / "TensorRT-LLM"
    (work / "tensorrt_llm" / "llmapi").mkdir(parents=True)
    # As since 1.2: the strict base class lives in llmapi/utils.py, which the generator reads by default.
    base = 'class StrictBaseModel(BaseModel):\n    class Config:\n        extra = "forbid"\n'
    assert base in SYNTHETIC_SOURCE
    (work / "tensorrt_llm" / "llmapi" / "utils.py").write_text("from pydantic import BaseModel\n\n\n" + base)
    (work / "tensorrt_llm" / "llmapi" / "llm_args.py").write_text(
        SYNTHETIC_SOURCE.replace(base, "from .utils import StrictBaseModel\n")
    )

    def git(*argv: str) -> str:
        command = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.com", *argv]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "release")
    git("tag", "v9.9.9")
    out = tmp_path / "out.json"
    generator().main(["--git-dir", str(work / ".git"), "--tag", "v9.9.9", "--root", "Root", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["tensorrt_llm_version"] == "9.9.9"
    paths = "tensorrt_llm/llmapi/llm_args.py tensorrt_llm/llmapi/utils.py"
    assert data["source"] == f"NVIDIA/TensorRT-LLM v9.9.9 {git('rev-parse', 'HEAD')} {paths}"
    assert "Inner" in data["models"]
    assert data["models"]["Root"]["extra"] == "forbid"  # from the base class in utils.py
