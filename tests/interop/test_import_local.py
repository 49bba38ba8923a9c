"""Dynamo's own gpt-oss-120b TensorRT-LLM disagg manifest, given as --recipe, rehearsed on this machine: a real
Dynamo frontend and mock workers in the manifest's shape (prefill 1 GPU, decode 4)."""

from __future__ import annotations

import pytest

from ..helpers import completion_tokens, slurmserve, status_of
from .test_import import GPT_OSS

pytestmark = pytest.mark.slow


def test_dynamos_gpt_oss_manifest_serves_as_a_local_rehearsal(cancel_later):
    result = slurmserve(
        "submit", "--recipe", str(GPT_OSS), "--set", "engine=mocker", "--name", "dgd-rehearsal", "--timeout", "120"
    )
    cancel_later("dgd-rehearsal")
    assert result.returncode == 0, result.stderr
    assert "affinity" in result.stderr  # what has no meaning here is named, not dropped silently
    status = status_of("dgd-rehearsal")
    gpus = {p["name"]: p.get("gpus") for p in status["processes"] if p["role"] in ("prefill", "decode")}
    assert gpus == {"prefill-0": [0], "decode-0": [1, 2, 3, 4]}
    assert completion_tokens(status["endpoint"], "openai/gpt-oss-120b") > 0
