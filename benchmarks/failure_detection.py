"""A worker SIGKILLed while clients send requests: what slurmserve's supervisor does, next to the same
kill with Dynamo's default etcd lease and no supervisor.

Local backend, mock engine, real frontend and etcd (etcd discovery, as across nodes). Each case submits
mocker-disagg, starts a client sending one small completion after another, SIGKILLs decode-0 and
watches for OBSERVE_S seconds. Printed per case:

- detection: kill -> the supervisor's "failed" event (slurmserve); kill -> the frontend no longer lists
  the dead instance (upstream: the only moment anything reacts);
- client error window: the total time the client saw failing requests;
- recovery: kill -> the deployment ready again with every planned worker (upstream: never; nobody
  restarts the worker, the deployment serves on at reduced capacity or not at all).

Cases: slurmserve with 1 decode worker (every request fails until the restart) and with 2 (the survivor
takes over once the dead one is dropped); upstream (default lease, no supervisor) with 2.

    python benchmarks/failure_detection.py
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from slurmserve import deploy
from slurmserve.backends import backend_for, traits_for
from slurmserve.backends.base import stop_helpers
from slurmserve.health.instances import InstanceOwners
from slurmserve.render.files import rendered_files, write_files
from slurmserve.runs import create_run, open_run
from slurmserve.runtime.launch import wait_for_deployment
from slurmserve.transport.http import frontend_instances
from slurmserve.waiting import wait_until
from tests.helpers import ClientLoop, event_time

OBSERVE_S = 40.0  # longer than the default lease takes to expire (~26 s)
SETS = [
    "discovery=etcd",
    "prefill.tensor_parallel=2",
    "prefill.expert_parallel=1",
    "decode.tensor_parallel=2",
    "decode.expert_parallel=1",
]  # two decode workers in 8 GPUs


def start(name: str, decode_replicas: int, upstream: bool):
    """A running deployment; `upstream`: no ETCD_LEASE_TTL (Dynamo's default lease) and no supervisor."""
    sets = [*SETS, f"decode.replicas={decode_replicas}"]
    if not upstream:
        return deploy.submit(deploy.prepare("mocker-disagg", None, sets, name=name), timeout=120).run
    plan = deploy.plan_for(deploy.load_inputs("mocker-disagg", None, sets), name)
    for process in plan.processes:
        process.env.pop("ETCD_LEASE_TTL", None)
    run = create_run(plan)
    write_files(rendered_files(plan, traits_for(plan.backend)), run.path, overwrite=True)
    backend = backend_for(plan.backend)
    wait_for_deployment(backend, backend.submit(plan, run), run, plan, 120)
    stop_helpers(run, "supervisor")
    return run


def listed(run, process: str) -> bool:
    plan = run.plan()
    owners = InstanceOwners(plan)
    return any(owners.owner(instance) == process for instance in frontend_instances(plan.endpoint) or [])


def first_event_after(run, kind: str, since: float, **fields) -> float | None:
    for event in (e.model_dump(mode="json") for e in run.events()):
        if event["event"] == kind and event_time(event) >= since and all(event.get(k) == v for k, v in fields.items()):
            return event_time(event) - since
    return None


def measure(name: str, decode_replicas: int, upstream: bool) -> dict:
    run = start(name, decode_replicas, upstream)
    plan = run.plan()
    try:
        with ClientLoop(plan.endpoint, plan.model) as client:
            time.sleep(2)
            killed_at = time.time()
            os.kill(run.pid("decode-0"), signal.SIGKILL)
            if upstream:
                wait_until(lambda: not listed(run, "decode-0"), OBSERVE_S)
                detection = time.time() - killed_at if not listed(run, "decode-0") else None
            time.sleep(max(0.0, killed_at + OBSERVE_S - time.time()))
        if not upstream:
            detection = first_event_after(run, "state", killed_at, process="decode-0", state="failed")
        recovery = None if upstream else first_event_after(run, "deployment", killed_at, verdict="ready")
        return {
            "case": name,
            "detection_s": detection,
            "error_window_s": client.error_window_s(),
            "recovery_s": recovery,
            "requests": len(client.results),
            "failed": sum(not ok for _, ok in client.results),
        }
    finally:
        deploy.cancel(open_run(name))


def seconds(value: float | None, never: str) -> str:
    return never if value is None else f"{value:.2f} s"


def main() -> None:
    os.environ.setdefault("SLURMSERVE_HOME", tempfile.mkdtemp(prefix="slurmserve-bench-"))
    os.environ["SLURM_CONF"] = "/nonexistent"  # the local backend, even beside the test cluster
    stamp = int(time.time())
    cases = [
        measure(f"fd-slurmserve-1decode-{stamp}", 1, upstream=False),
        measure(f"fd-slurmserve-2decode-{stamp}", 2, upstream=False),
        measure(f"fd-upstream-2decode-{stamp}", 2, upstream=True),
    ]
    print(f"SIGKILL of decode-0, client loop, {OBSERVE_S:g} s observed after the kill (local backend, etcd discovery)")
    print(f"{'case':<34}{'detection':>12}{'client errors':>16}{'recovery':>12}{'failed/requests':>18}")
    for case in cases:
        label = case["case"].rsplit("-", 1)[0].removeprefix("fd-")
        print(
            f"{label:<34}{seconds(case['detection_s'], 'not seen'):>12}{case['error_window_s']:>14.2f} s"
            f"{seconds(case['recovery_s'], 'never'):>12}{case['failed']:>10}/{case['requests']}"
        )
    ours, theirs = cases[1], cases[2]
    if ours["detection_s"] and theirs["detection_s"]:
        print(
            f"detection, upstream / slurmserve (2 decode workers): {theirs['detection_s'] / ours['detection_s']:.0f}x"
        )
    print(
        f"client error window, upstream / slurmserve (2 decode workers): "
        f"{theirs['error_window_s']:.2f} s / {ours['error_window_s']:.2f} s"
    )


if __name__ == "__main__":
    main()
