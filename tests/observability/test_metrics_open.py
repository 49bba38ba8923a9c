"""`metrics RUN --open` on a finished run's saved data, with a stand-in Prometheus (an HTTP server that
answers everything and notes each start): one Prometheus at a time per data folder, and a run directory
without logs/ opens all the same."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from slurmserve.deploy import load_inputs, plan_for
from slurmserve.planning.plan import PROMETHEUS_DATA
from slurmserve.runs import create_run, open_run
from slurmserve.transport.procfs import pid_runs

from ..conftest import HOSTS

STAND_IN = f"""#!{sys.executable}
import http.server, os, sys
port = int(next(a for a in sys.argv if a.startswith("--web.listen-address=")).rsplit(":", 1)[1])
with open(os.environ["PROMETHEUS_STARTS"], "a") as starts:
    starts.write(f"{{os.getpid()}}\\n")
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Answer).serve_forever()
"""
URL = re.compile(r"http://127\.0\.0\.1:\d+")


@pytest.fixture
def saved_run(tmp_path, monkeypatch) -> tuple[str, Path]:
    """A run with Prometheus data and no live Prometheus; a stand-in `prometheus` first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "prometheus").write_text(STAND_IN)
    (bin_dir / "prometheus").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    starts = tmp_path / "starts"
    monkeypatch.setenv("PROMETHEUS_STARTS", str(starts))
    inputs = load_inputs("mocker-agg", str(HOSTS / "local.yaml"), ["observability.prometheus=true"])
    run = create_run(plan_for(inputs, "saved-metrics"))
    (run.path / PROMETHEUS_DATA).mkdir(parents=True)
    return run.name, starts


def open_in_background(run: str) -> tuple[subprocess.Popen, str, str]:
    """`metrics RUN --open` serving, the URL it printed, and that line."""
    opened = subprocess.Popen(
        [sys.executable, "-m", "slurmserve", "metrics", run, "--open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert opened.stdout is not None
    line = opened.stdout.readline()  # it goes on serving, or ends at once when another one serves
    found = URL.search(line)
    if not found:
        opened.kill()
        raise AssertionError(f"metrics --open printed no URL: {line}{opened.communicate()}")
    return opened, found.group(0), line


def stop(opened: subprocess.Popen) -> tuple[int, str]:
    opened.send_signal(signal.SIGTERM)
    _, err = opened.communicate(timeout=30)
    return opened.returncode, err


def still_serving(starts: Path) -> list[int]:
    """The stand-in Prometheus processes that outlived the `metrics --open` that started them."""
    return [int(pid) for pid in starts.read_text().split() if pid_runs(int(pid))]


@pytest.mark.slow  # two `metrics --open` processes, each serving the data
def test_a_second_open_of_the_same_data_prints_the_first_ones_url(saved_run):
    run, starts = saved_run
    first, url, _ = open_in_background(run)
    try:
        second, second_url, said = open_in_background(run)
        if second_url != url:  # it serves a Prometheus of its own on the same data
            stop(second)
        assert second_url == url
        assert second.wait(timeout=30) == 0 and "already served" in said
        assert len(starts.read_text().split()) == 1  # one Prometheus on the data folder
    finally:
        stop(first)
    # Once the first has stopped, the data opens again.
    again, _, _ = open_in_background(run)
    assert stop(again)[0] == 0
    assert len(starts.read_text().split()) == 2 and not still_serving(starts)


def test_open_without_a_logs_folder_serves_all_the_same(saved_run):
    run, starts = saved_run
    shutil.rmtree(open_run(run).path / "logs")
    opened, _, _ = open_in_background(run)
    code, err = stop(opened)
    assert code == 0 and "Traceback" not in err, err
    assert not still_serving(starts)
