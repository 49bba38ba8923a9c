"""The first hour, benchmarks: `bench compare` as a user runs it (through a pipe, COLUMNS=80) on recorded
results: a sweep's folder of the README's sweep, a run by its name, a missing path, mixed workloads, and
the p99 of a --quick run marked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# summary.json of both points of the README's sweep (mocker-disagg, decode.replicas=1,2; default sample)
RECORDED = Path(__file__).parent / "data" / "readme-sweep"


def slurmserve(*args: str) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, its output read through a pipe, in a terminal 80 wide."""
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "slurmserve", *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.fixture
def sweep(tmp_path) -> Path:
    shutil.copytree(RECORDED, tmp_path / "sweep")
    return tmp_path / "sweep"


def changed(folder: Path, **changes) -> None:
    summary = json.loads((folder / "summary.json").read_text())
    for key, value in changes.items():
        if key == "requests":
            for point in summary["points"]:
                point["requests"] = value
        else:
            summary[key] = value
    (folder / "summary.json").write_text(json.dumps(summary))


def readable_at_80(text: str) -> None:
    """The table and its notes fit 80 columns, nothing cut; the lines of words after it (the frontier, the
    folder) are one paragraph each, which the terminal wraps."""
    assert "…" not in text and "Traceback" not in text
    table = [line for line in text.splitlines() if not line.startswith(("frontier", "table and plots:"))]
    assert max(map(len, table)) <= 80, text


def test_compare_of_a_sweep_folder_reads_at_80_columns_and_defines_its_columns(sweep, tmp_path):
    result = slurmserve("bench", "compare", str(sweep), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    readable_at_80(result.stdout)
    for header in ("conc", "tok/s", "/GPU", "/user", "TTFT ms", "ITL ms", "valid"):
        assert header in result.stdout
    assert "1: decode.replicas=1: 4 GPUs, ISL 64 / OSL 32" in result.stdout
    assert "2: decode.replicas=2: 6 GPUs, ISL 64 / OSL 32" in result.stdout
    assert "~ p99" not in result.stdout  # the default sample: every p99 from 200 requests or more
    table = (tmp_path / "out" / "table.txt").read_text()
    assert "tok/s/user  the decode speed one user sees" in table
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 10_000


def test_a_quick_runs_p99_is_marked_at_80_columns(sweep, tmp_path):
    changed(sweep / "decode.replicas=1", requests=40)
    result = slurmserve("bench", "compare", str(sweep / "decode.replicas=1"), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    readable_at_80(result.stdout)
    assert "~" in result.stdout and "p99 of fewer than 100 requests" in " ".join(result.stdout.split())


def test_compare_refuses_two_workloads_unless_asked_then_names_each(sweep, tmp_path):
    changed(sweep / "decode.replicas=2", isl=128, osl=64)
    refused = slurmserve("bench", "compare", str(sweep), "--out", str(tmp_path / "out"))
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "different workloads" in said and "--mix-workloads" in said and not (tmp_path / "out").exists()
    mixed = slurmserve("bench", "compare", str(sweep), "--mix-workloads", "--out", str(tmp_path / "out"))
    assert mixed.returncode == 0, mixed.stderr
    readable_at_80(mixed.stdout)
    assert "ISL 64 / OSL 32" in mixed.stdout and "ISL 128 / OSL 64" in mixed.stdout


def test_compare_takes_a_run_by_its_name(sweep, tmp_path):
    benchmark = Path(os.environ["SLURMSERVE_HOME"]) / "runs" / "demo" / "bench" / "20261207-120000"
    shutil.copytree(sweep / "decode.replicas=1", benchmark)
    result = slurmserve("bench", "compare", "demo", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "decode.replicas=1: 4 GPUs" in result.stdout


def test_compare_of_a_missing_path_says_it_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-sweep"
    result = slurmserve("bench", "compare", str(missing))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{missing} does not exist" in " ".join(result.stderr.split())
