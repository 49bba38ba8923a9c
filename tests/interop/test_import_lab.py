"""Dynamo's own gpt-oss-120b TensorRT-LLM disagg manifest, given as --recipe, rehearsed on the Slurm test cluster."""

from __future__ import annotations

import pytest

from ..backends.test_slurm import assert_cancel_leaves_nothing, submit_and_check_ready
from ..helpers import completion_tokens
from .test_import import GPT_OSS

pytestmark = pytest.mark.slow


def test_dynamos_gpt_oss_manifest_rehearses_on_the_lab(slurm_lab, cancel_later):
    cancel_later("lab-dgd")
    hosts = str(slurm_lab.hosts_file("slurm"))
    status = submit_and_check_ready("lab-dgd", "--recipe", str(GPT_OSS), "--set", "engine=mocker", "--hosts", hosts)
    workers = {p["name"]: p for p in status["processes"] if p["role"] in ("prefill", "decode")}
    assert set(workers) == {"prefill-0", "decode-0"}
    assert completion_tokens(status["endpoint"], "openai/gpt-oss-120b") > 0
    assert_cancel_leaves_nothing("lab-dgd")
