"""The wheel carries everything slurmserve reads at run time, so an installed copy works from any directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


def test_wheel_works_from_any_directory(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next((tmp_path / "dist").glob("slurmserve-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "slurmserve/sbatch_templates/slurm.sbatch.j2",
        "slurmserve/sbatch_templates/launch.sh.j2",
        "slurmserve/engine_configs/gpt-oss-120b/prefill.yaml",
        "slurmserve/recipes/gpt-oss-120b-disagg.yaml",
        "slurmserve/models/tiny-mock/tokenizer.json",
        "slurmserve/interop/dgd-crd-schema.json",
    ):
        assert expected in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "slurmserve", "render", "--recipe", "gpt-oss-120b-disagg", "--out", "out"],
        cwd=elsewhere,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "out" / "engine" / "prefill.yaml").exists() and (elsewhere / "out" / "launch.sh").exists()
    assert str(site) in (elsewhere / "out" / "plan.json").read_text()  # the tiny model / templates came from the wheel
