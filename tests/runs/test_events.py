"""events.jsonl through its typed events: one model per kind, lines of the same shape as before, and a
line that is not an event of a kind (with its fields) that this version knows skipped, not fatal."""

from __future__ import annotations

import json
import typing

import pytest
from pydantic import ValidationError

from slurmserve.runs import ProcessState, RunDir
from slurmserve.runs.events import CanaryChanged, Cancelled, EventKind, Failed, Restarted, RunEvent, StateChanged


def test_every_kind_has_one_model():
    union = typing.get_args(typing.get_args(RunEvent)[0])
    kinds = [model.model_fields["event"].default for model in union]
    assert sorted(kinds) == sorted(EventKind) and len(set(kinds)) == len(kinds)


def test_a_typed_event_reads_back_as_itself_its_fields_at_the_top_level(tmp_path):
    run = RunDir(tmp_path)
    written = [
        StateChanged(process="agg-0", previous=ProcessState.STARTING, state=ProcessState.READY),
        Restarted(process="agg-0", requested=True),
        CanaryChanged(ok=False, at=1.5, latency_s=10.0, error="no answer"),
        Cancelled(leftovers=["agg-0"]),
    ]
    for event in written:
        run.record(event)
    assert run.events() == written
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    # As older versions wrote them: a field with nothing to say (the state change's reason) left out.
    assert lines[0] == {
        "version": 1,
        "time": written[0].time,
        "event": "state",
        "process": "agg-0",
        "previous": "starting",
        "state": "ready",
    }
    assert lines[2]["event"] == "canary" and lines[2]["error"] == "no answer"


def test_a_kind_with_keyword_fields_is_checked_against_its_model(tmp_path):
    run = RunDir(tmp_path)
    run.record(EventKind.RESTARTED, process="agg-0", restarts=2)
    (event,) = run.events()
    assert isinstance(event, Restarted) and event.restarts == 2 and not event.requested
    with pytest.raises(TypeError, match="carries no proces"):
        run.record(EventKind.RESTARTED, proces="agg-0", process="agg-0")  # a typo is not written, unseen
    with pytest.raises(ValidationError):
        run.record(EventKind.RESTARTED)  # which process?
    with pytest.raises(ValidationError):
        run.record(EventKind.FAILED, dead="agg-0")  # a list of processes
    assert len(run.events()) == 1, "nothing half-written"


def test_a_line_that_is_not_its_kind_is_skipped_and_a_newer_writers_extra_field_ignored(tmp_path):
    run = RunDir(tmp_path)
    other_lines = [
        {"version": 1, "time": "t", "event": "restarted"},  # no process: an older or newer writer's
        {"version": 1, "time": "t", "event": "state", "process": "a", "previous": "pending", "state": "asleep"},
        {"version": 1, "time": "t", "event": "a kind from the future"},
        {"version": 1, "time": "t"},
        ["not", "an", "event"],
    ]
    newer = {"version": 1, "time": "t", "event": "failed", "reason": "r", "exit_code": 3}
    with open(tmp_path / "events.jsonl", "w") as events:
        events.writelines(json.dumps(line) + "\n" for line in [*other_lines, newer])
    assert run.events() == [Failed(time="t", reason="r")]
