"""Run directories: everything a deployment needs to be inspected, or torn down, from a new shell.

`~/.slurmserve/runs/<run>/` (or `$SLURMSERVE_HOME/runs/<run>/`) holds the resolved recipe and hosts,
plan.json, the rendered script, logs/, pids/, events.jsonl, the supervisor's state.json and the
backend's handle.json. A hosts file may put runs elsewhere (`run_root`, on the shared filesystem for
Slurm); the home folder then keeps a link to it.

What crosses process boundaries here is typed (pydantic models with a schema version): state.json
and handle.json are written atomically; events.jsonl is append-only, and a reader skips a line that is
not (yet) whole rather than failing on it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError, field_validator

from ..config.fields import IDENTIFIER_MAX, check_identifier
from ..errors import UserError
from ..planning.plan import Plan, PlanNode
from ..private import DIR_MODE, FILE_MODE, make_private_dir, write_private
from ..transport.procfs import boot_id, pid_alive, pid_namespace, start_time
from ..transport.slurm import JobState, parse_job_state
from .events import (
    RUN_EVENT,
    SCHEMA_VERSION,
    CanaryResult,
    Created,
    EventKind,
    ProcessState,
    RunEvent,
    Verdict,
    event_line,
    event_of,
)

HELPERS = ("launcher", "supervisor")  # the run's own helpers on the submitting machine, in pids/ too
# What in pids/ names a process of the plan: NAME.pid (local, SSH), NAME.srun and NAME.tasks (Slurm). Not
# the benchmark's record or lock, also there.
PROCESS_RECORDS = (".pid", ".srun", ".tasks")


class ProcessWatch(BaseModel):
    """The supervisor's view of one process, as state.json carries it."""

    state: ProcessState
    since: float
    restarts: int = 0
    last_error: str | None = None
    registered: bool | None = None  # a worker the frontend routes to (None: not a worker, or unknown)
    restart_at: float | None = None


class ProcessIdentity(BaseModel):
    """Who a PID is: a reused PID has another start time; another machine or PID namespace another meaning."""

    pid: int
    start_time: str  # /proc/PID/stat field 22
    boot_id: str
    pid_namespace: str | None

    def running_here(self) -> bool | None:
        """True/False when this machine can see the PID; None when it cannot (another node)."""
        if boot_id() != self.boot_id or pid_namespace() != self.pid_namespace:
            return None
        return pid_alive(self.pid, self.start_time)

    @classmethod
    def of_this_process(cls) -> ProcessIdentity:
        return cls(
            pid=os.getpid(), start_time=start_time(os.getpid()) or "", boot_id=boot_id(), pid_namespace=pid_namespace()
        )


class Quantiles(BaseModel):
    p50: float
    p99: float


class WorkerLive(BaseModel):
    requests_per_s: float
    kv_cache_usage: float | None = None  # fraction of the KV cache in use, when the engine says


class TrendPoint(BaseModel):
    at: float
    requests_per_s: float
    ttft_p50_ms: float | None = None


class LiveMetrics(BaseModel):
    """What the deployment is serving, from the frontend's and workers' /metrics over the last window."""

    at: float
    window_s: float  # the span the rates and percentiles cover (up to a minute)
    requests_per_s: float
    in_flight: float
    queued: float
    ttft_ms: Quantiles | None = None  # None: no request finished its first token in the window
    itl_ms: Quantiles | None = None
    output_tokens_per_s: float
    workers: dict[str, WorkerLive] = {}
    trend: list[TrendPoint] = []  # one per scrape, oldest first (status --watch draws them)


class SupervisorState(BaseModel):
    """state.json: the supervisor's latest picture of the deployment."""

    version: int = SCHEMA_VERSION
    updated: float
    final: bool  # the supervisor stopped watching: the backend answers from then on
    pid: int
    host: str
    identity: ProcessIdentity
    heartbeat: int  # ticks so far: a reader on another machine sees it advance, whatever the clocks say
    errors: int = 0  # ticks that failed (each recorded as a "supervisor error" event)
    tick_s: float = 0.0  # how long the last tick took
    tick_p50_s: float = 0.0  # over about the last minute
    tick_p99_s: float = 0.0
    verdict: Verdict
    reason: str
    processes: dict[str, ProcessWatch]
    frontend: dict[str, tuple[int, int]] = {}  # role -> (instances the frontend sees, planned)
    model_listed: bool | None = None
    canary: CanaryResult | None = None
    nodes: dict[str, str] = {}  # node -> what is wrong with it
    metrics: LiveMetrics | None = None
    metrics_endpoint: str | None = None  # where the supervisor serves its own /metrics ("host:port")
    pool_canaries: dict[str, CanaryResult] = {}  # per pool behind the global router: its own canary


class StartedGroup(BaseModel):
    """A process the SSH backend started: its host and its process group."""

    host: str
    pgid: int
    started: str | None = None  # its leader's start time: a reused PID is not ours


class Handle(BaseModel):
    """handle.json: what the backend needs to find the deployment again."""

    version: int = SCHEMA_VERSION
    backend: str
    job_id: str | None = None  # Slurm
    final_state: JobState | None = None  # Slurm: a terminal job state, once seen (Slurm forgets jobs)
    processes: dict[str, StartedGroup] = {}  # SSH
    # SSH: how to reach the hosts that started processes, and their interpreter: what stopping them needs
    # when plan.json cannot be read.
    nodes: dict[str, PlanNode] = {}
    python: str | None = None

    @field_validator("final_state", mode="before")
    @classmethod
    def _slurm_spelling(cls, value: object) -> object:
        """Older handle.json files kept the state as Slurm printed it (a deployment outlives upgrades). One
        that reads as no end (a state this version has no name for) is as none kept: Slurm is asked again."""
        if not isinstance(value, str):
            return value
        state = parse_job_state(value)
        return state if state.terminal else None


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

    def plan(self) -> Plan:
        """The run's plan, read once (plan.json does not change once the run exists)."""
        if self._plan is None:
            try:
                self._plan = Plan.model_validate_json((self.path / "plan.json").read_bytes())
            except ValidationError:  # damaged, written by another version, or not even UTF-8
                raise UserError(
                    f"run {self.name}: {self.path / 'plan.json'} is damaged (not a plan this slurmserve can read)"
                ) from None
        return self._plan

    def process_names(self) -> list[str]:
        """The run's processes: its plan's; when plan.json cannot be read, every one that a PID record or the
        handle names (whatever started left one), so that a run that started anything can still be stopped."""
        try:
            return [process.name for process in self.plan().processes]
        except UserError:
            records = (path for path in (self.path / "pids").glob("*") if path.suffix in PROCESS_RECORDS)
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
            saved = yaml.safe_load((self.path / "hosts.yaml").read_text())
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
        return read_pid_record(self.path / "pids" / f"{process}.{suffix}")

    def preflight_report(self) -> list[str]:
        """What the job's node preflight found lacking, a line per node and place ("node2: ..."); each
        node's step output is preflight/NODE[@container].log, with a line only when something lacks."""
        lines = []
        for log in sorted((self.path / "preflight").glob("*.log")):
            node, _, place = log.stem.partition("@")
            text = " ".join(log.read_text(errors="replace").split())
            if text and not text.startswith(node):  # the check could not run at all: srun's words
                text = f"{node}{' (in the container)' if place else ''}: the preflight could not run: {text[-300:]}"
            lines += [text] if text else []
        return lines

    @property
    def targets_path(self) -> Path:
        """The deployment's Prometheus targets (file_sd), while it runs."""
        return self.path / "prometheus" / "targets.json"

    def save_targets(self, groups: list[dict[str, Any]]) -> None:
        make_private_dir(self.targets_path.parent)
        write_private(self.targets_path, json.dumps(groups, indent=2) + "\n")

    def request_restart(self, process: str) -> None:
        """Ask the supervisor to start a running process afresh (requests/restart-NAME): it stops and
        restarts it in place, outside the restart budget (a benchmark's fresh caches, not a fault)."""
        make_private_dir(self.path / "requests")
        write_private(self.path / "requests" / f"restart-{process}", "")

    def restart_requests(self) -> list[str]:
        """The processes whose restart was asked for and is not yet done."""
        try:
            names = os.listdir(self.path / "requests")
        except FileNotFoundError:
            return []
        return sorted(name.removeprefix("restart-") for name in names if name.startswith("restart-"))

    def restart_done(self, process: str) -> None:
        (self.path / "requests" / f"restart-{process}").unlink(missing_ok=True)

    def _read(self, name: str, model: type[Model]) -> Model | None:
        try:
            return model.model_validate_json((self.path / name).read_bytes())
        except OSError:  # not there (yet), or not ours to read
            return None
        except ValidationError:  # written by another version, or damaged (not even UTF-8): treated as absent
            return None

    def handle(self) -> Handle | None:
        """What the backend needs to find the deployment again (a Slurm job id, SSH process groups)."""
        return self._read("handle.json", Handle)

    def save_handle(self, handle: Handle) -> None:
        write_private(self.path / "handle.json", handle.model_dump_json(indent=2) + "\n")

    def supervisor_state(self) -> SupervisorState | None:
        """The supervisor's latest picture of the deployment (state.json), if it has written one."""
        return self._read("state.json", SupervisorState)

    def save_supervisor_state(self, state: SupervisorState) -> None:
        write_private(self.path / "state.json", state.model_dump_json(indent=2) + "\n")

    def record(self, event: RunEvent | EventKind, **fields: Any) -> None:
        """Append one event to events.jsonl (the deployment's history; never rewritten): a typed event, or
        a kind and its fields, checked against that kind's model."""
        line = event_line(event_of(event, fields) if isinstance(event, EventKind) else event)
        # One write(2) of the whole line, with O_APPEND: concurrent writers never interleave inside a line.
        descriptor = os.open(self.path / "events.jsonl", os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
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
            lines = (self.path / "events.jsonl").read_bytes().splitlines()
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
        return datetime.fromtimestamp((self.path / "plan.json").stat().st_mtime)

    def last_active(self) -> float:
        """When the run last recorded anything (an event, the supervisor's state), as a timestamp."""
        names = ("events.jsonl", "state.json", "plan.json")
        return max((self.path / name).stat().st_mtime for name in names if (self.path / name).exists())

    @property
    def ended(self) -> bool:
        """Cancelled, or failed and stopped by submit: it holds no ports any more."""
        return self.has_event(EventKind.CANCELLED, EventKind.FAILED)


def read_pid_record(path: Path) -> tuple[int, str | None] | None:
    try:
        with open(path, "rb") as record:
            words = record.read().decode(errors="replace").split()
    except OSError:  # not there (yet), or not ours to read
        return None
    if not words or not words[0].isdigit():
        return None  # not written whole yet (or damaged): no PID to act on
    return int(words[0]), (words[1] if len(words) > 1 and words[1].isdigit() else None)


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
        make_private_dir(path / "logs")
        make_private_dir(path / "pids")
    except FileExistsError:
        raise UserError(f"--name {plan.run_name}: a run of that name already exists at {path}") from None
    if link != path:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    run = RunDir(path)
    # The plan first: from here on `status` and `cancel` can handle the run, even if the CLI dies.
    write_private(path / "plan.json", plan.model_dump_json(indent=2) + "\n")
    run.record(Created(recipe=plan.recipe, backend=plan.backend))
    return run


def name_holders(plan: Plan) -> list[Path]:
    """What already holds the plan's run name: the home folder's entry of that name (a run, or a link to
    one under any run_root) and the plan's own run directory, each once."""
    found = [path for path in (runs_root() / plan.run_name, Path(plan.run_dir)) if taken(path)]
    return list({path.resolve(): path for path in found}.values())


def aside_path(run: RunDir) -> Path:
    """Where a stopped run is set aside: its folder's name with its start time as a suffix (and a counter
    when two runs of that name started in the same second), within the bound every run name has."""
    suffix = f"-{run.started_at():%Y%m%d-%H%M%S}"
    base = run.name[: IDENTIFIER_MAX - len(suffix) - 4] + suffix  # room for a counter
    candidates = (run.path.parent / (base if count == 1 else f"{base}-{count}") for count in range(1, 1000))
    return next(path for path in candidates if not any(taken(where) for where in (path, runs_root() / path.name)))


def taken(path: Path) -> bool:
    """Something has this name: a folder, a file, or a link (even one whose target is gone)."""
    return path.is_symlink() or path.exists()


def set_aside(run: RunDir, target: Path) -> None:
    """Rename a stopped run's folder, and the home folder's link to it, so that its name can be taken
    again. Its plan follows it (name and folder): `status`, `logs` and `rm` read it under its new name."""
    if run.path.exists():  # another host's copy, renamed first, may have been this very folder (a shared filesystem)
        run.path.rename(target)
    drop_home_link(run)
    if runs_root() / target.name != target:
        (runs_root() / target.name).symlink_to(target)
    plan = RunDir(target).plan().model_copy(update={"run_name": target.name, "run_dir": str(target)})
    write_private(target / "plan.json", plan.model_dump_json(indent=2) + "\n")


def remove_run(run: RunDir) -> None:
    """Delete a run's folder and the home folder's link to it."""
    drop_home_link(run)
    shutil.rmtree(run.path)


def drop_home_link(run: RunDir) -> None:
    """The home folder's link to a run kept under another run_root (only a link to that very run)."""
    link = runs_root() / run.name
    if link.is_symlink() and link.resolve() == run.path:
        link.unlink()


def open_run(name: str) -> RunDir:
    path = runs_root() / check_identifier(name, "run")
    try:
        found = (path / "plan.json").exists()
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
            if not (entry / "plan.json").exists():
                continue  # not a run (yet): plan.json is the first file a run gets
            run = RunDir(entry.resolve())
            run.plan()
            runs.append(((run.path / "plan.json").stat().st_mtime, run))
        except OSError as error:
            unreadable.append(UnreadableRun(entry.name, unreadable_because(error)))
        except UserError:
            unreadable.append(UnreadableRun(entry.name, f"not a plan this slurmserve can read: {entry / 'plan.json'}"))
    runs.sort(key=lambda dated: dated[0])
    return [run for _, run in runs], sorted(unreadable, key=lambda run: run.name)


def list_runs() -> list[RunDir]:
    """Every run whose plan can be read, oldest first (`scan_runs` also names those that cannot be)."""
    return scan_runs()[0]


def live_runs() -> list[RunDir]:
    return [run for run in list_runs() if not run.ended]
