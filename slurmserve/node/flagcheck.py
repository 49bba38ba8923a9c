"""Dynamo's own argument parsers, asked whether they accept the command lines a plan renders.

    python flagcheck.py [COMMANDS_JSON | FILE]     (nothing: the JSON on stdin)

COMMANDS_JSON is a list of {"process", "module", "argv", "env"}: argv is what follows `python -m MODULE`,
env (optional) what the process's environment adds (Dynamo's flags default to DYN_* variables, which its
parsers check as they check flags). Each argv goes through the parser the module itself runs at start-up,
in this interpreter's Dynamo; modules without one (etcd, nats-server) are not asked. Prints one line per
rejected command line, `PROCESS: Dynamo VERSION's MODULE rejects FLAG: the parser's own words`, and exits
1; prints nothing and exits 0 when every one is accepted; exits 2 when it cannot ask (no Dynamo in this
interpreter, unreadable input). An engine that cannot be imported here is stood in for (see stub_vllm and
stub_tensorrt_llm): Dynamo's flags are checked all the same, and stderr says which engine flags were not.

Standard library and Dynamo only, no import of slurmserve: it runs as a plain script in the interpreter
the nodes run (slurmserve sends its source with `python -c`), so slurmserve's own process never imports
Dynamo, and the Dynamo asked is the one that will run the command.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import importlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import re
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

# The module a process runs -> (the module holding its parser, the parser, whether it reads sys.argv
# instead of taking argv).
PARSERS: dict[str, tuple[str, str, bool]] = {
    "dynamo.trtllm": ("dynamo.trtllm.args", "parse_args", False),
    "dynamo.vllm": ("dynamo.vllm.args", "parse_args", False),
    "dynamo.mocker": ("dynamo.mocker.args", "parse_args", False),
    "dynamo.router": ("dynamo.router.args", "parse_args", False),
    "dynamo.frontend": ("dynamo.frontend.main", "parse_args", True),
    # Its parser lives in its __main__, which starts nothing on import (main() runs under __name__ guard).
    "dynamo.global_router": ("dynamo.global_router.__main__", "parse_args", True),
    # The planner's config (`--config JSON`) through its own PlannerConfig: option names and their values.
    "dynamo.planner": ("dynamo.planner.__main__", "_parse_config", True),
}
FLAG = re.compile(r"--[A-Za-z0-9][\w.-]*")


def dynamo_version() -> str:
    for distribution in ("ai-dynamo", "ai-dynamo-runtime"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "(version unknown)"


class _AnyField:
    default = None


class _Fields(dict):
    def __missing__(self, key: str) -> _AnyField:
        return _AnyField()


def stub_tensorrt_llm() -> None:
    """Dynamo's TRT-LLM parser imports TensorRT-LLM only to read a few flags' defaults off its settings
    class. Where TensorRT-LLM cannot be imported (it cannot be installed off a GPU machine), a stand-in
    with no defaults lets the parser run: Dynamo's own flags are checked all the same, and the engine's
    own settings are checked by slurmserve's engine-config schema instead."""
    if "tensorrt_llm" in sys.modules or importlib.util.find_spec("tensorrt_llm") is not None:
        return
    settings = type("BaseLlmArgs", (), {"model_fields": _Fields()})
    package, llmapi, llm_args = (types.ModuleType(name) for name in ("tensorrt_llm", "llmapi", "llm_args"))
    llm_args.BaseLlmArgs = settings  # type: ignore[attr-defined]
    llmapi.llm_args = llm_args  # type: ignore[attr-defined]
    package.llmapi = llmapi  # type: ignore[attr-defined]
    # No BuildConfig: Dynamo takes the path TensorRT-LLM 1.3 (the version Dynamo 1.6.1 pins) has.
    sys.modules.update(
        {"tensorrt_llm": package, "tensorrt_llm.llmapi": llmapi, "tensorrt_llm.llmapi.llm_args": llm_args}
    )


# Where vLLM is stubbed: Dynamo's own half of its vLLM parser (the split of Dynamo's flags from vLLM's,
# which the whole parser runs first), since the rest builds vLLM's engine settings.
VLLM_STUBBED_PARSER = "_parse_cli_args"


def stub_vllm() -> bool:
    """Dynamo's vLLM parser hands every flag it does not know to vLLM's own parser, built from vLLM's engine
    settings. Where vLLM cannot be imported (slurmserve's own venv: vLLM runs on GPU machines), a stand-in
    parser takes any such flag: Dynamo's own flags are checked all the same, vLLM's are not (the tests
    check them with the real vLLM's definitions). True when the stand-in is in place."""
    if "vllm" in sys.modules or importlib.util.find_spec("vllm") is not None:
        return False

    class AnyFlagParser(argparse.ArgumentParser):
        def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
            return self.parse_known_args(args, namespace)[0]

    class AsyncEngineArgs:
        @staticmethod
        def add_cli_args(parser: argparse.ArgumentParser, **_: Any) -> argparse.ArgumentParser:
            parser.add_argument("--model")  # Dynamo reads the model's name back from vLLM's settings
            return parser

    names = ("vllm", "vllm.distributed", "vllm.distributed.kv_events", "vllm.engine", "vllm.engine.arg_utils")
    modules = {name: types.ModuleType(name) for name in (*names, "vllm.utils")}
    modules["vllm.distributed.kv_events"].KVEventsConfig = type("KVEventsConfig", (), {})  # type: ignore[attr-defined]
    modules["vllm.engine.arg_utils"].AsyncEngineArgs = AsyncEngineArgs  # type: ignore[attr-defined]
    modules["vllm.utils"].FlexibleArgumentParser = AnyFlagParser  # type: ignore[attr-defined]
    sys.modules.update(modules)
    return True


class _Captured(logging.Handler):
    """What the parsers log (some report an unknown flag by logging it, then exit)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@functools.cache  # one import, one stand-in, for every command of a module
def parser_for(module: str) -> Callable[[list[str]], Any]:
    home, name, reads_sys_argv = PARSERS[module]
    if module == "dynamo.trtllm":
        stub_tensorrt_llm()
    if module == "dynamo.vllm" and stub_vllm():
        name = VLLM_STUBBED_PARSER
        print(
            "flagcheck: vLLM cannot be imported by this interpreter: dynamo.vllm's own flags are checked, "
            "vLLM's engine flags are not",
            file=sys.stderr,
        )
    parse = getattr(importlib.import_module(home), name)

    def parse_as_started(argv: list[str]) -> Any:
        # sys.argv as `python -m MODULE ARGV` has it: argparse names the program after sys.argv[0].
        saved = sys.argv
        sys.argv = [module, *argv]
        try:
            return parse() if reads_sys_argv else parse(argv)
        finally:
            sys.argv = saved

    return parse_as_started


@contextlib.contextmanager
def environment_with(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def parser_words(parse: Callable[[list[str]], Any], argv: list[str], env: dict[str, str]) -> str | None:
    """None when the parser accepts argv (under env), else its own last words: argparse's error line, the
    error it logged before exiting, or the exception its validation raised."""
    captured, printed = _Captured(), io.StringIO()
    root = logging.getLogger()
    saved_handlers, root.handlers = root.handlers, [captured]
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed), environment_with(env):
            parse(argv)
        return None
    except SystemExit as stop:
        if stop.code in (0, None):
            return None
        said = [line.strip() for line in printed.getvalue().splitlines() if line.strip()] + captured.lines
        return said[-1] if said else f"exit status {stop.code}"
    except Exception as error:  # a validation error is the parser's answer, whatever its class
        return f"{type(error).__name__}: {error}"
    finally:
        root.handlers = saved_handlers


@contextlib.contextmanager
def options_offered() -> Iterator[set[str]]:
    """Every option string of the argparse parsers that parse meanwhile (a module may use more than one):
    what a rejected flag's closest valid name is looked for among."""
    offered: set[str] = set()
    parse_known_args = argparse.ArgumentParser.parse_known_args

    def recording(parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        offered.update(parser._option_string_actions)
        return parse_known_args(parser, *args, **kwargs)

    argparse.ArgumentParser.parse_known_args = recording  # type: ignore[method-assign, assignment]
    try:
        yield offered
    finally:
        argparse.ArgumentParser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def rejected_flag(words: str, argv: list[str], offered: set[str]) -> str:
    """The flag of argv the parser's words name, with the closest flag it offers when it is not one."""
    given = {argument.split("=", 1)[0] for argument in argv if argument.startswith("--")}
    flag = next((flag for flag in FLAG.findall(words) if flag in given), None)
    if flag is None:
        return "its command line and environment"
    # A high cutoff: a misspelling has a closest flag, a dropped flag (--router-reset-states) has none.
    closest = [] if flag in offered else difflib.get_close_matches(flag, sorted(offered), n=1, cutoff=0.8)
    return f"{flag} (closest: {closest[0]})" if closest else flag


def rejections(commands: list[dict[str, Any]]) -> list[str]:
    version = dynamo_version()
    lines = []
    for command in commands:
        module, argv = command["module"], [str(argument) for argument in command["argv"]]
        if module not in PARSERS:
            continue
        parse = parser_for(module)
        with options_offered() as offered:
            words = parser_words(parse, argv, command.get("env") or {})
        if words is not None:
            flag = rejected_flag(words, argv, offered)
            lines.append(f"{command['process']}: Dynamo {version}'s {module} rejects {flag}: {words}")
    return lines


def read_commands(argv: list[str]) -> list[dict[str, Any]]:
    if not argv:
        return json.load(sys.stdin)
    text = argv[0]
    if not text.lstrip().startswith("["):
        with open(text, encoding="utf-8") as file:
            text = file.read()
    return json.loads(text)


def main(argv: list[str]) -> int:
    try:
        lines = rejections(read_commands(argv))
    except Exception as error:  # no Dynamo here, unreadable input: not a rejection, exit 2
        print(f"flagcheck cannot run: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
