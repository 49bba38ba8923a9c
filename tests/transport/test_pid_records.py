"""A PID record without a start time (what a launch script's `record` writes for a process that had
already ended) names no process: it reads as ended and never leads to a signal, whatever runs with that
PID now."""

from __future__ import annotations

import subprocess

from slurmserve.node import groups
from slurmserve.transport.procfs import group_is_ours, pid_alive, pid_file_alive, read_pid_record, stop_groups


def test_a_record_without_a_start_time_never_leads_to_a_signal(tmp_path, capsys):
    # Another user's process now holds the recorded PID (a PID reused after ours ended).
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record_file = tmp_path / "worker.pid"
        record_file.write_text(f"{bystander.pid} \n")
        record = read_pid_record(record_file)
        assert record == (bystander.pid, None)
        assert stop_groups([record], grace_s=0.5) == []
        # The SSH backend's helper on each host, from the PID file and from the handle's "PGID:" form.
        assert groups.main(["--signal", "KILL", f"a=@{record_file}", f"b={bystander.pid}:"]) == 0
        assert bystander.poll() is None, "a process the record does not name was signalled"
        assert capsys.readouterr().out.strip() == ""  # neither is reported alive
        assert not group_is_ours(*record)
        assert not pid_alive(*record) and pid_file_alive(record_file) is False
    finally:
        bystander.kill()
        bystander.wait()
