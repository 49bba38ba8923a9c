"""A recipe's `autoscale:` section: the worker counts Dynamo's planner may choose between, per role, and the
planner's own settings under Dynamo's names (checked against the PlannerConfig of the Dynamo slurmserve runs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ..errors import did_you_mean
from .fields import Integer, PositiveCount, Text
from .files import Strict

# The top-level fields of Dynamo 1.6.1's PlannerConfig (dynamo.planner.config.planner_config): the names a
# recipe may pass through. tests/config/test_autoscale.py checks this list against the installed class.
PLANNER_OPTIONS = frozenset(
    {
        "advisory",
        "aic_interpolation",
        "ais_perf_model",
        "backend",
        "control_api_port",
        "decode_engine_num_gpu",
        "decode_min_endpoint",
        "decode_scale_down_kv_rate",
        "decode_scale_up_kv_rate",
        "enable_load_scaling",
        "enable_power_awareness",
        "enable_throughput_scaling",
        "environment",
        "fpm_sample_bucket_size",
        "global_planner_namespace",
        "itl_ms",
        "kalman_min_points",
        "kalman_q_level",
        "kalman_q_trend",
        "kalman_r",
        "live_dashboard_port",
        "load_adjustment_interval_seconds",
        "load_min_observations",
        "load_predictor",
        "load_predictor_log1p",
        "load_predictor_warmup_trace",
        "load_scaling_down_sensitivity",
        "log_dir",
        "max_gpu_budget",
        "max_num_fpm_samples",
        "max_throughput_scaling_replicas",
        "metric_pulling_prometheus_ca_bundle",
        "metric_pulling_prometheus_endpoint",
        "metric_pulling_prometheus_extra_query_params",
        "metric_pulling_prometheus_request_timeout_seconds",
        "metric_pulling_prometheus_ssl_verify",
        "metric_pulling_prometheus_token",
        "metric_pulling_prometheus_token_file",
        "metric_reporting_prometheus_port",
        "min_endpoint",
        "min_gpu_budget",
        "mode",
        "model_name",
        "namespace",
        "optimization_target",
        "plugin_registration",
        "pre_deployment_sweeping_mode",
        "prefill_engine_num_gpu",
        "prefill_min_endpoint",
        "prefill_scale_down_queue_tokens",
        "prefill_scale_up_queue_tokens",
        "profile_results_dir",
        "prophet_window_size",
        "report_filename",
        "report_interval_hours",
        "report_output_dir",
        "report_write_gzip_log",
        "scheduling",
        "speculative_nextn",
        "throughput_adjustment_interval_seconds",
        "throughput_metrics_source",
        "total_gpu_power_limit",
        "ttft_ms",
    }
)
# The planner's own bounds: slurmserve derives them from the roles' min/max, the only bounds a recipe sets.
PLANNER_BOUNDS = ("min_endpoint", "prefill_min_endpoint", "decode_min_endpoint", "max_gpu_budget", "min_gpu_budget")
# What slurmserve sets from the recipe and the plan (the deployment's shape, namespace and model; its ports).
PLANNER_DERIVED = (
    "environment",
    "backend",
    "mode",
    "namespace",
    "model_name",
    "prefill_engine_num_gpu",
    "decode_engine_num_gpu",
    "control_api_port",
    "live_dashboard_port",
    "metric_reporting_prometheus_port",
    "global_planner_namespace",
    "report_output_dir",  # its diagnostics reports: in the run directory, never the folder it was started from
)
SLA_REFUSAL = (
    "optimization_target sla needs the engine's performance model (NVIDIA's aisimulate, or a pre-deployment "
    "sweep of the engine on the target GPUs), which cannot be installed or produced here; use load (scaling on "
    "the workers' own queue and KV-cache figures)"
)

ONLY_LOAD = "slurmserve runs the planner with optimization_target load, the target proven with its virtual connector"

PlannerValue = Text | Integer | Annotated[float, Field(allow_inf_nan=False)] | bool


class RoleBounds(Strict):
    """How many workers of one role the planner may run: it starts with `min`."""

    min: PositiveCount
    max: PositiveCount

    @model_validator(mode="after")
    def _min_within_max(self) -> RoleBounds:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is more than max {self.max}")
        return self


class AutoscaleSpec(Strict):
    # reserved: GPUs held for every role's max, standby workers started in place; elastic: extra Slurm jobs.
    capacity: Literal["reserved", "elastic"] = "reserved"
    prefill: RoleBounds | None = None
    decode: RoleBounds | None = None
    agg: RoleBounds | None = None
    planner: dict[str, PlannerValue] = {}

    @field_validator("planner")
    @classmethod
    def _dynamo_planner_options(cls, options: dict[str, PlannerValue]) -> dict[str, PlannerValue]:
        for name, value in options.items():
            if name not in PLANNER_OPTIONS:
                raise ValueError(
                    f"{name}: Dynamo's planner has no such option{did_you_mean(name, sorted(PLANNER_OPTIONS))}"
                )
            if name in PLANNER_BOUNDS:
                raise ValueError(
                    f"{name}: the planner's bounds come from autoscale's per-role min and max (its minimum "
                    "endpoints from min, its GPU budget from max): set those instead"
                )
            if name in PLANNER_DERIVED:
                raise ValueError(f"{name}: slurmserve sets this from the recipe and the plan")
            if name == "optimization_target" and value != "load":
                raise ValueError(SLA_REFUSAL if value == "sla" else f"optimization_target {value!r}: {ONLY_LOAD}")
        return options

    def bounds(self) -> dict[str, RoleBounds]:
        """The autoscaled roles and their bounds."""
        return {role: bounds for role in ("prefill", "decode", "agg") if (bounds := getattr(self, role)) is not None}

    def check_against(self, mode: str, pools: bool, discovery: str, sections: dict[str, Any]) -> None:
        """Against the recipe: bounds for the mode's own roles only, each autoscaled role starting with its min
        (not another `replicas`), etcd discovery, no pools. `sections`: the recipe's worker sections by role."""
        if pools:
            raise ValueError("autoscale: not with pools (the planner scales the one pool of a deployment)")
        if discovery == "file":
            raise ValueError("discovery: autoscaling needs etcd (the planner's decisions live there); use etcd or auto")
        roles = ("prefill", "decode") if mode == "disagg" else ("agg",)
        bounds = self.bounds()
        if not bounds:
            raise ValueError(f"autoscale: give the bounds of at least one of {' or '.join(roles)} ({{min: 1, max: 2}})")
        for role, scale in bounds.items():
            if role not in roles:
                raise ValueError(f"autoscale.{role}: mode {mode} has no {role} workers (it has {', '.join(roles)})")
            spec = sections[role]
            if "replicas" in spec.model_fields_set and spec.replicas != scale.min:
                raise ValueError(
                    f"{role}.replicas: an autoscaled role starts with autoscale.{role}.min workers "
                    f"({scale.min}), not {spec.replicas}; set that instead"
                )
