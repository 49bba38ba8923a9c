"""The stage hand-off's readiness wait: every process of a stage waited for at once, by one program."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slurmserve.node import ready


class Health(http.server.BaseHTTPRequestHandler):
    ready_at = 0.0  # 503 until then

    def do_GET(self) -> None:
        self.send_response(200 if time.monotonic() >= self.ready_at else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def endpoints() -> Iterator[list[str]]:
    """Two /health URLs on loopback: one answers at once, one only after 0.3 s."""
    servers = []
    for delay in (0.0, 0.3):
        handler = type("Delayed", (Health,), {"ready_at": time.monotonic() + delay})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [f"http://127.0.0.1:{server.server_address[1]}/health" for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_every_process_of_a_stage_is_waited_for_at_once(endpoints: list[str]) -> None:
    started = time.monotonic()
    assert ready.main(["fast", endpoints[0], "5", "slow", endpoints[1], "5"]) == 0
    # The slow one's 0.3 s, not the two one after the other (nor a second interpreter's start-up).
    assert time.monotonic() - started < 2


def test_a_dead_process_ends_the_wait_at_once_with_its_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pids").mkdir()
    (tmp_path / "logs").mkdir()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "pids" / "worker.pid").write_text(f"{finished.stdout.strip()} 1\n")  # a process that has ended
    (tmp_path / "logs" / "worker.log").write_text("loading\nCUDA out of memory\n")
    started = time.monotonic()
    code = ready.main(
        ["--pids", str(tmp_path / "pids"), "--logs", str(tmp_path / "logs"), "worker", "http://127.0.0.1:9/h", "60"]
    )
    assert code == 1 and time.monotonic() - started < 5
    said = capsys.readouterr().err
    assert "slurmserve: worker exited" in said and "CUDA out of memory" in said


def test_a_process_that_never_answers_is_named_with_its_url() -> None:
    assert ready.first_failure([("etcd", "http://127.0.0.1:9/health", 0.2)], lambda _name: True) == (
        "etcd",
        "did not answer http://127.0.0.1:9/health within 0.2 s",
    )


def test_the_waits_come_in_triples() -> None:
    with pytest.raises(SystemExit):
        ready.main(["etcd", "http://127.0.0.1:9/health"])
