"""A `/bin/sh -c` line read as the shell reads it, never run."""

from __future__ import annotations

import pytest

from slurmserve.errors import UserError
from slurmserve.interop.shell import read_shell_command

ENV = {"MODEL_PATH": "openai/gpt-oss-120b", "ENGINE_ARGS": "/opt/dynamo/configs/prefill.yaml", "SPACED": "a b"}


def test_words_quotes_continuations_and_variables_from_the_env():
    line = 'python3 -m dynamo.trtllm \\\n  --model-path "${MODEL_PATH}" \\\n  --extra-engine-args $ENGINE_ARGS --x "$SPACED"\n'
    assert read_shell_command(line, ENV, "here").argv == [
        "python3", "-m", "dynamo.trtllm", "--model-path", "openai/gpt-oss-120b",
        "--extra-engine-args", "/opt/dynamo/configs/prefill.yaml", "--x", "a b",
    ]  # fmt: skip


def test_assignments_exec_and_the_mpi_launcher_come_off_the_front():
    parsed = read_shell_command("A=1 B='two words' exec trtllm-llmapi-launch python3 -m dynamo.trtllm", ENV, "here")
    assert parsed.env == {"A": "1", "B": "two words"}
    assert parsed.argv == ["python3", "-m", "dynamo.trtllm"]


def test_single_quotes_keep_dollars_and_json_stays_one_word():
    argv = read_shell_command("""x --a '$NOT_EXPANDED' --b '{"k": "v w"}'""", {}, "here").argv
    assert argv == ["x", "--a", "$NOT_EXPANDED", "--b", '{"k": "v w"}']


def test_a_variable_whose_value_holds_shell_syntax_stays_one_plain_word():
    assert read_shell_command("x $V", {"V": "a; rm -rf /"}, "here").argv == ["x", "a; rm -rf /"]


@pytest.mark.parametrize("line", ["a; b", "a > log", "(a)", "a `b`", "a 'unclosed", ""])
def test_what_is_not_one_plain_command_is_refused_naming_where(line):
    with pytest.raises(UserError, match="^spec.services.W"):
        read_shell_command(line, {}, "spec.services.W")
