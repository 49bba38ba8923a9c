"""The node preflight: does this node have what the plan needs here, before anything starts?

    python node-preflight.py NEEDS_JSON [--node NAME] [--part nodes|container]

NEEDS_JSON is the run's preflight.json (slurmserve.planning.needs): per node, the interpreter and the
modules it must import, programs, paths, writable folders, free ports and visible GPUs. The node is
SLURMD_NODENAME's (a task of the job's preflight step) unless --node names it. Prints nothing and exits
0 when all is there; else prints one line, `NODE: what it lacks; ...`, and exits 1.

Standard library only, and no import of slurmserve: the run directory holds a copy, which a
container's own interpreter runs as a plain script, and the SSH backend sends its source to a host.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Any

GPU_LISTING_TIMEOUT_S = 10
# Dynamo's TRT-LLM and vLLM parsers import their engine, which can take minutes on a busy node: still far
# less than a model load that a rejected flag would end.
FLAGCHECK_TIMEOUT_S = 600


def module_problem(python: str, module: str, packages: list[str]) -> str | None:
    """Why `module` would not import, found without importing it (an engine's import takes minutes)."""
    for name in [module, *packages]:
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError) as error:  # its parent package is missing, or is not a package
            return f"{module} cannot be imported by {python} ({error})"
        if found is None:
            return f"{module} cannot be imported by {python} (No module named {name!r})"
    return None


def program_found(program: str) -> bool:
    if program.startswith("/"):
        return os.path.isfile(program) and os.access(program, os.X_OK)
    return shutil.which(program) is not None


def writable(folder: str) -> str | None:
    """None when a file can be made in the folder (or the folder made, where it is yet to be), else why
    not (a read-only or missing mount)."""
    existing = folder
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    try:
        handle, path = tempfile.mkstemp(dir=existing, prefix=".preflight-")
    except OSError as error:
        return error.strerror or str(error)
    os.close(handle)
    os.unlink(path)
    return None


def port_free(address: str, port: int) -> bool:
    """Whether a process could listen on the port now (SO_REUSEADDR, as Dynamo's servers bind: a socket
    of a run that just ended, in TIME_WAIT, does not hold it; a listener does). The same as
    transport.sockets.port_free: this script runs on nodes where slurmserve is not installed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def visible_gpus() -> int | None:
    """GPUs nvidia-smi lists here (None: no nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=GPU_LISTING_TIMEOUT_S
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in listing.splitlines())


def dynamo_version() -> str | None:
    for distribution in ("ai-dynamo", "ai-dynamo-runtime"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def accepted_before(python: str, record: str | None) -> bool:
    """Whether `python`, with the Dynamo it has now, accepted the command lines before submit (the record
    submit wrote): asking its parsers again would give the same answer."""
    if not record:
        return False
    try:
        with open(record) as file:
            accepted = json.load(file)
    except (OSError, ValueError):
        return False
    if os.path.abspath(accepted.get("python") or "") != os.path.abspath(python):
        return False
    return accepted.get("dynamo") in (None, dynamo_version())


def flag_problems(python: str, commands: list[dict[str, Any]], flagcheck: str) -> list[str]:
    """Dynamo's own parsers, in `python`, on the command lines that start here (slurmserve.node.flagcheck):
    each rejected one, naming its process, the flag and this Dynamo's version."""
    try:
        asked = subprocess.run(
            [python, flagcheck], input=json.dumps(commands), capture_output=True, text=True, timeout=FLAGCHECK_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return [f"Dynamo's argument parsers did not answer within {FLAGCHECK_TIMEOUT_S} s"]
    if asked.returncode == 1:
        return asked.stdout.splitlines()
    if asked.returncode != 0:
        return [f"Dynamo's argument parsers could not be asked: {' '.join(asked.stderr.split())[-300:]}"]
    return []


def problems(needs: dict[str, Any], flagcheck: str | None = None, accepted: str | None = None) -> list[str]:
    """What the node lacks, in words: empty when it has everything. With `flagcheck` (its script), a flag
    the node's Dynamo rejects counts too, unless `accepted` records that this interpreter accepted them."""
    python = needs["python"]
    found = [
        problem
        for module, packages in needs.get("modules", {}).items()
        if (problem := module_problem(python, module, packages))
    ]
    commands = needs.get("commands", [])
    # Only where Dynamo imports: without it, the line above already says what is wrong.
    if commands and flagcheck and not found and not accepted_before(python, accepted):
        found += flag_problems(python, commands, flagcheck)
    found += [
        f"{program} not found ({why})"
        for program, why in needs.get("programs", {}).items()
        if not program_found(program)
    ]
    found += [
        f"{what} {path} does not exist" for path, what in needs.get("paths", {}).items() if not os.path.exists(path)
    ]
    found += [
        f"{what} {folder} is not writable ({why})"
        for folder, what in needs.get("writable", {}).items()
        if (why := writable(folder))
    ]
    address = needs["address"]
    found += [
        f"port {port} ({label}) is in use on {address}"
        for label, port in needs.get("ports", {}).items()
        if not port_free(address, port)
    ]
    wanted = needs.get("gpus", 0)
    if wanted:
        count = visible_gpus()
        if count is None:
            found.append(f"no nvidia-smi: the plan needs {wanted} GPUs here")
        elif count < wanted:
            found.append(f"{count} GPUs visible, the plan needs {wanted}")
    return found


def report(needs: dict[str, Any], flagcheck: str | None = None, accepted: str | None = None) -> str | None:
    """One line naming the node and all it lacks, or None."""
    lacking = problems(needs, flagcheck, accepted)
    if not lacking:
        return None
    place = f" ({needs['place']})" if needs.get("place") else ""
    return f"{needs['node']}{place}: {'; '.join(lacking)}"


def this_node(names: dict[str, Any]) -> str | None:
    """This node's name among the plan's: its host name (as Slurm names nodes by default), else the
    task's SLURMD_NODENAME (in Slurm's OCI containers that is the batch node's, not this one's)."""
    hostname = socket.gethostname()
    for name in (hostname, hostname.split(".")[0]):
        if name in names:
            return name
    return os.environ.get("SLURMD_NODENAME")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="node-preflight.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("needs", help="the run's preflight.json, or one node's needs as JSON text")
    parser.add_argument("--node", help="this node's name in the plan (default: its host name, else SLURMD_NODENAME)")
    parser.add_argument("--part", choices=("nodes", "container"), default="nodes")
    parser.add_argument(
        "--save-gpus",
        metavar="DIR",
        help="write the GPUs Slurm granted here (CUDA_VISIBLE_DEVICES) to DIR/HOSTNAME.gpus, for tasks in "
        "Slurm's OCI containers, which do not get the variable",
    )
    parser.add_argument(
        "--flagcheck",
        metavar="SCRIPT",
        help="slurmserve.node.flagcheck as a script: ask the node's Dynamo about the command lines that start here",
    )
    parser.add_argument(
        "--accepted",
        metavar="RECORD",
        help="which interpreter and Dynamo accepted those command lines before submit: under the same, not asked again",
    )
    args = parser.parse_args(argv)
    if args.save_gpus:
        with open(os.path.join(args.save_gpus, f"{socket.gethostname()}.gpus"), "w") as grants:
            grants.write(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    if args.needs.startswith("{"):
        needs = json.loads(args.needs)
    else:
        with open(args.needs) as file:
            part = json.load(file)[args.part]
        needs = part.get(args.node or this_node(part))
        if needs is None:
            return 0  # nothing of this part runs on this node
    line = report(needs, args.flagcheck, args.accepted)
    if line:
        print(line, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
