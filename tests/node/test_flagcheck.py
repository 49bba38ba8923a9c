"""Every command line every shipped recipe renders, run through the real argument parsers of the Dynamo
slurmserve's venv holds (the pinned one): all accepted; a planted fault of each kind rejected, named.

One interpreter start asks the parsers about all of them (slurmserve.node.flagcheck, as plan time runs it).
The sweep is `slow`: planning every recipe on every hosts file and importing every parser takes 3-4 s here.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

from slurmserve.config.recipe import builtin_recipe_names, load_recipe
from slurmserve.resources import PACKAGE_DIR

from ..conftest import plan_of
from ..render.test_render import EXAMPLE_HOSTS, fits

FLAGCHECK = PACKAGE_DIR / "node" / "flagcheck.py"
DYNAMO = importlib.metadata.version("ai-dynamo")
PLANTED = "planted"  # the recipe label of a planted fault's command

# (what is planted, into the first process of which module, the flag, the closest flag the parser offers)
FAULTS = [
    ("a Dynamo flag the 1.6.1 frontend dropped", "dynamo.frontend", "--router-reset-states", None),
    ("a misspelt TensorRT-LLM worker flag", "dynamo.trtllm", "--max-num-tokenz", "--max-num-tokens"),
    ("a misspelt mock worker flag", "dynamo.mocker", "--speedup-ratioo", "--speedup-ratio"),
    ("a misspelt local router flag", "dynamo.router", "--router-temprature", "--router-temperature"),
    ("a bogus global router flag", "dynamo.global_router", "--global-router-mode", None),
]


def planned_cases() -> list[tuple[str, str, list[str]]]:
    """(recipe, hosts, --set) for every shipped recipe on every example hosts file it fits, and a rehearsal
    (the mock engine in the same placement) of each TensorRT-LLM one."""
    cases = []
    for recipe in builtin_recipe_names():
        rehearsal = [[], ["engine=mocker"]] if load_recipe(recipe).engine == "trtllm" else [[]]
        cases += [(recipe, hosts, sets) for hosts in EXAMPLE_HOSTS if fits(recipe, hosts) for sets in rehearsal]
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


@pytest.fixture(scope="module")
def asked(tmp_path_factory) -> tuple[list[dict], list[str]]:
    """The shipped commands and the planted ones, through the parsers at once: (shipped, rejection lines)."""
    shipped = [command for case in planned_cases() for command in commands_of(*case)]
    listing = tmp_path_factory.mktemp("flagcheck") / "commands.json"
    listing.write_text(json.dumps(shipped + planted(shipped)))
    result = subprocess.run([sys.executable, str(FLAGCHECK), str(listing)], capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    return shipped, result.stdout.splitlines()


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


def test_the_checker_stands_alone():
    """It runs where slurmserve is not installed: the standard library and Dynamo only."""
    assert "slurmserve" not in {
        line.split()[1].split(".")[0]
        for line in FLAGCHECK.read_text().splitlines()
        if line.startswith(("import ", "from "))
    }
