"""The run directory's layout: every file and folder name in it, spelt here once (as submitit's JobPaths).

Everything in a run directory is private to its user: files 0600, folders 0700 (`private`), whoever
writes them; logs/ and pids/ are made with the run, the other folders when first written to.

The plan's own files (each process's log, the in-job Prometheus's configuration and data) are named by
the planner, a layer below: the one this module needs is imported from there, so that each is spelt once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..planning.plan import PROMETHEUS_DATA

PLAN_FILE = "plan.json"  # the first file a run gets: a folder without it is not (yet) a run
EVENTS_FILE = "events.jsonl"
STATE_FILE = "state.json"  # the supervisor's picture
PLANNER_FILE = "planner.json"  # the planner's last decision, as its link follows it (autoscaling)
HANDLE_FILE = "handle.json"  # what the backend needs to find the deployment again
RECIPE_FILE = "recipe.yaml"  # the resolved recipe and hosts, as submit saved them
HOSTS_FILE = "hosts.yaml"
LOGS_DIR = "logs"
PIDS_DIR = "pids"
REQUESTS_DIR = "requests"  # restart-NAME: a restart asked of the supervisor
PREFLIGHT_DIR = "preflight"  # the node preflight's output, NODE[@container].log
# Which interpreter (and Dynamo) accepted the plan's command lines before submit: a node preflight running
# under that same one need not ask Dynamo's parsers again (slurmserve.node.node_check --accepted).
FLAGS_ACCEPTED_FILE = "flags-accepted.json"
BENCH_DIR = "bench"  # a folder per benchmark
LIVE_METRICS_FILE = "metrics/live.json"  # the scraper's latest live figures, for the supervisor's state
MADE_WITH_THE_RUN = (LOGS_DIR, PIDS_DIR)
LAUNCHER_LOG = f"{LOGS_DIR}/launcher.log"  # the launch script's (or sbatch job's) own output
PROMETHEUS_OPEN_LOG = f"{LOGS_DIR}/prometheus-open.log"  # a Prometheus `metrics --open` started on the saved data
TARGETS_FILE = "prometheus/targets.json"  # the deployment's Prometheus targets (file_sd), while it runs
OPEN_LOCK = "prometheus/open.lock"  # held by the `metrics --open` serving the saved data; its URL in it
DATASOURCE_FILE = "prometheus/grafana-datasource.yaml"
# In pids/: the benchmark measuring the deployment holds BENCH_LOCK (naming it); the client run beside the
# deployment (a benchmark's aiperf) records itself under CLIENT_RECORD, in a session of its own ("PID
# START-TIME": its process group), wherever it runs: `cancel` and an interrupted bench find it there. Not
# NAME.pid: no process of a plan can have their names.
BENCH_LOCK = "bench.lock"
CLIENT_RECORD = "aiperf.bench"
RESTART_REQUEST_PREFIX = "restart-"


@dataclass(frozen=True)
class RunPaths:
    """The paths of one run directory."""

    folder: Path

    @property
    def plan(self) -> Path:
        return self.folder / PLAN_FILE

    @property
    def events(self) -> Path:
        return self.folder / EVENTS_FILE

    @property
    def state(self) -> Path:
        return self.folder / STATE_FILE

    @property
    def planner(self) -> Path:
        return self.folder / PLANNER_FILE

    @property
    def handle(self) -> Path:
        return self.folder / HANDLE_FILE

    @property
    def recipe(self) -> Path:
        return self.folder / RECIPE_FILE

    @property
    def hosts(self) -> Path:
        return self.folder / HOSTS_FILE

    @property
    def logs(self) -> Path:
        return self.folder / LOGS_DIR

    @property
    def pids(self) -> Path:
        return self.folder / PIDS_DIR

    @property
    def requests(self) -> Path:
        return self.folder / REQUESTS_DIR

    @property
    def preflight(self) -> Path:
        return self.folder / PREFLIGHT_DIR

    @property
    def flags_accepted(self) -> Path:
        return self.folder / FLAGS_ACCEPTED_FILE

    @property
    def bench(self) -> Path:
        return self.folder / BENCH_DIR

    @property
    def live_metrics(self) -> Path:
        return self.folder / LIVE_METRICS_FILE

    @property
    def launcher_log(self) -> Path:
        return self.folder / LAUNCHER_LOG

    @property
    def targets(self) -> Path:
        return self.folder / TARGETS_FILE

    @property
    def prometheus_data(self) -> Path:
        return self.folder / PROMETHEUS_DATA

    @property
    def prometheus_open_log(self) -> Path:
        return self.folder / PROMETHEUS_OPEN_LOG

    @property
    def open_lock(self) -> Path:
        return self.folder / OPEN_LOCK

    @property
    def datasource(self) -> Path:
        return self.folder / DATASOURCE_FILE

    @property
    def bench_lock(self) -> Path:
        return self.pids / BENCH_LOCK

    @property
    def client_record(self) -> Path:
        return self.pids / CLIENT_RECORD

    def helper_log(self, name: str) -> Path:
        """logs/NAME.log: the output of a helper of the run (the launcher, the supervisor)."""
        return self.logs / f"{name}.log"

    def pid_record(self, process: str, suffix: str = "pid") -> Path:
        """pids/NAME.SUFFIX: a process's record (.pid locally and over SSH; .srun and .tasks on Slurm)."""
        return self.pids / f"{process}.{suffix}"

    def step_record(self, process: str) -> Path:
        """pids/NAME.srun: the srun of a process's step, a local process in the job (ends with the step)."""
        return self.pids / f"{process}.srun"

    def task_records(self, process: str) -> Path:
        """pids/NAME.tasks: the records of a Slurm step's tasks, one line each, written on their nodes."""
        return self.pids / f"{process}.tasks"

    def restart_request(self, process: str) -> Path:
        return self.requests / f"{RESTART_REQUEST_PREFIX}{process}"

    @property
    def planner_paused(self) -> Path:
        """requests/planner-paused: while there, the planner's decisions are not followed (`scale --pause`)."""
        return self.requests / "planner-paused"

    @property
    def scale_request(self) -> Path:
        """requests/scale.json: the worker count asked of each autoscaled role (`slurmserve scale`)."""
        return self.requests / "scale.json"


def client_record_of(run_dir: str) -> str:
    """The client record's path as the plan's run directory spells it (on the head node, perhaps not here)."""
    return f"{run_dir}/{PIDS_DIR}/{CLIENT_RECORD}"


def elastic_job_log(process: str) -> str:
    """An elastic worker's job's own output (relative to the run directory); its worker logs to its own log."""
    return f"{LOGS_DIR}/elastic-{process}.log"


def pid_record_of(run_dir: str, process: str) -> str:
    """A process's pids/NAME.pid as the plan's run directory spells it (on its node, perhaps not here)."""
    return f"{run_dir}/{PIDS_DIR}/{process}.pid"
