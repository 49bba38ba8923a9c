"""What `status` shows, rendered at 80 columns (as on a pipe or a default terminal): what a user copies
(run names, endpoints, process names) stays whole; what does not fit goes on lines of its own."""

from __future__ import annotations

import io
import time

from rich.console import Console

from slurmserve import deploy
from slurmserve.cli.output import gpu_ranges
from slurmserve.cli.status_output import run_list, status_view
from slurmserve.runs import CanaryResult, LiveMetrics, ProcessState, Verdict, WorkerLive
from slurmserve.runs.records import PlannerDecision, RoleCounts
from slurmserve.runtime.status import ProcessStatus

RUN = "mocker-two-pools-disagg-20261207-142725-a2c0"  # as long as a default run name gets
ENDPOINT = "http://127.0.0.1:29758"


def rendered(renderable: object, width: int = 80, soft_wrap: bool = True) -> list[str]:
    """What a person reads: the CLI's console settings, at `width` columns, without colour. Without
    `soft_wrap`, as `status --watch` (rich's Live) draws it: cropped to the width."""
    out = io.StringIO()
    Console(file=out, width=width, soft_wrap=soft_wrap, color_system=None).print(renderable)
    return out.getvalue().splitlines()


def process(name: str, gpus: list[int], pool: str | None = None) -> ProcessStatus:
    return ProcessStatus(name, "decode", ["gpu01"], gpus, {}, ProcessState.READY, time.time() - 5, pool=pool)


def report(**fields: object) -> deploy.RunStatus:
    processes = [
        process("prefill-fast-0", [0, 1], "prefill-fast"),
        process("prefill-fast-router", [], "prefill-fast"),
        process("decode-0", list(range(8)), "decode"),
        process("global-router", []),
    ]
    base: dict[str, object] = dict(
        run=RUN,
        recipe="mocker-two-pools-disagg",
        backend="local",
        verdict=Verdict.READY,
        reason=f"serving at {ENDPOINT}",
        supervised=True,
        scheduler="processes on this machine",
        endpoint=ENDPOINT,
        processes=processes,
    )
    return deploy.RunStatus(**(base | fields))  # type: ignore[arg-type]


def test_the_run_list_keeps_run_names_and_endpoints_whole_at_80_columns():
    lines = rendered(run_list([report()], [], 80))
    assert any(RUN in line for line in lines) and any(ENDPOINT in line for line in lines), lines
    assert all(len(line) <= 80 for line in lines)
    assert not any("recipe" in line for line in lines)  # no room: the run name starts with it anyway
    wide = rendered(run_list([report()], [], 120), width=120)
    assert any("recipe" in line for line in wide) and any("mocker-two-pools-disagg " in line for line in wide)


def test_a_runs_processes_and_endpoint_are_whole_at_80_columns_with_the_footer_under_them():
    lines = rendered(status_view(report()))
    text = "\n".join(lines)
    for name in ("prefill-fast-0", "prefill-fast-router", "decode-0", "global-router"):
        assert any(f" {name} " in line for line in lines), text
    assert f"endpoint {ENDPOINT}" in text and "0-7" in text  # eight GPUs in three characters
    # The table fits; a longer line under it is left whole (a pipe keeps it, a terminal wraps it).
    assert all(len(line) <= 80 for line in lines if "│" in line or "┃" in line), text


def test_watch_says_how_to_quit_on_its_first_line_and_wraps_the_rest_between_words():
    watched = rendered(status_view(report(), watching=True), soft_wrap=False)
    assert "Ctrl-C to quit" in watched[0] and all(len(line) <= 80 for line in watched), watched
    assert f"(serving at {ENDPOINT})" in " ".join(" ".join(watched).split())  # wrapped, the endpoint whole
    assert not any("Ctrl-C" in line for line in rendered(status_view(report())))


def test_live_figures_say_kv_cache_n_a_and_that_they_count_the_canaries():
    live = LiveMetrics(
        at=time.time(),
        window_s=60,
        requests_per_s=1.5,
        in_flight=0,
        queued=0,
        output_tokens_per_s=40,
        kv_hit_rate=0.87,
        workers={
            "decode-0": WorkerLive(requests_per_s=1.5, kv_cache_usage=0.25),
            "prefill-fast-0": WorkerLive(requests_per_s=1),
        },
    )
    canary = CanaryResult(ok=True, at=time.time(), latency_s=0.1)
    text = "\n".join(rendered(status_view(report(metrics=live, pool_canaries={"prefill-fast": canary}))))
    assert "KV hit rate 87% (dynamo_frontend_cached_tokens / prompt tokens)" in text
    assert live.kv_hit_rate_from.startswith("dynamo_frontend_cached_tokens_sum / ")
    assert "decode-0: 1.50 req/s, KV cache 25%" in text and "prefill-fast-0: 1.00 req/s, KV cache n/a" in text
    assert "(counting the supervisor's canary completions: 1 every 10 s, and 1 a pool)" in text
    assert "its canary 0 s ago: served by its workers in 0.1 s" in text


def test_gpu_ranges():
    assert [gpu_ranges(g) for g in ([], [3], [0, 1], [0, 1, 2, 3], [0, 1, 2, 3, 6], [4, 5, 6, 7])] == [
        "-",
        "3",
        "0,1",
        "0-3",
        "0-3,6",
        "4-7",
    ]


def test_autoscaling_shows_each_roles_counts_and_the_planners_last_decision():
    autoscaled = report(
        autoscale={"decode": RoleCounts(min=1, max=3, desired=3, actual=2)},
        planner=PlannerDecision(decision_id=4, counts={"decode": 3}, at=time.time() - 2),
    )
    text = "\n".join(rendered(status_view(autoscaled)))
    assert "autoscale decode: 2 ready of 3 asked (min 1, max 3)" in text
    assert "planner: decision 4 (decode 3) 2 s ago, being met" in text
    reasoned = PlannerDecision(decision_id=4, counts={"decode": 3}, at=time.time(), reason="scaling up to 3")
    assert "planner's reason: scaling up to 3" in "\n".join(rendered(status_view(report(planner=reasoned))))
    unmet = PlannerDecision(decision_id=5, counts={"decode": 3}, at=time.time() - 2, acknowledged=True)
    unmet.failed = "decode 3 asked, at most 2 can start"
    text = "\n".join(rendered(status_view(report(planner=unmet))))
    assert "decision 5 (decode 3) 2 s ago, acknowledged as failed: decode 3 asked, at most 2 can start" in text
