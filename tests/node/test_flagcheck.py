"""Every command line every shipped recipe renders, run through the real argument parsers of the Dynamo
slurmserve's venv holds (the pinned one): all accepted; a planted fault of each kind rejected, named.

One interpreter start asks the parsers about all of them (slurmserve.node.flagcheck, as plan time runs it),
and one more asks about the vLLM workers' in the venv install.sh --test makes for them ($VENV/vllm: the
pinned vLLM's CPU build beside the pinned Dynamo), since vLLM's own definitions are what check its engine
flags. The sweep is `slow`: planning every recipe on every hosts file and importing every parser takes
3-4 s here, importing vLLM about 10 s more.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from slurmserve.config.recipe import builtin_recipe_names, load_recipe
from slurmserve.resources import PACKAGE_DIR

from ..conftest import plan_of
from ..helpers import VLLM_PYTHON
from ..render.test_render import EXAMPLE_HOSTS, fits

FLAGCHECK = PACKAGE_DIR / "node" / "flagcheck.py"
DYNAMO = importlib.metadata.version("ai-dynamo")
PLANTED = "planted"  # the recipe label of a planted fault's command
KV = "frontend.router_mode=kv"
# Shipped recipes whose engine config turns off TensorRT-LLM's block reuse: router_mode kv is refused for
# them (tests/config/test_kv_routing.py), so only their rehearsal is asked under it.
KV_REFUSED = {"gpt-oss-120b-agg", "gpt-oss-120b-sla-pools"}

# (what is planted, into the first process of which module, the flag, the closest flag the parser offers)
FAULTS = [
    ("a Dynamo flag the 1.6.1 frontend dropped", "dynamo.frontend", "--router-reset-states", None),
    ("a misspelt TensorRT-LLM worker flag", "dynamo.trtllm", "--max-num-tokenz", "--max-num-tokens"),
    ("a Dynamo vLLM flag 1.6.1 dropped", "dynamo.vllm", "--is-prefill-worker", None),
    ("a misspelt vLLM engine flag", "dynamo.vllm", "--gpu-memory-utilizatoin", "--gpu-memory-utilization"),
    ("a misspelt mock worker flag", "dynamo.mocker", "--speedup-ratioo", "--speedup-ratio"),
    ("a misspelt local router flag", "dynamo.router", "--router-temprature", "--router-temperature"),
    ("a bogus global router flag", "dynamo.global_router", "--global-router-mode", None),
    ("a misspelt planner flag", "dynamo.planner", "--conifg", "--config"),
]


def planned_cases() -> list[tuple[str, str, list[str]]]:
    """(recipe, hosts, --set) for every shipped recipe on every example hosts file it fits, and a rehearsal
    (the mock engine in the same placement) of each TensorRT-LLM and vLLM one; each also under KV routing."""
    cases = []
    for recipe in builtin_recipe_names():
        engines = [[], ["engine=mocker"]] if load_recipe(recipe).engine != "mocker" else [[]]
        variants = [[*sets, *routing] for sets in engines for routing in ([], [KV])]
        variants = [sets for sets in variants if not (recipe in KV_REFUSED and sets == [KV])]
        cases += [(recipe, hosts, sets) for hosts in EXAMPLE_HOSTS if fits(recipe, hosts) for sets in variants]
    return cases


def commands_of(recipe: str, hosts: str, sets: list[str]) -> list[dict]:
    label = f"{recipe}@{hosts.removesuffix('.yaml')}{''.join(f' --set {s}' for s in sets)}"
    plan = plan_of(recipe, hosts, *sets)
    return [
        asked | {"process": f"{label}: {asked['process']}"}
        for process in plan.processes
        if (asked := process.parser_input())
    ]


def planted(commands: list[dict]) -> list[dict]:
    """Each fault added to a copy of the first shipped command of its module."""
    first = {}
    for command in commands:
        first.setdefault(command["module"], command)
    return [
        {
            "process": f"{PLANTED} {flag}: {first[module]['process']}",
            "module": module,
            "argv": [*first[module]["argv"], flag, "1"],
        }
        for _, module, flag, _ in FAULTS
    ]


def flagcheck(python: Path | str, commands: list[dict], folder: Path) -> list[str]:
    """The rejection lines of one interpreter start of the checker."""
    listing = folder / f"commands-{len(commands)}.json"
    listing.write_text(json.dumps(commands))
    result = subprocess.run([str(python), str(FLAGCHECK), str(listing)], capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def asked(tmp_path_factory) -> tuple[list[dict], list[str]]:
    """The shipped commands and the planted ones, through the parsers: the vLLM workers' with the real vLLM,
    the rest in slurmserve's venv. (shipped, rejection lines)"""
    assert VLLM_PYTHON.exists(), f"no {VLLM_PYTHON}: ./install.sh --test makes the venv that checks vLLM's flags"
    shipped = [command for case in planned_cases() for command in commands_of(*case)]
    folder = tmp_path_factory.mktemp("flagcheck")
    commands = shipped + planted(shipped)
    on_vllm = [command for command in commands if command["module"] == "dynamo.vllm"]
    rest = [command for command in commands if command["module"] != "dynamo.vllm"]
    return shipped, flagcheck(sys.executable, rest, folder) + flagcheck(VLLM_PYTHON, on_vllm, folder)


@pytest.mark.slow
def test_every_process_of_every_shipped_recipe_is_asked(asked):
    shipped, _ = asked
    assert {command["module"] for command in shipped} == {module for _, module, _, _ in FAULTS}
    assert all(command["argv"] is not None for command in shipped), "a command without `-m MODULE` in it"
    asked_recipes = {command["process"].split("@")[0] for command in shipped}
    assert asked_recipes == set(builtin_recipe_names())


@pytest.mark.slow
def test_the_pinned_dynamo_accepts_every_shipped_command_line(asked):
    _, rejected = asked
    assert [line for line in rejected if not line.startswith(PLANTED)] == []


@pytest.mark.slow
@pytest.mark.parametrize("fault, module, flag, closest", FAULTS, ids=[fault for fault, *_ in FAULTS])
def test_a_planted_flag_is_rejected_naming_recipe_process_and_flag(asked, fault, module, flag, closest):
    _, rejected = asked
    lines = [line for line in rejected if line.startswith(f"{PLANTED} {flag}: ")]
    assert len(lines) == 1, rejected
    # e.g. "planted --router-reset-states: mocker-agg@local: frontend: Dynamo 1.6.1's dynamo.frontend rejects
    # --router-reset-states: Unknown arguments specified: ['--router-reset-states', '1']"
    recipe_and_process, _, verdict = lines[0].removeprefix(f"{PLANTED} {flag}: ").partition(f": Dynamo {DYNAMO}'s ")
    assert "@" in recipe_and_process and ": " in recipe_and_process, lines[0]
    named = f"{flag} (closest: {closest})" if closest else flag
    assert verdict.startswith(f"{module} rejects {named}: "), lines[0]


def test_the_checker_reads_its_commands_from_stdin():
    frontend = {"process": "frontend", "module": "dynamo.frontend", "argv": ["--bogus"]}
    etcd = {"process": "etcd", "module": "etcd", "argv": ["--whatever"]}  # not Dynamo's: not asked
    result = subprocess.run(
        [sys.executable, str(FLAGCHECK)], input=json.dumps([frontend, etcd]), capture_output=True, text=True
    )
    assert (result.returncode, result.stdout.count("\n")) == (1, 1), result.stdout + result.stderr
    assert result.stdout.startswith(f"frontend: Dynamo {DYNAMO}'s dynamo.frontend rejects --bogus: ")


def test_the_checker_parses_under_each_processs_environment():
    # Dynamo's flags default to DYN_* variables, read as its parser is built: a bad one stops the process too.
    bad_port = {"process": "frontend", "module": "dynamo.frontend", "argv": [], "env": {"DYN_HTTP_PORT": "eighty"}}
    plain = {"process": "frontend-after", "module": "dynamo.frontend", "argv": []}
    result = subprocess.run(
        [sys.executable, str(FLAGCHECK), json.dumps([bad_port, plain])], capture_output=True, text=True
    )
    assert result.stdout.splitlines() == [
        f"frontend: Dynamo {DYNAMO}'s dynamo.frontend rejects its command line and environment: "
        "ValueError: invalid literal for int() with base 10: 'eighty'"
    ]


def test_the_checker_says_when_it_cannot_ask(tmp_path):
    unreadable = subprocess.run(
        [sys.executable, str(FLAGCHECK), str(tmp_path / "missing.json")], capture_output=True, text=True
    )
    assert unreadable.returncode == 2 and "flagcheck cannot run: FileNotFoundError" in unreadable.stderr
    # An interpreter without Dynamo (this one without its site-packages): exit 2, not a rejection.
    frontend = {"process": "frontend", "module": "dynamo.frontend", "argv": []}
    no_dynamo = subprocess.run(
        [sys.executable, "-S", str(FLAGCHECK), json.dumps([frontend])], capture_output=True, text=True
    )
    assert no_dynamo.returncode == 2 and "No module named 'dynamo'" in no_dynamo.stderr, no_dynamo.stderr


def test_without_vllm_dynamos_own_vllm_flags_are_still_checked_and_the_rest_said_unchecked():
    """slurmserve's venv has no vLLM (it runs on GPU machines): a stand-in parser takes vLLM's flags."""
    worker = ["--model", "m", "--tensor-parallel-size", "4", "--gpu-memory-utilizatoin", "0.9"]
    commands = [
        {"process": "decode-0", "module": "dynamo.vllm", "argv": [*worker, "--disaggregation-mode", "decod"]},
        {"process": "agg-0", "module": "dynamo.vllm", "argv": worker},
    ]
    result = subprocess.run([sys.executable, str(FLAGCHECK), json.dumps(commands)], capture_output=True, text=True)
    assert result.stdout.splitlines() == [
        f"decode-0: Dynamo {DYNAMO}'s dynamo.vllm rejects --disaggregation-mode: dynamo.vllm: error: argument "
        "--disaggregation-mode: invalid choice: 'decod' (choose from 'pd', 'agg', 'prefill', 'decode', 'encode')"
    ]
    assert "vLLM's engine flags are not" in result.stderr


def test_the_checker_stands_alone():
    """It runs where slurmserve is not installed: the standard library and Dynamo only."""
    assert "slurmserve" not in {
        line.split()[1].split(".")[0]
        for line in FLAGCHECK.read_text().splitlines()
        if line.startswith(("import ", "from "))
    }
