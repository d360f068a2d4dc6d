"""The engine end to end: a real scheduler and Celery worker, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from smithers.shared import operations
from smithers.shared.errors import Forbidden
from smithers.shared.status import RunStatus
from smithers.shared.store.queries import attempts_of, nodes_of, outputs_for
from tests.integration.conftest import Engine


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_fan_out_and_fan_in_run_each_step_once(engine: Engine, tmp_path: Path) -> None:
    effects = tmp_path / "effects.txt"
    run_id = engine.launch("t-fan", {"effects": str(effects)})

    run = engine.wait(run_id)

    assert run.status is RunStatus.SUCCEEDED
    assert run.output == {"join": sum(k + 1 for k in range(6))}
    assert sorted(lines(effects)) == sorted(["root:0", "join:0"] + [f"p{k}:0" for k in range(6)])
    seqs = [e.seq for e in engine.events(run_id)]
    assert seqs == list(range(1, len(seqs) + 1))  # gap-free, in order
    assert sum(1 for e in engine.events(run_id) if e.type == "node.succeeded" and e.node_id == "join") == 1


def test_steps_and_branches_read_outputs_of_every_node_they_depend_on(engine: Engine) -> None:
    # given origin -> middle -> parity (branch on origin) -> odd | even -> report -> loop -> done
    run_id = engine.launch("t-lineage", {"seed": 1})

    run = engine.wait(run_id)

    # then the branch chose on a grandparent, the report read every ancestor by name (the
    # skipped path as None) while ctx.outputs kept its direct parents, a loop body read a
    # node upstream of its loop's upstream, and the node after the loop may not read the body
    assert run.status is RunStatus.SUCCEEDED, run.error
    with engine.store.read() as conn:
        report = outputs_for(conn, run_id, ["report"])[("report", 0)]
    assert report == {"origin": {"seed": 1}, "middle": 10, "even": None, "parents": ["even", "odd"]}
    assert run.output == {
        "done": {
            "iterations": 3,
            "seed": 1,
            "body": "node 'done' does not depend on 'accumulate_step': its output is not readable",
        }
    }
    with engine.store.read() as conn:
        statuses = {n.node_id: n.status.value for n in nodes_of(conn, run_id)}
    assert statuses["even"] == "skipped" and statuses["odd"] == "succeeded"


def test_failed_attempts_are_retried_with_backoff(engine: Engine) -> None:
    run_id = engine.launch("t-retry", {"fail_times": 2})

    run = engine.wait(run_id)

    assert run.status is RunStatus.SUCCEEDED
    assert run.output == {"flaky": {"attempt": 3}}
    with engine.store.read() as conn:
        states = [a.state.value for a in attempts_of(conn, run_id)]
    assert states == ["failed", "failed", "succeeded"]


def test_retries_exhausted_fail_the_run_with_the_error(engine: Engine) -> None:
    run_id = engine.launch("t-retry", {"fail_times": 9})

    run = engine.wait(run_id)

    assert run.status is RunStatus.FAILED
    assert run.error is not None and run.error["node_id"] == "flaky"
    assert "attempt 4" in run.error["message"]


def test_step_past_its_timeout_is_retried_then_failed(engine: Engine, tmp_path: Path) -> None:
    effects = tmp_path / "effects.txt"
    run_id = engine.launch("t-timeout", {"sleep": 4, "effects": str(effects)})

    run = engine.wait(run_id, timeout=60)

    assert run.status is RunStatus.FAILED
    assert run.error is not None and run.error["code"] == "timeout"
    with engine.store.read() as conn:
        states = [a.state.value for a in attempts_of(conn, run_id)]
    assert states == ["timed_out", "timed_out"]
    assert lines(effects) == ["start1:0", "start2:0"]


def test_approval_waits_then_owner_rules_apply(engine: Engine) -> None:
    run_id = engine.launch("t-approval")
    engine.wait(run_id, until={RunStatus.WAITING})

    with pytest.raises(Forbidden):  # not the owner
        operations.approve(
            engine.store, engine.broker, run_id, "gate", approved=True, note="x", actor="mallory"
        )
    time.sleep(1.1)  # past escalate_after_s: the fallback owner may decide
    operations.approve(engine.store, engine.broker, run_id, "gate", approved=True, note="lgtm", actor="bob")
    run = engine.wait(run_id)

    assert run.status is RunStatus.SUCCEEDED
    assert run.output == {"ship": {"by": "bob"}}
    decided = [e for e in engine.events(run_id) if e.type == "approval.decided"]
    assert decided[0].payload == {"approved": True, "note": "lgtm", "decided_by": "bob"}


def test_denied_approval_fails_the_run(engine: Engine) -> None:
    run_id = engine.launch("t-approval")
    engine.wait(run_id, until={RunStatus.WAITING})

    operations.approve(engine.store, engine.broker, run_id, "gate", approved=False, note="no", actor="alice")
    run = engine.wait(run_id)

    assert run.status is RunStatus.FAILED
    assert run.error is not None and run.error["code"] == "denied"


def test_branch_loop_and_timer(engine: Engine, tmp_path: Path) -> None:
    effects = tmp_path / "effects.txt"
    run_id = engine.launch("t-control", {"size": 42, "effects": str(effects)})

    run = engine.wait(run_id)

    assert run.status is RunStatus.SUCCEEDED
    assert run.output == {"finish": {"iterations": 3, "fired": True}}
    with engine.store.read() as conn:
        by_key = {(n.node_id, n.iteration): n.status.value for n in nodes_of(conn, run_id)}
    assert by_key[("small", 0)] == "skipped" and by_key[("big", 0)] == "succeeded"
    assert lines(effects) == ["draft:0", "draft:1", "draft:2"]


def test_cancel_stops_a_waiting_run(engine: Engine) -> None:
    run_id = engine.launch("t-approval")
    engine.wait(run_id, until={RunStatus.WAITING})

    operations.cancel(engine.store, engine.broker, run_id, "test")
    run = engine.wait(run_id)

    assert run.status is RunStatus.CANCELLED


def test_resume_reruns_only_what_did_not_finish(engine: Engine) -> None:
    run_id = engine.launch("t-approval")
    engine.wait(run_id, until={RunStatus.WAITING})
    operations.cancel(engine.store, engine.broker, run_id, "test")
    engine.wait(run_id)

    operations.resume(engine.store, engine.broker, run_id, "test")
    engine.wait(run_id, until={RunStatus.WAITING})
    operations.approve(engine.store, engine.broker, run_id, "gate", approved=True, note=None, actor="alice")
    run = engine.wait(run_id)

    assert run.status is RunStatus.SUCCEEDED
    with engine.store.read() as conn:
        prepares = [a for a in attempts_of(conn, run_id) if a.node_id == "prepare"]
    assert len(prepares) == 1  # the finished step did not run again


def test_two_schedulers_never_dispatch_a_step_twice(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given two schedulers racing over the same runs
    eng: Engine = engine_factory(database_url)
    eng.scheduler("scheduler-1")
    eng.scheduler("scheduler-2")
    eng.worker(concurrency=2)
    effects = tmp_path / "effects.txt"

    # when several fan-out/fan-in runs go through at once
    run_ids = [eng.launch("t-fan", {"effects": str(effects)}) for _ in range(6)]
    runs = [eng.wait(r, timeout=90) for r in run_ids]

    # then every step was dispatched and run exactly once
    assert all(r.status is RunStatus.SUCCEEDED for r in runs)
    assert len(lines(effects)) == 6 * 8
    with eng.store.read() as conn:
        for run_id in run_ids:
            attempts = attempts_of(conn, run_id)
            assert len(attempts) == 8
            assert len({(a.node_id, a.iteration) for a in attempts}) == 8
