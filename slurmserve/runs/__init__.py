"""Run directories: everything a deployment needs to be inspected, or torn down, from a new shell.

`~/.slurmserve/runs/<run>/` (or `$SLURMSERVE_HOME/runs/<run>/`) holds the resolved recipe and hosts,
plan.json, the rendered script, logs/, pids/, events.jsonl, the supervisor's state.json and the
backend's handle.json. A hosts file may put runs elsewhere (`run_root`, on the shared filesystem for
Slurm); the home folder then keeps a link to it.

What crosses process boundaries here is typed (pydantic models with a schema version): state.json
and handle.json are written atomically; events.jsonl is append-only, and a reader skips a line that is
not (yet) whole rather than failing on it.

The package's parts: `layout` (every name in a run directory), `records` (state.json, handle.json, PID
records), `rundir` (RunDir; making, finding and listing runs), `names` (set aside, removed), `events`.
"""

from .aside import aside_path, drop_home_link, name_holders, remove_run, set_aside
from .events import CanaryResult, EventKind, ProcessState, Verdict
from .layout import RunPaths
from .records import (
    HELPERS,
    PROCESS_RECORDS,
    Handle,
    LiveMetrics,
    ProcessIdentity,
    ProcessWatch,
    Quantiles,
    StartedGroup,
    SupervisorState,
    TrendPoint,
    WorkerLive,
)
from .rundir import (
    RunDir,
    UnreadableRun,
    create_run,
    list_runs,
    live_runs,
    new_run_name,
    open_run,
    run_dir_for,
    runs_root,
    scan_runs,
    slurmserve_home,
    taken,
    unreadable_because,
)

__all__ = [
    "HELPERS",
    "PROCESS_RECORDS",
    "CanaryResult",
    "EventKind",
    "Handle",
    "LiveMetrics",
    "ProcessIdentity",
    "ProcessState",
    "ProcessWatch",
    "Quantiles",
    "RunDir",
    "RunPaths",
    "StartedGroup",
    "SupervisorState",
    "TrendPoint",
    "UnreadableRun",
    "Verdict",
    "WorkerLive",
    "aside_path",
    "create_run",
    "drop_home_link",
    "list_runs",
    "live_runs",
    "name_holders",
    "new_run_name",
    "open_run",
    "remove_run",
    "run_dir_for",
    "runs_root",
    "scan_runs",
    "set_aside",
    "slurmserve_home",
    "taken",
    "unreadable_because",
]
