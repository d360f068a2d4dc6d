"""Signals with a real Celery worker (and scheduler where time drives the run), on SQLite
and PostgreSQL: a run waits at its signal node; a signal over REST moves it on at once
(the gateway decides, no scheduler needed) and the next step reads the payload; a signal
sent before the run reaches the node is kept; a repeat is idempotent, a conflicting one
refused; bad payloads and names are refused with a clear error; the timeout fails the run.
"""

from __future__ import annotations

from typing import Any

import pytest

from smithers.shared import operations
from smithers.shared.errors import Conflict, InvalidInput, NotFound
from smithers.shared.registry import Registry
from smithers.shared.status import RunStatus
from smithers.shared.store.audit import audit_entries
from smithers.shared.store.signals import list_signals
from tests.integration.conftest import Engine
from tests.integration.gateway.support import make_gateway

pytestmark = pytest.mark.timeout(180)

DECIDING = 500  # the gateway decides the runs it changes, as `smithers gateway` does


def outputs(gw: Any, run_id: str) -> dict[str, Any]:
    detail = gw.client.get(f"/v1/runs/{run_id}", headers=gw.auth("run:read")).get_json()
    return {o["node_id"]: o["value"] for o in detail["outputs"]}


def test_a_signal_over_rest_moves_a_waiting_run_at_once(engine_factory: Any, database_url: str) -> None:
    # given a gateway that decides and a step worker, and no scheduler at all
    engine: Engine = engine_factory(database_url)
    engine.worker()
    with make_gateway(engine.database_url, engine.redis_url, decide_max_nodes=DECIDING) as gw:
        ci = gw.auth("run:read,run:write", "ci-bot")
        run_id = gw.client.post("/v1/runs", json={"workflow": "t-signal"}, headers=ci).get_json()["run_id"]
        # the run waits at its signal node, every worker free
        engine.wait_event(run_id, lambda e: e.type == "signal.waiting" and e.node_id == "ci", timeout=60)
        assert engine.wait(run_id, timeout=10, until={RunStatus.WAITING}).status is RunStatus.WAITING
        url = f"/v1/runs/{run_id}/signals/ci.done"

        # bad input is refused with a clear JSON error, and nothing is kept
        bad = gw.client.post(url, json={"payload": {"status": "blue"}}, headers=ci)
        assert bad.status_code == 400 and "payload.status" in bad.get_json()["error"]["message"]
        missing = gw.client.post(url, json={"payload": {}}, headers=ci)
        assert (
            missing.status_code == 400
            and "payload.status is required" in missing.get_json()["error"]["message"]
        )
        unknown = gw.client.post(f"/v1/runs/{run_id}/signals/deploy.done", json={}, headers=ci)
        assert unknown.status_code == 404 and "deploy.done" in unknown.get_json()["error"]["message"]
        no_run = gw.client.post("/v1/runs/run-nope/signals/ci.done", json={}, headers=ci)
        assert no_run.status_code == 404
        bad_id = gw.client.post(
            url, json={"signal_id": "no spaces", "payload": {"status": "green"}}, headers=ci
        )
        assert bad_id.status_code == 400
        reader = gw.client.post(url, json={"payload": {"status": "green"}}, headers=gw.auth("run:read"))
        assert reader.status_code == 403
        with engine.store.read() as conn:
            assert list_signals(conn, run_id) == []

        # when CI sends its result: the run moves on in that request's transaction
        body = {"signal_id": "ci-42", "payload": {"status": "green", "url": "https://ci/42"}}
        sent = gw.client.post(url, json=body, headers=ci)
        assert sent.status_code == 201, sent.get_json()
        first = sent.get_json()
        assert (first["signal_id"], first["sender"], first["name"]) == ("ci-42", "ci-bot", "ci.done")
        run = engine.wait(run_id, timeout=60)
        assert run.status is RunStatus.SUCCEEDED, run.error
        got = outputs(gw, run_id)
        assert got["after_ci"] == {"status": "green", "sender": "ci-bot", "signal_id": "ci-42"}
        assert got["ci"]["payload"] == body["payload"]

        # then a repeat returns the first delivery; another payload under that id is a conflict
        again = gw.client.post(url, json=body, headers=ci)
        assert again.status_code == 200 and again.get_json()["received_at"] == first["received_at"]
        assert again.get_json()["consumed_node"] == "ci"
        other = gw.client.post(url, json={"signal_id": "ci-42", "payload": {"status": "red"}}, headers=ci)
        assert other.status_code == 409
        late = gw.client.post(url, json={"signal_id": "ci-43", "payload": {"status": "red"}}, headers=ci)
        assert late.status_code == 409 and "ended" in late.get_json()["error"]["message"]

        types = [e.type for e in engine.events(run_id)]
        assert types.count("signal.received") == 1 and types.count("signal.consumed") == 1
        assert types.index("signal.received") < types.index("signal.consumed")
        with engine.store.read() as conn:
            [row] = audit_entries(conn, action="signal.received", run_id=run_id)
        assert row.actor == "ci-bot" and row.target_id == f"{run_id}/ci-42"


def test_a_signal_sent_early_is_kept_and_secrets_are_redacted(engine_factory: Any, database_url: str) -> None:
    engine: Engine = engine_factory(database_url)
    engine.worker()
    with make_gateway(engine.database_url, engine.redis_url, decide_max_nodes=DECIDING) as gw:
        ci = gw.auth("run:read,run:write", "ci-bot")
        launched = gw.client.post(
            "/v1/runs", json={"workflow": "t-signal", "input": {"sleep": 2}}, headers=ci
        )
        run_id = launched.get_json()["run_id"]
        # given a signal sent while the step before the signal node still runs
        payload = {"status": "red", "url": "https://user:hunter2@ci.example/7"}
        sent = gw.client.post(f"/v1/runs/{run_id}/signals/ci.done", json={"payload": payload}, headers=ci)
        assert sent.status_code == 201, sent.get_json()
        assert sent.get_json()["signal_id"].startswith("sig-")  # generated
        assert "hunter2" not in str(sent.get_json()["payload"])  # redacted before it was stored
        assert not any(e.type == "signal.waiting" for e in engine.events(run_id))
        # then the node takes it when it starts, without waiting
        run = engine.wait(run_id, timeout=60)
        assert run.status is RunStatus.SUCCEEDED, run.error
        assert outputs(gw, run_id)["after_ci"]["status"] == "red"
        assert not any(e.type == "signal.waiting" for e in engine.events(run_id))
        with engine.store.read() as conn:
            [kept] = list_signals(conn, run_id)
        assert (kept.consumed_node, kept.consumed_iteration) == ("ci", 0)


def test_the_timeout_fails_the_run_and_local_operations_check_like_rest(engine: Engine) -> None:
    started = engine.launch("t-signal-timeout")
    done = engine.wait(started, timeout=30)
    assert done.status is RunStatus.FAILED and done.error is not None
    assert done.error["code"] == "signal_timeout" and done.error["node_id"] == "wait"
    # the store checks the same way without the gateway (what `smithers signal` calls)
    other = engine.launch("t-signal")
    with pytest.raises(InvalidInput, match=r"payload\.status"):
        operations.signal(
            engine.store,
            None,
            Registry(),
            other,
            "ci.done",
            signal_id=None,
            payload={"status": 1},
            sender="op",
        )
    with pytest.raises(NotFound):
        operations.signal(
            engine.store, None, Registry(), other, "nope", signal_id=None, payload=None, sender="op"
        )
    with pytest.raises(Conflict):
        operations.signal(
            engine.store, None, Registry(), started, "never", signal_id="x", payload=None, sender="op"
        )


def test_a_rewound_signal_node_takes_its_signal_again(engine: Engine) -> None:
    run_id = engine.launch("t-signal")
    record, created = operations.signal(
        engine.store,
        engine.broker,
        engine.registry,
        run_id,
        "ci.done",
        signal_id="s-1",
        payload={"status": "green"},
        sender="op",
    )
    assert created and record.consumed_node is None  # kept: no decider here, the scheduler takes it on
    assert engine.wait(run_id, timeout=60).status is RunStatus.SUCCEEDED
    before = engine.events(run_id)[-1].seq  # the run has ended: nothing after it yet
    operations.time_travel(
        engine.store,
        engine.broker,
        engine.registry,
        action="rewind",
        run_id=run_id,
        node_id="ci",
        caller="op",
        confirm=True,
    )
    engine.wait_event(run_id, lambda e: e.type == "signal.consumed" and e.seq > before, timeout=60)
    done = engine.wait(run_id, timeout=60)
    assert done.status is RunStatus.SUCCEEDED, done.error
    consumed = [e for e in engine.events(run_id) if e.type == "signal.consumed"]
    assert [e.payload["signal_id"] for e in consumed] == ["s-1", "s-1"]
