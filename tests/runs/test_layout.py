"""The run directory's names have one owner (runs/layout.py): they are those an older slurmserve wrote,
and no other module of the package spells them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from slurmserve.runs import RunDir, RunPaths, create_run
from slurmserve.runs.layout import client_record_of, pid_record_of

from ..conftest import plan_of

PACKAGE = Path(__file__).resolve().parents[2] / "slurmserve"
OLD_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "run-2a7c08e" / "old-run"
# A string that names a file of a run directory, or a path in one of its folders; a folder's bare name
# counts where a path is joined with it (`run.path / "pids"`): alone it is also a verb's or a step's name.
RUN_DIR_FILE = re.compile(
    r"^(plan\.json|events\.jsonl|state\.json|handle\.json|recipe\.yaml|hosts\.yaml|bench\.lock|aiperf\.bench|flags-accepted\.json"
    r"|(pids|logs|requests|preflight|prometheus)/.*)$"
)
RUN_DIR_FOLDER = re.compile(r"^(pids|logs|requests|preflight|prometheus|bench)$")
# The planner names the plan's own files (a layer below runs/, which imports those names from there).
PLANNER = {"planning/plan.py", "planning/planner.py"}


def test_an_older_run_directory_is_where_the_layout_says():
    paths = RunPaths(OLD_RUN)
    for path in (paths.plan, paths.events, paths.state, paths.recipe, paths.hosts, paths.targets):
        assert path.is_file(), path
    assert paths.pid_record("frontend").is_file() and paths.helper_log("frontend").is_file()
    assert RunDir(OLD_RUN).paths == paths


def test_a_new_run_directory_has_what_the_layout_makes_with_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURMSERVE_HOME", str(tmp_path / "home"))
    plan = plan_of("mocker-agg", "local.yaml").model_copy(update={"run_dir": str(tmp_path / "run")})
    paths = create_run(plan).paths
    assert paths.plan.is_file() and paths.events.is_file() and paths.logs.is_dir() and paths.pids.is_dir()
    assert (paths.folder.stat().st_mode & 0o777, paths.pids.stat().st_mode & 0o777) == (0o700, 0o700)


def test_paths_on_a_node_are_spelt_as_the_plan_spells_its_run_directory():
    assert client_record_of("/shared/runs/r") == "/shared/runs/r/pids/aiperf.bench"
    assert pid_record_of("/shared/runs/r", "decode-0") == "/shared/runs/r/pids/decode-0.pid"


def test_only_the_layout_spells_the_run_directorys_names():
    spelt = []
    for path in PACKAGE.rglob("*.py"):
        where = str(path.relative_to(PACKAGE))
        if where == "runs/layout.py" or where in PLANNER:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                joined = node.right
                if isinstance(joined, ast.Constant) and RUN_DIR_FOLDER.match(str(joined.value)):
                    spelt.append(f"{where}:{node.lineno}: / {joined.value!r}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and RUN_DIR_FILE.match(node.value):
                spelt.append(f"{where}:{node.lineno}: {node.value!r}")
    assert not spelt, spelt
