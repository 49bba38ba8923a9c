"""The in-job Prometheus, the supervisor's own metrics and the shipped Grafana dashboard, without starting
anything: what the plan holds, what the run directory gets, and what the dashboard asks of Prometheus.
(tests/observability/test_prometheus.py runs them for real.)"""

from __future__ import annotations

import json

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from slurmserve.backends import SLURM_TRAITS, SSH_TRAITS, traits_for
from slurmserve.config.hosts import load_hosts
from slurmserve.config.recipe import load_recipe
from slurmserve.observability.dashboard import dashboard_for, datasource_provisioning, panel_queries, shipped_dashboard
from slurmserve.observability.own_metrics import SupervisorMetrics
from slurmserve.observability.prometheus import job_config
from slurmserve.observability.targets import file_sd_targets
from slurmserve.planning.needs import needs_of
from slurmserve.planning.planner import make_plan
from slurmserve.render.files import rendered_files
from slurmserve.runs import ProcessState

from ..conftest import HOSTS, local_run, plan_of
from ..helpers import slurmserve

WITH_PROMETHEUS = "observability.prometheus=true"


def test_prometheus_is_planned_on_the_head_node_only_when_asked_and_gates_nothing():
    assert "prometheus" not in {p.name for p in plan_of("mocker-disagg", "two-node-8gpu.yaml").processes}
    plan = plan_of("mocker-disagg", "two-node-8gpu.yaml", WITH_PROMETHEUS)
    prometheus = plan.process("prometheus")
    assert prometheus.role == "prometheus" and prometheus.nodes == [plan.nodes[0].name] and prometheus.after == []
    assert not any("prometheus" in p.after for p in plan.processes)  # a failed Prometheus costs no deployment
    port = prometheus.ports["http"]
    assert port not in {q for p in plan.processes if p.name != "prometheus" for q in p.ports.values()}
    assert prometheus.command == [
        "prometheus",
        "--config.file=/runs/test-run/prometheus/prometheus.yml",
        "--storage.tsdb.path=/runs/test-run/prometheus/data",
        "--storage.tsdb.retention.time=10y",
        f"--web.listen-address={plan.nodes[0].address}:{port}",
    ]
    assert plan.prometheus_url == f"http://{plan.nodes[0].address}:{port}"
    assert prometheus.ready_url == plan.prometheus_url + "/-/ready"
    # The node preflight looks for the binary on the head node.
    assert "prometheus" in needs_of(plan, traits_for(plan.backend)).nodes[plan.nodes[0].name].programs


def test_the_hosts_file_names_the_prometheus_binary(tmp_path):
    hosts = yaml.safe_load((HOSTS / "two-node-8gpu.yaml").read_text())
    hosts["control_plane"] = {"prometheus": "/opt/prometheus/bin/prometheus"}
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump(hosts))
    plan = make_plan(
        load_recipe("mocker-agg", [WITH_PROMETHEUS]),
        load_hosts(path),
        SLURM_TRAITS,
        run_name="r",
        run_dir="/runs/r",
        python="py",
    )
    assert plan.process("prometheus").command[0] == "/opt/prometheus/bin/prometheus"


def test_the_job_prometheus_scrapes_the_targets_file_that_the_supervisor_keeps():
    plan = plan_of("mocker-disagg", "two-node-8gpu.yaml", WITH_PROMETHEUS, "observability.scrape_interval_s=2")
    files = rendered_files(plan, SLURM_TRAITS)
    config = yaml.safe_load(files["prometheus/prometheus.yml"])
    assert config["global"]["scrape_interval"] == "2s"
    (job,) = config["scrape_configs"]
    assert job["file_sd_configs"] == [{"files": ["/runs/test-run/prometheus/targets.json"], "refresh_interval": "2s"}]
    assert "prometheus/prometheus.yml" not in rendered_files(
        plan_of("mocker-disagg", "two-node-8gpu.yaml"), SLURM_TRAITS
    )


def test_over_ssh_the_job_prometheus_lists_the_plans_endpoints_itself():
    plan = plan_of("mocker-disagg", "ssh-two-hosts.yaml", WITH_PROMETHEUS)
    (job,) = yaml.safe_load(job_config(plan, head_reads_run_dir=SSH_TRAITS.head_reads_run_dir))["scrape_configs"]
    assert job["static_configs"] == file_sd_targets(plan)
    assert {group["labels"]["process"] for group in job["static_configs"]} >= {"prometheus", "frontend", "decode-0"}


def test_the_supervisor_is_a_target_of_its_own():
    plan = plan_of("mocker-disagg", "two-node-8gpu.yaml", WITH_PROMETHEUS)
    groups = file_sd_targets(plan, supervisor="10.0.0.11:40001")
    assert groups[-1] == {
        "targets": ["10.0.0.11:40001"],
        "labels": {
            "run": "test-run",
            "recipe": "mocker-disagg",
            "role": "supervisor",
            "process": "supervisor",
            "node": plan.nodes[0].name,
            "backend": "slurm",
        },
    }
    assert file_sd_targets(plan)[-1]["labels"]["process"] != "supervisor"


def exported(metrics: SupervisorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    families = text_string_to_metric_families(generate_latest(metrics.registry).decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


def test_the_supervisors_counters_count_restarts_state_changes_and_the_canary():
    metrics = SupervisorMetrics(plan_of("mocker-disagg", "two-node-8gpu.yaml"))
    before = exported(metrics)
    decode = (("cause", "crash"), ("process_name", "decode-0"), ("process_role", "decode"))
    assert before[("slurmserve_restarts_total", decode)] == 0  # every series exists from the start
    metrics.changed("decode-0", ProcessState.READY)
    metrics.changed("decode-0", ProcessState.FAILED)
    metrics.restarted("decode-0", requested=False)
    metrics.restarted("decode-0", requested=True)
    metrics.canary(True, 0.25)
    metrics.canary(False, 10.0)
    after = exported(metrics)
    assert after[("slurmserve_restarts_total", decode)] == 1
    requested = (("cause", "requested"), ("process_name", "decode-0"), ("process_role", "decode"))
    assert after[("slurmserve_restarts_total", requested)] == 1
    failed = (("process_name", "decode-0"), ("process_role", "decode"), ("state", "failed"))
    assert after[("slurmserve_state_changes_total", failed)] == 1
    assert after[("slurmserve_process_ready", (("process_name", "decode-0"), ("process_role", "decode")))] == 0
    assert after[("slurmserve_canary_latency_seconds", ())] == 0.25  # a failed canary keeps the last latency
    assert after[("slurmserve_canary_failures_total", ())] == 1


def test_every_dashboard_panel_selects_the_run_through_the_chosen_datasource():
    dashboard = shipped_dashboard()
    queries = list(panel_queries(dashboard))
    assert len(queries) >= 15
    assert all('run="$run"' in expr for _, expr in queries), [t for t, e in queries if 'run="$run"' not in e]
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in panels)
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows == ["Deployment (the frontend)", "Per role", "Per worker", "KV cache", "Supervisor"]
    titles = {title for title, _ in queries}
    assert {"Requests/s", "Errors/s", "Time to first token", "Inter-token latency", "Restarts (5 min)"} <= titles


def test_the_dashboard_for_a_run_uses_its_prometheus():
    dashboard = dashboard_for("my-run")
    current = {v["name"]: v["current"]["value"] for v in dashboard["templating"]["list"]}
    assert current == {"datasource": "slurmserve-my-run", "run": "my-run"}
    (source,) = yaml.safe_load(datasource_provisioning("my-run", "http://10.0.0.11:15000"))["datasources"]
    assert source["uid"] == "slurmserve-my-run" and source["url"] == "http://10.0.0.11:15000"


@pytest.fixture
def planned_run(tmp_path):
    """A run directory as `submit --dry-run` leaves none: written by hand from a plan, nothing started."""

    def make(*sets: str):
        return local_run("mocker-agg", "watched", *sets)

    return make


def test_metrics_open_needs_the_runs_own_prometheus(planned_run):
    planned_run()
    result = slurmserve("metrics", "watched", "--open")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "has no Prometheus of its own: set observability.prometheus: true" in " ".join(result.stderr.split())


def test_metrics_open_says_when_no_data_was_saved(planned_run):
    planned_run(WITH_PROMETHEUS)
    result = slurmserve("metrics", "watched", "--open")
    assert result.returncode == 2 and "saved no Prometheus data" in " ".join(result.stderr.split())


def test_grafana_prints_the_dashboard_and_writes_the_datasource_of_the_runs_prometheus(planned_run):
    run = planned_run(WITH_PROMETHEUS)
    result = slurmserve("metrics", "watched", "--grafana")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["title"] == "slurmserve deployment: watched"
    provisioning = run.path / "prometheus" / "grafana-datasource.yaml"
    assert yaml.safe_load(provisioning.read_text())["datasources"][0]["uid"] == "slurmserve-watched"
