"""Results never stale, lost or exposed: a sweep measures again what changed since its saved points,
its point folders are unique and bounded, --out folders keep their modes (their new files the user's
umask) while a run directory stays private, and damaged or odd inputs are one line, never a traceback."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from slurmserve import deploy
from slurmserve.bench import sweep as sweep_module
from slurmserve.bench.measure import BenchRequest, save, tokenizer_for
from slurmserve.bench.results import read_summary
from slurmserve.bench.sweep import sweep_points
from slurmserve.config.recipe import load_recipe
from slurmserve.observability.prometheus import open_saved
from slurmserve.resources import resource_dir

from ..conftest import HOSTS, plan_of
from ..helpers import slurmserve
from .test_bench import summary

POINTS = ["mocker.speedup_ratio=50,100"]


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.fixture
def measured(monkeypatch, tmp_path) -> list[str]:
    """The sweep's points deployed and benchmarked for pretend: the labels measured, in order."""
    labels: list[str] = []

    def bench(run, request):
        folder = tmp_path / "results" / f"{run}-{len(labels)}"
        folder.mkdir(parents=True)
        found = summary(request.label)
        (folder / "summary.json").write_text(found.model_dump_json())
        labels.append(request.label)
        return found, folder

    monkeypatch.setattr(deploy, "submit", lambda prepared, timeout: deploy.Deployment(prepared.plan.run_name, None))
    monkeypatch.setattr(deploy, "bench", bench)
    monkeypatch.setattr(deploy, "cancel", lambda run: [])
    return labels


def test_a_sweep_measures_again_what_changed_since_its_saved_points(measured, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_module, "draw_plots", lambda summaries, folder, private: [])  # thirteen sweeps: no plots
    points = sweep_points(POINTS)
    names = [point.name for point in points]
    out = tmp_path / "sweep"

    def sweep(request=BenchRequest(concurrency=[1]), recipe="mocker-agg", **options):
        return deploy.sweep(recipe, None, [], points, request, out=out, **options)

    assert sweep().measured == names
    assert sweep().skipped == names  # the same command resumes
    for request in (
        BenchRequest(concurrency=[2]),
        BenchRequest(concurrency=[2], isl=8),
        BenchRequest(concurrency=[2], isl=8, osl=4),
        BenchRequest(concurrency=[2], isl=8, osl=4, requests=3),
    ):
        assert sweep(request).measured == names, request
    assert sweep(request).skipped == names
    assert sweep(request, remeasure=True).measured == names
    recipe = tmp_path / "recipe.yaml"
    shutil.copy(resource_dir("recipes") / "mocker-agg.yaml", recipe)
    assert sweep(request, str(recipe)).skipped == names  # the same content under another name
    recipe.write_text(recipe.read_text().replace("round-robin", "random"))
    assert sweep(request, str(recipe)).measured == names
    monkeypatch.setattr(sweep_module, "versions", lambda: {"ai-dynamo": "9.9.9"})
    assert sweep(request, str(recipe)).measured == names
    # Without --out, each workload has a folder of its own.
    first = deploy.sweep("mocker-agg", None, [], points, BenchRequest(concurrency=[1]))
    assert first.folder != deploy.sweep("mocker-agg", None, [], points, BenchRequest(concurrency=[2])).folder


def test_the_key_covers_the_engine_configs_and_hosts_files_content(tmp_path):
    from slurmserve.bench.sweep import results_key

    config = tmp_path / "agg.yaml"
    shutil.copy(resource_dir("engine_configs") / "gpt-oss-120b" / "agg.yaml", config)
    hosts = deploy.load_inputs("mocker-agg", str(HOSTS / "local.yaml")).hosts

    def key(**hosts_changes) -> str:
        recipe = load_recipe("gpt-oss-120b-agg", [f"agg.engine_config={config}"])
        return results_key(recipe, hosts.model_copy(update=hosts_changes), BenchRequest())

    before = key()
    config.write_text(
        config.read_text() + "\n# another engine setting would change the numbers\nenable_chunked_prefill: true\n"
    )
    assert key() != before and key(run_root="/elsewhere") != key() and key() == key()


def test_sweep_point_folders_are_unique_bounded_and_checked_before_anything_starts():
    names = [point.name for point in sweep_points(["env.X=a b,a_b," + "v" * 300])]
    assert len(set(names)) == 3 and max(map(len, names)) <= 100 and names[1] == "env.X=a_b"
    assert names[0].startswith("env.X=a_b") and names[2].startswith("env.X=vvv")
    result = slurmserve("sweep", "--recipe", "mocker-agg", "--vary", "env.X=1,1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--vary env.X: each value once (value 1 twice)" in " ".join(result.stderr.split())


def test_out_never_changes_an_existing_folder_and_its_new_files_follow_the_umask(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text(summary("a").model_dump_json())
    shared, rendered, home = tmp_path / "shared", tmp_path / "rendered", tmp_path / "home"
    for folder in (shared, rendered):
        folder.mkdir()
        folder.chmod(0o1777)
    home.chmod(0o755)
    shared_file = 0o666 & ~umask()
    result = slurmserve("bench", "compare", str(tmp_path / "a"), "--out", str(shared))
    assert result.returncode == 0, result.stderr
    assert mode(shared) == 0o1777 and mode(shared / "table.txt") == mode(shared / "pareto.png") == shared_file
    result = slurmserve("render", "--recipe", "mocker-agg", "--out", str(rendered))
    assert result.returncode == 0, result.stderr
    # What render writes is a run directory (every process's environment): private, in a folder kept as it is.
    assert mode(rendered) == 0o1777 and mode(rendered / "plan.json") == 0o600
    result = slurmserve("probe", "--hosts", str(HOSTS / "local.yaml"), "--out", str(home / "hosts.yaml"))
    assert result.returncode == 0, result.stderr
    assert mode(home) == 0o755 and mode(home / "hosts.yaml") == shared_file


def test_inside_a_run_directory_everything_is_private(tmp_path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True, mode=0o700)
    tokenizer_for(str(plan_of("mocker-agg", "local.yaml").model_path), run / "bench")
    folder = run / "bench" / "20260101-000000"
    folder.mkdir(mode=0o700)
    save(summary("a"), folder)
    assert open_saved("/bin/true", run, run / "logs" / "prometheus-open.log") is None
    for path in run.rglob("*"):
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path


@pytest.mark.parametrize("command", [["bench", "compare", "A"], ["sweep", "--recipe", "mocker-agg", "--vary", *POINTS]])
def test_an_out_folder_it_cannot_write_is_exit_2_with_one_line(command, tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "summary.json").write_text(summary("a").model_dump_json())
    (tmp_path / "file").write_text("")
    argv = [str(tmp_path / "A") if word == "A" else word for word in command]
    result = slurmserve(*argv, "--out", str(tmp_path / "file" / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"--out {tmp_path / 'file' / 'out'}: cannot write there" in " ".join(result.stderr.split())


def test_a_summary_that_is_not_utf8_is_one_line(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_bytes(b'{"id": "\xff"}')
    assert read_summary(tmp_path / "a") is None
    result = slurmserve("bench", "compare", str(tmp_path / "a"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "holds no benchmark summary" in result.stderr


def test_plot_labels_are_literal_text(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text(summary("cost $\\notacommand{$ x").model_dump_json())
    result = slurmserve("bench", "compare", str(tmp_path / "a"), "--out", str(tmp_path / "both"))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "both" / "pareto.png").stat().st_size > 0


def test_render_of_a_pools_recipe_writes_the_served_link_its_script_uses(tmp_path):
    result = slurmserve("render", "--recipe", "mocker-two-pools", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    plan = plan_of("mocker-two-pools", "local.yaml")
    assert plan.served_link and (tmp_path / "out" / plan.served_link).is_symlink()
    assert os.readlink(tmp_path / "out" / plan.served_link) == plan.model_path
