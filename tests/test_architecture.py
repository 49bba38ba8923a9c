"""The package's shape: layers whose imports run only down, no import cycle (imports inside functions included),
modules and functions of a readable length, only the CLI prints,
no code line over 120 characters, and the run directory's records are typed and survive torn writes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from slurmserve.runs import EventKind, Handle, RunDir, SupervisorState

PACKAGE = Path(__file__).resolve().parent.parent / "slurmserve"
# Entry points whose output is a log or a terminal's: the CLI (a package) and the `python -m` programs run on
# nodes (the node check among them, run as a plain script).
MAY_PRINT = {"slurmserve.cli", "slurmserve.__main__"}
MAY_PRINT_PACKAGES = ("slurmserve.cli.", "slurmserve.node.")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its body (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from .x import name`: the module is x
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def test_no_import_cycles():
    found = modules()
    graph = {name: imported_modules(name, path, set(found)) for name, path in found.items()}
    # A package's own __init__ is imported with each of its modules; an edge into it is no cycle of ours
    # unless the __init__ imports back, which it would show as its own edge.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


# The layers, bottom to top. A module imports its own package and the packages of lower layers, never a
# package of its own layer or of one above: a layer can be read, tested and changed knowing only those below.
LAYERS: list[tuple[str, ...]] = [
    ("slurmserve", "errors"),  # the package's version and its errors
    ("resources", "private", "waiting", "interrupts"),  # shipped files, private writes, deadlines, signals
    ("config",),  # the recipe and the hosts file, validated
    ("transport",),  # reaching a node: the one node runner, HTTP, procfs, Slurm's commands
    ("planning",),  # the plan: a pure value
    ("runs",),  # the run directory: its layout, records and events
    ("observability",),  # targets, live metrics, Prometheus, Grafana, the supervisor's own metrics
    ("health", "hardware", "kvpath", "modelcache", "render"),  # what backends compose
    ("backends",),  # local, SSH and Slurm: every backend difference
    ("interop",),  # Kubernetes manifests (DynamoGraphDeployment) as recipes, and back
    ("runtime", "bench"),  # the deployment as it runs, and measuring it
    ("deploy",),  # the verbs
    ("cli", "node"),  # entry points: the user's and the nodes'
    ("__main__",),  # `python -m slurmserve`: the CLI
]
LAYER_OF = {package: number for number, packages in enumerate(LAYERS) for package in packages}


def package_of(module: str) -> str:
    """`slurmserve.planning.plan` -> `planning`; the root package and top-level modules name themselves."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import that runs sideways or up: "importer -> imported (layer a -> layer b)"."""
    found = []
    for importer, imported in graph.items():
        source = package_of(importer)
        for target in sorted(imported):
            destination = package_of(target)
            if destination == source or destination == "slurmserve":
                continue
            if LAYER_OF[destination] >= LAYER_OF[source]:
                found.append(f"{importer} -> {target} (layer {LAYER_OF[source]} -> {LAYER_OF[destination]})")
    return found


def test_every_package_has_a_layer():
    unplaced = sorted({package_of(name) for name in modules()} - set(LAYER_OF))
    assert not unplaced, f"packages with no layer in LAYERS: {unplaced}"


def test_imports_run_only_down_the_layers():
    found = modules()
    graph = {name: imported_modules(name, path, set(found)) for name, path in found.items()}
    violations = layer_violations(graph)
    assert not violations, "imports that run sideways or up:\n" + "\n".join(violations)


def test_the_layer_check_names_an_import_that_runs_up():
    graph = {"slurmserve.planning.planner": {"slurmserve.backends.base", "slurmserve.config.recipe"}}
    assert layer_violations(graph) == ["slurmserve.planning.planner -> slurmserve.backends.base (layer 4 -> 8)"]
    assert layer_violations({"slurmserve.render.files": {"slurmserve.health.decisions"}}) == [
        "slurmserve.render.files -> slurmserve.health.decisions (layer 7 -> 7)"
    ]


MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def test_no_module_over_500_lines():
    long = {name: lines for name, path in modules().items() if (lines := len(path.read_text().splitlines())) > 500}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_60_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_only_the_cli_and_the_node_programs_print():
    printing = []
    for name, path in modules().items():
        if name in MAY_PRINT or name.startswith(MAY_PRINT_PACKAGES):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                printing.append(f"{name}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr in ("stdout",) and getattr(node.value, "id", "") == "sys":
                printing.append(f"{name}:{node.lineno} (sys.stdout)")
    assert not printing, f"library code printing: {printing}"


BACKEND_NAMES = {"slurm", "ssh", "local"}
# Where a backend's name may decide what the code does: the backends themselves, and the CLI choosing one.
KNOWS_BACKEND_NAMES = ("backends/", "cli.py")


def names_a_backend(node: ast.AST) -> bool:
    """A backend's name as a string constant, or a tuple, list or set literal holding one."""
    if isinstance(node, ast.Constant):
        return node.value in BACKEND_NAMES
    return isinstance(node, ast.Tuple | ast.List | ast.Set) and any(names_a_backend(item) for item in node.elts)


def backend_switches(source: str) -> list[int]:
    """Lines that branch on a backend's name: a comparison with one (`backend == "slurm"`, `in ("ssh",
    "slurm")`), or a dict literal keyed by them (`{"slurm": ..., "local": ...}[backend]`)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(map(names_a_backend, [node.left, *node.comparators])):
            lines.append(node.lineno)
        if isinstance(node, ast.Dict) and any(key is not None and names_a_backend(key) for key in node.keys):
            lines.append(node.lineno)
    return lines


def test_backend_switches_finds_comparisons_and_dicts_keyed_by_backend_names():
    assert backend_switches('if plan.backend == "slurm": pass') == [1]
    assert backend_switches('x = "local" != hosts.backend') == [1]
    assert backend_switches('ok = hosts.backend in ("ssh", "slurm")') == [1]
    assert backend_switches('name = {"slurm": "a.sbatch", "ssh": "driver.sh"}[backend]') == [1]
    assert backend_switches('x = mode == "agg"; y = {"prefill": 1}; Handle(backend="slurm")') == []


def test_only_the_backends_and_the_cli_branch_on_a_backends_name():
    """Everything else asks a backend's traits (planning.traits), handed down from `backends.traits_for`."""
    switches = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if not str(path.relative_to(PACKAGE)).startswith(KNOWS_BACKEND_NAMES)
        for line in backend_switches(path.read_text())
    ]
    assert not switches, f"branching on a backend's name outside slurmserve/backends/: {switches}"


PROCESS_MODULES = {"subprocess", "fabric", "invoke", "paramiko"}
COMMAND_WORDS = {"srun", "ssh", "sbatch", "scancel", "squeue", "sacct", "scontrol", "sinfo"}
MAY_RUN_COMMANDS = ("slurmserve.transport", "slurmserve.node")  # the one node runner, and the node programs


def literal_parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}


def used_as_a_name(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """A word used as a name, not run: in a Literal[...] annotation, compared with (`backend == "ssh"`,
    `in ("ssh", "slurm")`), a dict key, a set's member, or a `backend=` argument."""
    parent = parents.get(node)
    while isinstance(parent, (ast.Tuple, ast.List, ast.Set)):  # `in ("ssh", "slurm")`, `Literal["a", "ssh"]`
        if isinstance(parent, ast.Set):  # a set of words names things: a command's words are in order
            return True
        node, parent = parent, parents.get(parent)
    if isinstance(parent, ast.Subscript) and getattr(parent.value, "id", None) == "Literal":
        return True
    if isinstance(parent, ast.Compare):
        return True
    if isinstance(parent, ast.Dict) and node in parent.keys:
        return True
    return isinstance(parent, ast.keyword) and parent.arg == "backend"


def starts_a_command(node: ast.AST) -> bool:
    if isinstance(node, ast.JoinedStr) and node.values:
        node = node.values[0]
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(("srun ", "ssh "))


def process_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every import of a process or SSH library and every command word used as a command."""
    parents = literal_parents(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] in PROCESS_MODULES]
        elif (
            isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in PROCESS_MODULES
        ):
            found.append((node.lineno, f"from {node.module} import"))
        elif isinstance(node, ast.Constant) and node.value in COMMAND_WORDS and not used_as_a_name(node, parents):
            found.append((node.lineno, repr(node.value)))
        elif starts_a_command(node) and not isinstance(parents.get(node), ast.JoinedStr):
            found.append((node.lineno, "a command line starting " + repr(ast.unparse(node)[:20])))
    return found


def test_only_transport_and_node_programs_run_commands():
    """subprocess, fabric, invoke and paramiko, and the words srun, ssh, sbatch, scancel, squeue, sacct,
    scontrol and sinfo used as commands, belong to transport/ (the one node runner) and node/ alone."""
    found = [
        f"{name}:{line} {what}"
        for name, path in modules().items()
        if not name.startswith(MAY_RUN_COMMANDS)
        for line, what in process_uses(ast.parse(path.read_text()))
    ]
    assert not found, found


def test_the_command_check_sees_commands_and_lets_names_be():
    caught = process_uses(
        ast.parse(
            "import subprocess\nfrom fabric import Connection\ndef f():\n    import paramiko.client\n"
            "run(['srun', '-N1'])\nline = f'ssh {host} true'\nwhich('sbatch')\n"
        )
    )
    assert sorted(line for line, _ in caught) == [1, 2, 4, 5, 6, 7]
    names = (
        "backend: Literal['slurm', 'ssh']\nif b == 'ssh' or b in ('ssh', 'slurm'): x = {'ssh': 1}\nH(backend='ssh')\n"
    )
    assert process_uses(ast.parse(names)) == []


def test_no_code_line_over_120_characters():
    long = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if len(line) > 120
    ]
    assert not long, long


def test_a_torn_event_line_is_skipped_not_fatal(tmp_path):
    run = RunDir(tmp_path)
    run.record(EventKind.CREATED, recipe="r", backend="local")
    with open(tmp_path / "events.jsonl", "a") as events:
        events.write('{"version": 1, "time": "2026-11-30T00:00:00')  # a writer cut short
    assert [event.event for event in run.events()] == [EventKind.CREATED]
    run.record(EventKind.CANCELLED)  # after the torn line, on a line of its own
    assert [event.event for event in run.events()] == [EventKind.CREATED, EventKind.CANCELLED]


def test_records_carry_a_version_and_bad_files_read_as_absent(tmp_path):
    run = RunDir(tmp_path)
    run.save_handle(Handle(backend="slurm", job_id="42"))
    assert json.loads((tmp_path / "handle.json").read_text())["version"] == 1
    assert run.handle() == Handle(backend="slurm", job_id="42")
    (tmp_path / "state.json").write_text('{"verdict": "rea')
    assert run.supervisor_state() is None
    assert SupervisorState.model_fields["version"].default == 1


def test_a_half_written_pid_file_reads_as_no_pid(tmp_path):
    (tmp_path / "pids").mkdir()
    (tmp_path / "pids" / "decode-0.pid").write_text("")
    assert RunDir(tmp_path).pid("decode-0") is None
    (tmp_path / "pids" / "decode-0.pid").write_text("123\n")
    assert RunDir(tmp_path).pid("decode-0") == 123


def linter(*argv: str) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).parent / argv[0]
    return subprocess.run([str(tool), *argv[1:]], capture_output=True, text=True, cwd=PACKAGE.parent, timeout=300)


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "slurmserve", "tests", "benchmarks", "scripts"),
        ("ruff", "format", "--check", "slurmserve", "tests", "benchmarks", "scripts"),
        ("mypy",),
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_linters_are_clean(command):
    """ruff (lint and format, lines up to 120) and mypy, as configured in pyproject.toml."""
    result = linter(*command)
    assert result.returncode == 0, result.stdout + result.stderr
