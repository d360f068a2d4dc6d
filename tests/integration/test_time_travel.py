"""Time travel end to end: rewind, replay, fork, their audit rows and guards."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from smithers.shared import operations
from smithers.shared.errors import Conflict, InvalidInput, RateLimited
from smithers.shared.status import RunStatus
from smithers.shared.store import schema as s
from smithers.shared.store.queries import attempts_of, get_run
from smithers.shared.store.trail import run_trail
from tests.integration.conftest import Engine


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def travel(engine: Engine, action: str, run_id: str, node: str, **kw: object) -> dict[str, object]:
    return operations.time_travel(
        engine.store,
        engine.broker,
        engine.registry,
        action=action,
        run_id=run_id,
        node_id=node,
        caller="ops",
        confirm=kw.pop("confirm", True),
        **kw,
    )  # type: ignore[arg-type]


def audit(engine: Engine) -> list[tuple[str, str]]:
    with engine.store.read() as conn:
        t = s.time_travel_audit
        return [(r.action, r.status) for r in conn.execute(select(t).order_by(t.c.id))]


def test_rewind_reopens_the_node_and_everything_downstream(engine: Engine, tmp_path: Path) -> None:
    effects = tmp_path / "effects.txt"
    run_id = engine.launch("t-chain", {"effects": str(effects)})
    assert engine.wait(run_id).status is RunStatus.SUCCEEDED

    result = travel(engine, "rewind", run_id, "c")
    run = engine.wait(run_id, timeout=60)

    assert result["reopened"] == ["c", "d", "e"]
    assert run.status is RunStatus.SUCCEEDED and run.output == {"e": {"value": 5}}
    assert lines(effects) == ["a:0", "b:0", "c:0", "d:0", "e:0", "c:0", "d:0", "e:0"]
    assert audit(engine) == [("rewind", "success")]
    assert "run.rewound" in [e.type for e in engine.events(run_id)]
    with engine.store.read() as conn:  # the reopened nodes' attempts number on (counted)
        numbers = sorted((a.node_id, a.number) for a in attempts_of(conn, run_id))
    assert numbers == [("a", 1), ("b", 1), ("c", 1), ("c", 2), ("d", 1), ("d", 2), ("e", 1), ("e", 2)]


def test_rewind_needs_confirm_and_writes_nothing_without_it(engine: Engine) -> None:
    run_id = engine.launch("t-chain")
    engine.wait(run_id)
    with pytest.raises(InvalidInput, match="confirm"):
        travel(engine, "rewind", run_id, "c", confirm=False)
    with pytest.raises(InvalidInput, match="no node 'zz'"):
        travel(engine, "rewind", run_id, "zz")
    assert audit(engine) == []


def test_one_rewind_per_run_at_a_time_and_a_rate_limit_per_caller(engine: Engine) -> None:
    run_id = engine.launch("t-chain")
    engine.wait(run_id)
    with engine.store.write() as tx:
        tx.insert(
            s.time_travel_audit,
            {
                "run_id": run_id,
                "action": "rewind",
                "caller": "other",
                "status": "in_progress",
                "params": {},
                "started_at": tx.now,
                "result": None,
                "finished_at": None,
            },
        )
    with pytest.raises(Conflict, match="already in progress"):
        travel(engine, "rewind", run_id, "d")

    other = engine.launch("t-chain")
    engine.wait(other)
    travel(engine, "replay", other, "e", per_minute=2)
    travel(engine, "replay", other, "e", per_minute=2)
    with pytest.raises(RateLimited):
        travel(engine, "replay", other, "e", per_minute=2)


def test_leftover_in_progress_rows_become_partial_when_a_scheduler_starts(engine: Engine) -> None:
    run_id = engine.launch("t-chain")
    engine.wait(run_id)
    with engine.store.write() as tx:
        tx.insert(
            s.time_travel_audit,
            {
                "run_id": run_id,
                "action": "rewind",
                "caller": "crashed",
                "status": "in_progress",
                "params": {},
                "started_at": tx.now - 600,
                "result": None,
                "finished_at": None,
            },
        )
    engine.kill9("scheduler")
    engine.scheduler()
    deadline = time.time() + 20
    while audit(engine) != [("rewind", "partial")] and time.time() < deadline:
        time.sleep(0.2)
    assert audit(engine) == [("rewind", "partial")]


def test_replay_and_fork_make_new_runs_with_lineage_keeping_upstream_work(
    engine: Engine, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.txt"
    source = engine.launch("t-chain", {"effects": str(effects)})
    engine.wait(source)

    replayed = travel(engine, "replay", source, "d", new_run_id="replayed-1")
    forked = travel(engine, "fork", source, "b", new_input={"effects": str(effects), "sleep": 0})
    replay_run = engine.wait("replayed-1")
    fork_run = engine.wait(str(forked["new_run_id"]))

    assert replayed["new_run_id"] == "replayed-1"
    assert replay_run.status is fork_run.status is RunStatus.SUCCEEDED
    assert replay_run.parent_run_id == source and replay_run.output == {"e": {"value": 5}}
    assert fork_run.input == {"effects": str(effects), "sleep": 0}
    # the source ran a..e once; the replay re-ran d, e; the fork re-ran b..e
    assert sorted(lines(effects)) == sorted(
        ["a:0", "b:0", "c:0", "d:0", "e:0", "d:0", "e:0", "b:0", "c:0", "d:0", "e:0"]
    )
    with engine.store.read() as conn:
        lineage = get_run(conn, "replayed-1")
        assert lineage is not None
        trail = run_trail(conn, source)
    assert [e["type"] for e in trail["entries"] if e["source"] == "time_travel"] == [
        "time_travel.replay",
        "time_travel.fork",
    ]


def test_rewinding_a_cached_node_drops_its_cache_rows(engine: Engine, tmp_path: Path) -> None:
    effects = tmp_path / "effects.txt"
    run_id = engine.launch("t-cache-wf-a", {"effects": str(effects)})
    engine.wait(run_id)

    result = travel(engine, "rewind", run_id, "expensive")
    engine.wait(run_id)

    assert result["cache_rows_removed"] == 1
    assert lines(effects).count("t-cache-wf-a:expensive:0") == 2


def test_the_audit_trail_outlives_a_deleted_run(engine: Engine) -> None:
    run_id = engine.launch("t-chain")
    engine.wait(run_id)
    travel(engine, "rewind", run_id, "e")
    engine.wait(run_id)
    operations.delete(engine.store, run_id, "admin-7")
    with engine.store.read() as conn:
        trail = run_trail(conn, run_id)
    assert trail["run"] is None
    kinds = [(e["source"], e["type"]) for e in trail["entries"]]
    assert ("time_travel", "time_travel.rewind") in kinds and ("audit", "run.deleted") in kinds


def test_rewinding_a_sandbox_step_withdraws_its_accepted_patch(engine: Engine) -> None:
    run_id = engine.launch("t-chain")
    engine.wait(run_id)
    with engine.store.write() as tx:  # as if step d had been a reviewed, accepted sandbox step
        attempt = next(a for a in attempts_of(tx.conn, run_id) if a.node_id == "d")
        tx.insert(
            s.sandboxes,
            {
                "sandbox_id": "sbx-test",
                "run_id": run_id,
                "node_id": "d",
                "iteration": 0,
                "attempt_id": attempt.attempt_id,
                "runtime": "docker",
                "image": "smithers-sandbox:latest",
                "image_digest": None,
                "container_id": None,
                "limits": {},
                "status": "succeeded",
                "review_status": "accepted",
                "bundle_path": "/tmp/x",
                "request_bytes": 1,
                "result_bytes": 1,
                "manifest": None,
                "error": None,
                "created_at": tx.now,
                "finished_at": tx.now,
            },
        )

    result = travel(engine, "rewind", run_id, "c")

    assert result["patches_reverted"] == 1
    with engine.store.read() as conn:
        status = conn.execute(select(s.sandboxes.c.review_status)).scalar_one()
    assert status == "reverted"
