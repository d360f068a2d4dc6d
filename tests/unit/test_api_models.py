"""The response models of smithers.shared.api read what the gateway sends and write it back
unchanged: same fields, null where it sends null, absent where it leaves a field out."""

from __future__ import annotations

from typing import Any

from smithers.shared.api import AuditTrail, Event, Migration, Run, RunSummary, TimeTravelResult
from smithers.shared.status import RunStatus
from smithers.shared.store.records import EventRecord, RunRecord


def _round_trip(model: Any, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = model.model_validate(body).model_dump(mode="json", by_alias=True)
    return out


def test_an_event_as_the_streams_send_it_round_trips() -> None:
    record = EventRecord("r1", 3, None, "node.started", "a", 0, "att-1", {"k": [1, None]}, 12.5)
    assert _round_trip(Event, record.to_json()) == record.to_json()


def test_time_travel_results_keep_only_their_action_s_fields() -> None:
    common = {"audit_id": 7, "run_id": "r1", "revision": "abc", "workflow_version": "1"}
    rewind = {**common, "action": "rewind", "node_id": "b", "reopened": ["b", "c"],
              "node_rows_removed": 2, "cache_rows_removed": 0, "patches_reverted": 0}  # fmt: skip
    fork = {**common, "action": "fork", "new_run_id": "r1-fork", "from_node": "b"}
    assert _round_trip(TimeTravelResult, rewind) == rewind  # no "item", no "new_run_id"
    assert _round_trip(TimeTravelResult, {**rewind, "item": 2}) == {**rewind, "item": 2}
    assert _round_trip(TimeTravelResult, fork) == fork


def test_an_audit_trail_keeps_each_entry_s_own_fields_and_nulls() -> None:
    trail = {
        "run": None,
        "entries": [
            {"at": 1.0, "source": "event", "type": "run.launched", "seq": 1, "node_id": None,
             "iteration": None, "detail": {}},
            {"at": 2.0, "source": "audit", "type": "run.deleted", "actor": "ann", "target": "run:r1",
             "detail": None},
            {"at": 3.0, "source": "time_travel", "type": "time_travel.rewind", "actor": "ann",
             "status": "success", "finished_at": None, "detail": {"params": {}, "result": {}}},
        ],
    }  # fmt: skip
    assert _round_trip(AuditTrail, trail) == trail


def test_a_run_and_its_summary_as_the_gateway_wrote_them_round_trip() -> None:
    record = RunRecord(
        "r1", "wf", "1", "rev", "dep", {"n": 1}, RunStatus.FAILED, False, 1.0, 2.0, 3.0, None,
        {"code": "boom"}, "ann", None, 4, parent_node_id="child", parent_iteration=0, priority=3,
    )  # fmt: skip
    wrote = {**vars(record), "status": "failed"}  # what the gateway sent before the models
    assert _round_trip(Run, wrote) == wrote
    summary = {k: v for k, v in wrote.items() if k not in ("input", "output")}
    assert _round_trip(RunSummary, wrote) == summary


def test_a_migration_keeps_from_and_to() -> None:
    run = {**vars(RunRecord("r1", "wf", "1", "rev", "dep", {}, RunStatus.QUEUED, False, 1.0, 1.0,
                            None, None, None, None, None, 1)), "status": "queued"}  # fmt: skip
    body = {"run_id": "r1", "from": "a", "to": "b", "note": None, "migrated_by": "ann", "run": run}
    assert _round_trip(Migration, body) == body
