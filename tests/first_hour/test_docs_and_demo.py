"""A newcomer's first hour, as they meet it: the README's two set-up commands, `--version` and `-h`, and the
demo's first answer, which must be words (run as a user would: the CLI in a pipe at 80 columns)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import typer

from slurmserve.cli import app

from ..helpers import slurmserve_in_process

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m slurmserve ARGS` with its output in a pipe and an 80-column terminal's COLUMNS."""
    return subprocess.run(
        [sys.executable, "-m", "slurmserve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "80"},
    )


def readme_commands() -> list[str]:
    """The README's set-up commands: the bash blocks of its "Set-up on a fresh machine" section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.DOTALL)]


def without_env_assignments(command: str) -> list[str]:
    return [word for word in shlex.split(command, comments=True) if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", word)]


def test_the_readme_has_the_two_setup_commands():
    assert readme_commands() == [
        "./install.sh && .venv/bin/slurmserve submit --recipe mocker-disagg",
        "./install.sh --test && scripts/test.sh",
    ]


def test_the_readme_test_command_is_the_one_ci_runs():
    """.ci/run runs the README's test command (its own environment settings aside: the lab must start)."""
    test_command = without_env_assignments(readme_commands()[1])
    ci_lines = [without_env_assignments(line) for line in (REPO / ".ci/run").read_text().splitlines()]
    assert test_command in ci_lines


def test_version_names_slurmserve_dynamo_and_python():
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"slurmserve {metadata.version('slurmserve')}",
        f"ai-dynamo {metadata.version('ai-dynamo')}",
        f"ai-dynamo-runtime {metadata.version('ai-dynamo-runtime')}",
        f"Python {'.'.join(map(str, sys.version_info[:3]))} ({sys.implementation.name.replace('cpython', 'CPython')})",
    ]


def test_version_says_when_dynamo_is_not_installed(monkeypatch):
    real = metadata.version

    def without_dynamo(package: str) -> str:
        if package.startswith("ai-dynamo"):
            raise metadata.PackageNotFoundError(package)
        return real(package)

    monkeypatch.setattr(metadata, "version", without_dynamo)
    result = slurmserve_in_process("-V")
    assert result.returncode == 0
    assert "ai-dynamo not installed" in result.stdout and "ai-dynamo-runtime not installed" in result.stdout


def test_dash_h_is_help_everywhere():
    result = cli("-h")
    assert result.returncode == 0 and "Usage: slurmserve [OPTIONS] COMMAND" in result.stdout, result.stderr
    assert max(map(len, result.stdout.splitlines())) <= 80
    for name in typer.main.get_command(app).commands:  # type: ignore[attr-defined]
        result = slurmserve_in_process(name, "-h")
        assert result.returncode == 0, (name, result.stderr)
        assert re.search(rf"Usage: \S+ {name} \[OPTIONS\]", result.stdout) and "--help" in result.stdout, name


WORD = re.compile(r"[a-z]+")
MOCKER_TOKEN_IDS = range(1000, 2000)  # what Dynamo 1.6.1's mock engine answers (scripts/make_tiny_model.py)


def test_every_token_id_the_mock_engine_answers_is_a_word():
    """Without starting Dynamo: tiny-mock's vocabulary reaches past the mocker's ids, each a whole word."""
    model = REPO / "slurmserve/models/tiny-mock"
    token_of = {i: token for token, i in json.loads((model / "tokenizer.json").read_text())["model"]["vocab"].items()}
    assert json.loads((model / "config.json").read_text())["vocab_size"] == len(token_of) == MOCKER_TOKEN_IDS.stop
    assert all(re.fullmatch("Ġ[a-z]+", token_of[i]) for i in MOCKER_TOKEN_IDS)  # 'Ġ': byte-level BPE's space


@pytest.mark.slow
def test_the_demo_answers_in_words(cancel_later):
    """The sample completion, and the printed curl run as printed: a plain chat request, no annotation."""
    result = cli("submit", "--recipe", "mocker-agg", "--name", "words", "--timeout", "120")
    cancel_later("words")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    sample = next(line for line in lines if line.startswith("sample completion: 16 tokens"))
    assert len(WORD.findall(sample.split(": ", 2)[2])) == 16, sample

    curl = shlex.split(next(line for line in lines if line.startswith("try: curl "))[len("try: ") :])
    answer = json.loads(subprocess.run([*curl, "--silent"], capture_output=True, text=True, timeout=30).stdout)
    content = answer["choices"][0]["message"]["content"]
    assert answer["usage"]["completion_tokens"] == 32
    assert content and len(WORD.findall(content)) == 32, content
