"""Run directories: everything a deployment needs to be inspected, or torn down, from a new shell.

`~/.slurmserve/runs/<run>/` (or `$SLURMSERVE_HOME/runs/<run>/`) holds the resolved recipe and hosts,
plan.json, the rendered script, logs/, pids/ and events.jsonl. A hosts file may put runs elsewhere
(`run_root`, on the shared filesystem for Slurm); the home folder then keeps a link to it.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import UserError
from .plan import Plan


def slurmserve_home() -> Path:
    return Path(os.environ.get("SLURMSERVE_HOME", "~/.slurmserve")).expanduser()


def runs_root() -> Path:
    return slurmserve_home() / "runs"


def new_run_name(recipe: str) -> str:
    return f"{recipe}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def run_dir_for(run_name: str, run_root: str | None) -> Path:
    return (Path(run_root).expanduser() if run_root else runs_root()) / run_name


@dataclass
class RunDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def plan(self) -> Plan:
        return Plan.model_validate_json((self.path / "plan.json").read_text())

    def log_path(self, process: str) -> Path:
        return self.path / self.plan().process(process).log

    def pid(self, process: str) -> int | None:
        pid_file = self.path / "pids" / f"{process}.pid"
        return int(pid_file.read_text()) if pid_file.exists() else None

    def handle(self) -> dict:
        """What the backend needs to find the deployment again (a Slurm job id, ...)."""
        path = self.path / "handle.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def save_handle(self, handle: dict) -> None:
        self._save_json("handle.json", handle)

    def supervisor_state(self) -> dict | None:
        """The supervisor's latest picture of the deployment (state.json), if it has written one."""
        path = self.path / "state.json"
        return json.loads(path.read_text()) if path.exists() else None

    def save_supervisor_state(self, state: dict) -> None:
        self._save_json("state.json", state)

    def _save_json(self, name: str, value: dict) -> None:
        temporary = self.path / f"{name}.tmp"
        temporary.write_text(json.dumps(value, indent=2) + "\n")
        temporary.replace(self.path / name)  # atomic: a reader never sees half a file

    def record(self, event: str, **fields) -> None:
        """Append one event to events.jsonl (the deployment's history; never rewritten)."""
        entry = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "event": event, **fields}
        with open(self.path / "events.jsonl", "a") as log:
            log.write(json.dumps(entry) + "\n")

    def events(self) -> list[dict]:
        path = self.path / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    @property
    def cancel_requested(self) -> bool:
        """`slurmserve cancel` has begun: nothing may be restarted any more."""
        return any(event["event"] in ("cancel requested", "cancelled") for event in self.events())

    @property
    def cancelled(self) -> bool:
        return any(event["event"] == "cancelled" for event in self.events())

    @property
    def ended(self) -> bool:
        """Cancelled, or failed and stopped by submit: it holds no ports any more."""
        return any(event["event"] in ("cancelled", "failed") for event in self.events())


def create_run(plan: Plan) -> RunDir:
    """Make the run directory (refusing to reuse one) and link it from the home folder when it lives elsewhere."""
    path = Path(plan.run_dir)
    try:
        path.mkdir(parents=True)
        (path / "logs").mkdir()
        (path / "pids").mkdir()
    except FileExistsError:
        raise UserError(f"--name {plan.run_name}: a run of that name already exists at {path}") from None
    link = runs_root() / plan.run_name
    if link != path:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    run = RunDir(path)
    # The plan first: from here on `status` and `cancel` can handle the run, even if the CLI dies.
    (path / "plan.json").write_text(plan.model_dump_json(indent=2) + "\n")
    run.record("created", recipe=plan.recipe, backend=plan.backend)
    return run


def open_run(name: str) -> RunDir:
    path = runs_root() / name
    if not (path / "plan.json").exists():
        known = ", ".join(run.name for run in list_runs()[-5:]) or "none yet"
        raise UserError(f"run {name!r}: not found under {runs_root()} (recent runs: {known})")
    return RunDir(path.resolve())


def list_runs() -> list[RunDir]:
    """Every run, oldest first."""
    root = runs_root()
    if not root.is_dir():
        return []
    runs = [RunDir(entry.resolve()) for entry in root.iterdir() if (entry / "plan.json").exists()]
    return sorted(runs, key=lambda run: (run.path / "plan.json").stat().st_mtime)


def live_runs() -> list[RunDir]:
    return [run for run in list_runs() if not run.ended]
