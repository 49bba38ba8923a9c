"""A run directory (`RunDir`): reading and writing its records and events; making, finding and listing
run directories under the home folder."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ..config.fields import check_identifier
from ..errors import UserError
from ..planning.plan import Plan
from ..private import DIR_MODE, FILE_MODE, make_private_dir, write_private
from ..transport.procfs import read_pid_record
from .events import RUN_EVENT, Created, EventKind, RunEvent, event_line, event_of
from .layout import MADE_WITH_THE_RUN, RESTART_REQUEST_PREFIX, RunPaths
from .records import HELPERS, PROCESS_RECORDS, Handle, SupervisorState

Model = TypeVar("Model", bound=BaseModel)


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
    _plan: Plan | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.path)

    def plan(self) -> Plan:
        """The run's plan, read once (plan.json does not change once the run exists)."""
        if self._plan is None:
            try:
                self._plan = Plan.model_validate_json(self.paths.plan.read_bytes())
            except ValidationError:  # damaged, written by another version, or not even UTF-8
                raise UserError(
                    f"run {self.name}: {self.paths.plan} is damaged (not a plan this slurmserve can read)"
                ) from None
        return self._plan

    def process_names(self) -> list[str]:
        """The run's processes: its plan's; when plan.json cannot be read, every one that a PID record or the
        handle names (whatever started left one), so that a run that started anything can still be stopped."""
        try:
            return [process.name for process in self.plan().processes]
        except UserError:
            records = (path for path in self.paths.pids.glob("*") if path.suffix in PROCESS_RECORDS)
            recorded = {path.stem for path in records} - set(HELPERS)
            handle = self.handle()
            return sorted(recorded | set(handle.processes if handle else ()))

    def backend_name(self) -> str | None:
        """Which backend runs it: the plan's, else the handle's, else the saved hosts file's (written before
        anything starts); None when none of them says (then nothing was started)."""
        try:
            return self.plan().backend
        except UserError:
            pass
        handle = self.handle()
        if handle is not None:
            return handle.backend
        try:
            saved = yaml.safe_load(self.paths.hosts.read_text())
        except (OSError, ValueError, yaml.YAMLError):  # unreadable, not UTF-8, not YAML
            return None
        backend = saved.get("backend") if isinstance(saved, dict) else None
        return backend if isinstance(backend, str) else None

    def log_path(self, process: str) -> Path:
        return self.path / self.plan().process(process).log

    def pid(self, process: str) -> int | None:
        """The PID a launch script recorded for a process; None when there is none, or none whole yet."""
        record = self.pid_record(process)
        return record[0] if record else None

    def pid_record(self, process: str, suffix: str = "pid") -> tuple[int, str | None] | None:
        """(PID, its start time) from pids/NAME.pid ("PID START-TIME"; the start time may be missing)."""
        return read_pid_record(self.paths.pid_record(process, suffix))

    def preflight_report(self) -> list[str]:
        """What the job's node preflight found lacking, a line per node and place ("node2: ..."); each
        node's step output is preflight/NODE[@container].log, with a line only when something lacks."""
        lines = []
        for log in sorted(self.paths.preflight.glob("*.log")):
            node, _, place = log.stem.partition("@")
            text = " ".join(log.read_text(errors="replace").split())
            if text and not text.startswith(node):  # the check could not run at all: srun's words
                text = f"{node}{' (in the container)' if place else ''}: the preflight could not run: {text[-300:]}"
            lines += [text] if text else []
        return lines

    def save_targets(self, groups: list[dict[str, Any]]) -> None:
        """The deployment's Prometheus targets (file_sd), while it runs."""
        make_private_dir(self.paths.targets.parent)
        write_private(self.paths.targets, json.dumps(groups, indent=2) + "\n")

    def request_restart(self, process: str) -> None:
        """Ask the supervisor to start a running process afresh (requests/restart-NAME): it stops and
        restarts it in place, outside the restart budget (a benchmark's fresh caches, not a fault)."""
        make_private_dir(self.paths.requests)
        write_private(self.paths.restart_request(process), "")

    def restart_requests(self) -> list[str]:
        """The processes whose restart was asked for and is not yet done."""
        try:
            names = os.listdir(self.paths.requests)
        except FileNotFoundError:
            return []
        prefix = RESTART_REQUEST_PREFIX
        return sorted(name.removeprefix(prefix) for name in names if name.startswith(prefix))

    def restart_done(self, process: str) -> None:
        self.paths.restart_request(process).unlink(missing_ok=True)

    def request_scale(self, counts: dict[str, int]) -> None:
        """Ask the supervisor for these worker counts (role -> count), over what was asked before."""
        make_private_dir(self.paths.requests)
        write_private(self.paths.scale_request, json.dumps(self.scale_request() | counts) + "\n")

    def scale_request(self) -> dict[str, int]:
        """The worker counts asked so far (none: each role at its min)."""
        try:
            asked = json.loads(self.paths.scale_request.read_text())
        except (OSError, ValueError):
            return {}
        return {role: count for role, count in asked.items() if isinstance(count, int)}

    def _read(self, path: Path, model: type[Model]) -> Model | None:
        try:
            return model.model_validate_json(path.read_bytes())
        except OSError:  # not there (yet), or not ours to read
            return None
        except ValidationError:  # written by another version, or damaged (not even UTF-8): treated as absent
            return None

    def handle(self) -> Handle | None:
        """What the backend needs to find the deployment again (a Slurm job id, SSH process groups)."""
        return self._read(self.paths.handle, Handle)

    def save_handle(self, handle: Handle) -> None:
        write_private(self.paths.handle, handle.model_dump_json(indent=2) + "\n")

    def supervisor_state(self) -> SupervisorState | None:
        """The supervisor's latest picture of the deployment (state.json), if it has written one."""
        return self._read(self.paths.state, SupervisorState)

    def save_supervisor_state(self, state: SupervisorState) -> None:
        write_private(self.paths.state, state.model_dump_json(indent=2) + "\n")

    def record(self, event: RunEvent | EventKind, **fields: Any) -> None:
        """Append one event to events.jsonl (the deployment's history; never rewritten): a typed event, or
        a kind and its fields, checked against that kind's model."""
        line = event_line(event_of(event, fields) if isinstance(event, EventKind) else event)
        # One write(2) of the whole line, with O_APPEND: concurrent writers never interleave inside a line.
        descriptor = os.open(self.paths.events, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            size = os.fstat(descriptor).st_size
            if size and os.pread(descriptor, 1, size - 1) != b"\n":
                line = b"\n" + line  # a writer that died mid-line: ours starts a line of its own
            os.write(descriptor, line)
        finally:
            os.close(descriptor)

    def events(self) -> list[RunEvent]:
        """Every whole event so far; a line that is torn (being written, or cut by a crash) or damaged (not
        even UTF-8), or not an event of a kind and fields this version knows, is skipped."""
        try:
            lines = self.paths.events.read_bytes().splitlines()
        except OSError:  # none yet, or not ours to read
            return []
        events = []
        for line in lines:
            try:
                events.append(RUN_EVENT.validate_json(line))
            except ValidationError:
                continue
        return events

    def has_event(self, *kinds: EventKind) -> bool:
        return any(event.event in kinds for event in self.events())

    @property
    def cancel_requested(self) -> bool:
        """`slurmserve cancel` has begun: nothing may be restarted any more."""
        return self.has_event(EventKind.CANCEL_REQUESTED, EventKind.CANCELLED)

    @property
    def cancelled(self) -> bool:
        return self.has_event(EventKind.CANCELLED)

    def started_at(self) -> datetime:
        """When the run was created (its first event), in local time: the suffix it is set aside with."""
        created = next((event for event in self.events() if isinstance(event, Created)), None)
        if created is not None:
            return datetime.fromisoformat(created.time).astimezone()
        return datetime.fromtimestamp(self.paths.plan.stat().st_mtime)

    def last_active(self) -> float:
        """When the run last recorded anything (an event, the supervisor's state), as a timestamp."""
        records = (self.paths.events, self.paths.state, self.paths.plan)
        return max(path.stat().st_mtime for path in records if path.exists())

    @property
    def ended(self) -> bool:
        """Cancelled, or failed and stopped by submit: it holds no ports any more."""
        return self.has_event(EventKind.CANCELLED, EventKind.FAILED)


def create_run(plan: Plan) -> RunDir:
    """Make the run directory (refusing to reuse one) and link it from the home folder when it lives elsewhere."""
    path = Path(plan.run_dir)
    link = runs_root() / plan.run_name
    if link != path and taken(link):  # checked first: nothing made, nothing left behind
        raise UserError(f"--name {plan.run_name}: a run of that name already exists at {link.resolve()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=DIR_MODE)
        path.chmod(DIR_MODE)  # whatever the umask
        for folder in MADE_WITH_THE_RUN:
            make_private_dir(path / folder)
    except FileExistsError:
        raise UserError(f"--name {plan.run_name}: a run of that name already exists at {path}") from None
    if link != path:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    run = RunDir(path)
    # The plan first: from here on `status` and `cancel` can handle the run, even if the CLI dies.
    write_private(run.paths.plan, plan.model_dump_json(indent=2) + "\n")
    run.record(Created(recipe=plan.recipe, backend=plan.backend))
    return run


def taken(path: Path) -> bool:
    """Something has this name: a folder, a file, or a link (even one whose target is gone)."""
    return path.is_symlink() or path.exists()


def open_run(name: str) -> RunDir:
    path = runs_root() / check_identifier(name, "run")
    try:
        found = RunPaths(path).plan.exists()
    except OSError as error:  # a run directory of another user's
        raise UserError(f"run {name!r}: cannot be read ({unreadable_because(error)})") from None
    if not found:
        known = ", ".join(run.name for run in list_runs()[-5:]) or "none yet"
        raise UserError(f"run {name!r}: not found under {runs_root()} (recent runs: {known})")
    return RunDir(path.resolve())


def unreadable_because(error: OSError) -> str:
    """Why a run cannot be read, in a few words: "Permission denied: PATH"."""
    return f"{error.strerror or error}: {error.filename}"


@dataclass(frozen=True)
class UnreadableRun:
    """A run whose plan cannot be read: a run directory of another user's, or a damaged plan.json."""

    name: str
    reason: str


def scan_runs() -> tuple[list[RunDir], list[UnreadableRun]]:
    """Every run whose plan can be read, oldest first, and those whose plan cannot be: one run that
    cannot be read never hides the others."""
    root = runs_root()
    if not root.is_dir():
        return [], []
    runs: list[tuple[float, RunDir]] = []
    unreadable = []
    for entry in root.iterdir():
        try:
            if not RunPaths(entry).plan.exists():
                continue  # not a run (yet): plan.json is the first file a run gets
            run = RunDir(entry.resolve())
            run.plan()
            runs.append((run.paths.plan.stat().st_mtime, run))
        except OSError as error:
            unreadable.append(UnreadableRun(entry.name, unreadable_because(error)))
        except UserError:
            unreadable.append(UnreadableRun(entry.name, f"not a plan this slurmserve can read: {RunPaths(entry).plan}"))
    runs.sort(key=lambda dated: dated[0])
    return [run for _, run in runs], sorted(unreadable, key=lambda run: run.name)


def list_runs() -> list[RunDir]:
    """Every run whose plan can be read, oldest first (`scan_runs` also names those that cannot be)."""
    return scan_runs()[0]


def live_runs() -> list[RunDir]:
    return [run for run in list_runs() if not run.ended]
