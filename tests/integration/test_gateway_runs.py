"""Runs, approvals, workflows, probes, errors and the access log over REST, on SQLite
and PostgreSQL with a private Redis."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import sqlalchemy.exc
from sqlalchemy import select

import smithers.gateway.runs
from smithers.shared.errors import StoreUnavailable
from smithers.shared.status import RunStatus
from smithers.shared.store import schema as s
from smithers.shared.store.queries import events_after
from tests.integration.gateway.support import Gateway, make_gateway, module_database

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_server: str
) -> Iterator[Gateway]:
    pg = request.getfixturevalue("pg_admin") if request.param == "postgres" else None
    with (
        module_database(request.param, tmp_path_factory.mktemp("gw-runs"), pg) as url,
        make_gateway(url, redis_server, max_body_bytes=64 * 1024, auth_failures=10**6) as gateway,
    ):
        yield gateway


def rows(gw: Gateway) -> tuple[int, ...]:
    return tuple(gw.count(t) for t in (s.runs, s.events, s.nodes, s.audit_log, s.grants))


# -- launch ------------------------------------------------------------------------------


def test_launch_is_idempotent_by_run_id(gw: Gateway, redis_server: str) -> None:
    writer = gw.auth("run:write", "ci-bot")
    body = {"workflow": "t-chain", "input": {"sleep": 0}, "run_id": "idem-1"}
    redis.Redis.from_url(redis_server).delete("smithers:wake")

    first = gw.client.post("/v1/runs", json=body, headers=writer)
    again = gw.client.post("/v1/runs", json=body, headers=writer)
    other = gw.client.post("/v1/runs", json={**body, "input": {"sleep": 1}}, headers=writer)

    assert first.status_code == 201 and first.headers["Location"] == "/v1/runs/idem-1"
    assert (first.get_json()["run_id"], first.get_json()["status"]) == ("idem-1", "queued")
    assert first.get_json()["launched_by"] == "ci-bot"
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert other.status_code == 409 and other.get_json()["error"]["code"] == "conflict"
    # the scheduler was woken once, for the one run created
    assert redis.Redis.from_url(redis_server).lrange("smithers:wake", 0, -1) == [b"idem-1"]
    reader = gw.auth("run:read")
    events = gw.client.get("/v1/runs/idem-1/events?after_seq=0", headers=reader, stream=True)
    first_frame = next(iter(events.response))
    events.close()
    assert first_frame.startswith(b"retry:")


REFUSED = [
    ("unknown field", {"workflow": "t-chain", "inputs": {}}, 400, "unknown field 'inputs'"),
    ("wrong type", {"workflow": "t-chain", "input": []}, 400, "field 'input' must be object"),
    ("missing workflow", {"input": {}}, 400, "missing field 'workflow'"),
    ("credential key", {"workflow": "t-chain", "input": {"db": {"password": "x"}}}, 400, "input.db.password"),
    ("api key", {"workflow": "t-chain", "input": {"api_key": "x"}}, 400, "input.api_key looks like a"),
    ("secret value", {"workflow": "t-chain", "input": {"x": ["ghp_" + "a" * 36]}}, 400, "input.x[0] looks"),
    ("bad run id", {"workflow": "t-chain", "run_id": "Bad Id"}, 400, "run_id"),
    ("run id and newline", {"workflow": "t-chain", "run_id": "abc\n"}, 400, "run_id"),
    ("unknown workflow", {"workflow": "nope"}, 404, "unknown workflow 'nope'"),
    ("not an object", [1, 2], 400, "must be a JSON object"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "status", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_launches_write_nothing(gw: Gateway, case: str, body: Any, status: int, message: str) -> None:
    writer = gw.auth("run:write")
    before = rows(gw)
    response = gw.client.post("/v1/runs", json=body, headers=writer)
    assert response.status_code == status, response.get_json()
    assert message in response.get_json()["error"]["message"]
    assert rows(gw) == before


@pytest.mark.parametrize(
    ("case", "data", "status", "message"),
    [
        ("malformed", b'{"workflow": "t-chain",', 400, "malformed JSON"),
        ("duplicate key", b'{"workflow": "t-chain", "workflow": "t-fan"}', 400, "duplicate field 'workflow'"),
        ("NaN", b'{"workflow": "t-chain", "input": {"x": NaN}}', 400, "NaN is not valid JSON"),
        ("not utf-8", b'{"workflow": "\xff"}', 400, "malformed JSON"),
        ("empty", b"", 400, "a JSON object body is required"),
        ("deep", b'{"workflow": "t-chain", "input": ' + b'{"a":' * 200 + b"1" + b"}" * 201, 400, "nested"),
        (
            "too large",
            b'{"workflow": "t-chain", "input": {"x": "' + b"a" * 70_000 + b'"}}',
            413,
            "over 65536",
        ),
    ],
)
def test_malformed_bodies_write_nothing(
    gw: Gateway, case: str, data: bytes, status: int, message: str
) -> None:
    headers = {**gw.auth("run:write"), "Content-Type": "application/json"}
    before = rows(gw)
    response = gw.client.post("/v1/runs", data=data, headers=headers)
    assert response.status_code == status, response.get_json()
    assert response.get_json()["error"]["code"] == ("payload_too_large" if status == 413 else "invalid_input")
    assert message in response.get_json()["error"]["message"]
    assert rows(gw) == before


# -- list and read ----------------------------------------------------------------------


def test_list_filters_and_pages(gw: Gateway) -> None:
    mine = {gw.launch("t-chain") for _ in range(5)} | {gw.launch("t-fan") for _ in range(2)}
    done = gw.launch("t-fan")
    gw.finish(done)
    reader = gw.auth("run:read")

    seen: list[str] = []
    cursor: str | None = None
    while True:
        url = "/v1/runs?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = gw.client.get(url, headers=reader).get_json()
        assert len(page["runs"]) <= 3
        seen += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == gw.count(s.runs)
    assert mine | {done} <= set(seen)
    created = [
        r["created_at"] for r in gw.client.get("/v1/runs?limit=200", headers=reader).get_json()["runs"]
    ]
    assert created == sorted(created, reverse=True)

    fans = gw.client.get("/v1/runs?workflow=t-fan&limit=200", headers=reader).get_json()["runs"]
    assert {r["workflow"] for r in fans} == {"t-fan"}
    succeeded = gw.client.get("/v1/runs?status=succeeded&limit=200", headers=reader).get_json()["runs"]
    assert done in {r["run_id"] for r in succeeded} and {r["status"] for r in succeeded} == {"succeeded"}

    for bad in (
        "status=done",
        "status=",
        "status=queued&status=x",
        "limit=0",
        "limit=10000",
        "cursor=%%%",
        "cursor=WzEsMl0",
        "colour=red",
    ):
        response = gw.client.get(f"/v1/runs?{bad}", headers=reader)
        assert response.status_code == 400, bad


def test_read_run_with_its_nodes(gw: Gateway) -> None:
    run_id = gw.launch("t-approval", {"who": "me"})
    gw.seed_approval(run_id, owner="alice")
    reader = gw.auth("run:read")
    body = gw.client.get(f"/v1/runs/{run_id}", headers=reader).get_json()
    assert body["run"]["input"] == {"who": "me"} and body["run"]["status"] == "waiting"
    assert [(n["node_id"], n["status"]) for n in body["nodes"]] == [("gate", "waiting")]
    assert body["attempts"] == [] and body["outputs"] == []
    assert gw.client.get("/v1/runs/run-missing", headers=reader).status_code == 404
    assert gw.client.get("/v1/runs/NOT_VALID", headers=reader).status_code == 400
    assert gw.client.get("/v1/runs/abc%0A", headers=reader).status_code == 400


# -- cancel, resume, rerun, delete --------------------------------------------------------


def test_cancel_resume_and_rerun(gw: Gateway) -> None:
    writer = gw.auth("run:write", "operator")
    run_id = gw.launch("t-chain", {"sleep": 0.1})

    cancelled = gw.client.post(f"/v1/runs/{run_id}/cancel", headers=writer)
    assert cancelled.status_code == 200 and cancelled.get_json()["cancel_requested"] is True
    early = gw.client.post(f"/v1/runs/{run_id}/resume", headers=writer)
    assert early.status_code == 409

    gw.finish(run_id, RunStatus.CANCELLED)
    resumed = gw.client.post(f"/v1/runs/{run_id}/resume", headers=writer)
    assert resumed.status_code == 200
    assert (resumed.get_json()["run_id"], resumed.get_json()["status"]) == (run_id, "queued")

    rerun = gw.client.post(f"/v1/runs/{run_id}/rerun", headers=writer)
    assert rerun.status_code == 201
    new = rerun.get_json()
    assert new["run_id"] != run_id and new["parent_run_id"] == run_id
    assert (new["workflow"], new["input"], new["launched_by"]) == ("t-chain", {"sleep": 0.1}, "operator")

    chosen = {"run_id": f"{run_id}-again"}
    assert gw.client.post(f"/v1/runs/{run_id}/rerun", json=chosen, headers=writer).status_code == 201
    assert gw.client.post(f"/v1/runs/{run_id}/rerun", json=chosen, headers=writer).status_code == 200
    other = gw.launch("t-chain", {"sleep": 0.1})
    clash = gw.client.post(f"/v1/runs/{other}/rerun", json=chosen, headers=writer)
    assert clash.status_code == 409

    types = [e.type for e in _events(gw, run_id)]
    assert types == ["run.launched", "run.cancel_requested", "run.cancelled", "run.resumed"]
    assert gw.client.post("/v1/runs/run-missing/cancel", headers=writer).status_code == 404
    assert (
        gw.client.post(f"/v1/runs/{run_id}/cancel", json={"force": True}, headers=writer).status_code == 400
    )


def _events(gw: Gateway, run_id: str) -> list[Any]:
    with gw.store.read() as conn:
        return events_after(conn, run_id, 0, 1000)


def test_delete_removes_every_dependent_row_and_keeps_the_audit(gw: Gateway) -> None:
    run_id = gw.launch("t-approval")
    gw.seed_approval(run_id)
    gw.emit(run_id, n=3)
    admin = gw.auth("admin", "root")

    assert gw.client.delete(f"/v1/runs/{run_id}", headers=admin).status_code == 204

    with gw.store.read() as conn:
        for table in (s.runs, s.nodes, s.approvals, s.events):
            assert conn.execute(select(table).where(table.c.run_id == run_id)).first() is None, table.name
    (entry,) = [a for a in gw.audit("run.deleted") if a.run_id == run_id]
    assert (entry.actor, entry.detail["workflow"]) == ("root", "t-approval")
    assert gw.client.get(f"/v1/runs/{run_id}", headers=gw.auth("run:read")).status_code == 404
    assert gw.client.delete(f"/v1/runs/{run_id}", headers=admin).status_code == 404


# -- approvals --------------------------------------------------------------------------


def test_owner_decides_and_the_decision_is_recorded(gw: Gateway) -> None:
    run_id = gw.launch("t-approval")
    gw.seed_approval(run_id, owner="alice", fallback_owner="bob", escalate_at=time.time() + 3600)
    inbox = gw.client.get(f"/v1/approvals?status=pending&run_id={run_id}", headers=gw.auth("approval:read"))
    assert [(a["node_id"], a["owner"], a["status"]) for a in inbox.get_json()["approvals"]] == [
        ("gate", "alice", "pending")
    ]
    url = f"/v1/runs/{run_id}/approvals/gate"
    denied_before = len(gw.audit("request.denied"))

    bob = gw.client.post(url, json={"approved": True}, headers=gw.auth("approval:submit", "bob"))
    carol = gw.client.post(url, json={"approved": True}, headers=gw.auth("approval:submit", "carol"))
    note = "ship it; token Bearer abcdefghijklmnop"
    alice = gw.client.post(
        url,
        json={"approved": False, "note": note, "iteration": 0},
        headers=gw.auth("approval:submit", "alice"),
    )
    again = gw.client.post(url, json={"approved": True}, headers=gw.auth("approval:submit", "alice"))

    assert bob.status_code == carol.status_code == 403
    assert "belongs to 'alice'" in bob.get_json()["error"]["message"]
    assert [d.actor for d in gw.audit("request.denied")[denied_before:]] == ["bob", "carol"]
    assert alice.status_code == 200, alice.get_json()
    decided = alice.get_json()
    assert (decided["status"], decided["decided_by"]) == ("denied", "alice")
    assert decided["note"] == "ship it; token [redacted]" and decided["decided_at"] > 0
    assert again.status_code == 409
    (entry,) = [a for a in gw.audit("approval.decided") if a.run_id == run_id]
    assert (entry.actor, entry.detail["approved"]) == ("alice", False)
    assert [e.payload["decided_by"] for e in _events(gw, run_id) if e.type == "approval.decided"] == ["alice"]


def test_fallback_owner_decides_after_escalation(gw: Gateway) -> None:
    run_id = gw.launch("t-approval")
    gw.seed_approval(run_id, owner="alice", fallback_owner="bob", escalate_at=time.time() - 1)
    url = f"/v1/runs/{run_id}/approvals/gate"
    response = gw.client.post(
        url, json={"approved": True, "note": "covering"}, headers=gw.auth("approval:submit", "bob")
    )
    assert response.status_code == 200 and response.get_json()["decided_by"] == "bob"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/runs/run-missing/approvals/gate", {"approved": True}, 404),
        ("/v1/runs/{run}/approvals/other", {"approved": True}, 404),
        ("/v1/runs/{run}/approvals/Gate!", {"approved": True}, 400),
        ("/v1/runs/{run}/approvals/gate", {"approved": "yes"}, 400),
        ("/v1/runs/{run}/approvals/gate", {"approved": True, "by": "root"}, 400),
        ("/v1/runs/{run}/approvals/gate", {"approved": True, "note": "x" * 5000}, 400),
        ("/v1/runs/{run}/approvals/gate", {"approved": True, "iteration": -1}, 400),
        ("/v1/runs/{run}/approvals/gate", {}, 400),
    ],
)
def test_bad_decisions_write_nothing(gw: Gateway, path: str, body: dict[str, Any], status: int) -> None:
    run_id = gw.launch("t-approval")
    gw.seed_approval(run_id)
    approver = gw.auth("approval:submit")
    before = rows(gw)
    response = gw.client.post(path.format(run=run_id), json=body, headers=approver)
    assert response.status_code == status, response.get_json()
    assert rows(gw) == before


# -- workflows, probes, errors, access log ----------------------------------------------


def test_workflows(gw: Gateway) -> None:
    listed = gw.client.get("/v1/workflows", headers=gw.auth("run:read")).get_json()["workflows"]
    chain = next(w for w in listed if w["name"] == "t-chain")
    assert [n["id"] for n in chain["nodes"]] == ["a", "b", "c", "d", "e"]
    assert chain["revision"] and chain["module"] == "tests.integration.workflows"


def test_probes_and_metrics(gw: Gateway) -> None:
    assert gw.client.get("/healthz").get_json() == {"status": "ok"}
    ready = gw.client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {
        "store": "ok",
        "broker": "ok",
        "metrics": "ok",
    }
    gw.client.get("/v1/runs", headers=gw.auth("run:read"))
    text = gw.client.get("/metrics").get_data(as_text=True)
    assert 'smithers_gateway_requests_total{method="GET",route="/v1/runs",status="200"}' in text
    assert "smithers_gateway_request_seconds_bucket" in text
    assert "smithers_store_up 1.0" in text  # the cluster's figures, read from the store


def test_readyz_reports_a_dead_broker(gw: Gateway) -> None:
    with make_gateway(gw.store.url, "redis://127.0.0.1:1/0") as broken:
        response = broken.client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"store": "ok", "broker": "unavailable", "metrics": "ok"}
    assert response.get_json()["error"]["code"] == "not_ready"


def test_internal_errors_never_leak(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise sqlalchemy.exc.ProgrammingError("SELECT secret_column FROM runs", {}, Exception("syntax"))

    monkeypatch.setattr(smithers.gateway.runs, "list_runs", broken)
    response = gw.client.get(
        "/v1/runs", headers=gw.auth("run:read"), environ_overrides={"HTTP_X_REQUEST_ID": "req-42"}
    )
    assert response.status_code == 500
    assert response.get_json() == {
        "error": {"code": "internal", "message": "internal error (request req-42)"}
    }
    assert response.headers["X-Request-ID"] == "req-42"

    def down(*_: Any, **__: Any) -> Any:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection to 10.0.0.5 refused"))

    monkeypatch.setattr(smithers.gateway.runs, "list_runs", down)

    def unavailable(*_: Any, **__: Any) -> Any:
        raise StoreUnavailable("store unavailable: connection to 10.0.0.5 refused")

    monkeypatch.setattr(smithers.gateway.runs, "list_runs", unavailable)
    response = gw.client.get("/v1/runs", headers=gw.auth("run:read"))
    assert response.status_code == 503
    assert "10.0.0.5" not in response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "store_unavailable"


def test_unknown_routes_and_methods(gw: Gateway) -> None:
    missing = gw.client.get("/v2/runs")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    wrong = gw.client.put("/v1/runs", headers=gw.auth("run:write"))
    assert wrong.status_code == 405 and "POST" in wrong.headers["Allow"]


def test_access_log_one_redacted_line_per_request(gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    token = gw.token("run:read,run:write", "logger-test")
    secret_body = {"workflow": "t-chain", "input": {"note": "sk-" + "s" * 30}}  # refused: a secret value
    with caplog.at_level(logging.INFO, logger="smithers.gateway.access"):
        gw.client.get("/v1/runs", headers={"Authorization": f"Bearer {token}", "X-Request-ID": "abc-123"})
        gw.client.post("/v1/runs", json=secret_body, headers={"Authorization": f"Bearer {token}"})
        gw.client.get("/v1/runs/" + token)  # a token pasted into a URL
    lines = [r for r in caplog.records if r.name == "smithers.gateway.access"]
    assert len(lines) == 3
    fields = [r.fields for r in lines]  # type: ignore[attr-defined]
    assert fields[0]["request_id"] == "abc-123"
    assert [(f["method"], f["path"], f["status"], f["subject"]) for f in fields] == [
        ("GET", "/v1/runs", 200, "logger-test"),
        ("POST", "/v1/runs", 400, "logger-test"),
        ("GET", "/v1/runs/[redacted]", 401, None),
    ]
    assert all(f["duration_ms"] >= 0 and len(f["request_id"]) > 0 for f in fields)
    dumped = json.dumps(fields) + " ".join(r.getMessage() for r in lines)
    assert token not in dumped and "sk-sss" not in dumped and "Authorization" not in dumped


def test_time_travel_needs_the_launcher_or_admin_and_confirm(gw: Gateway) -> None:
    mine = gw.client.post("/v1/runs", json={"workflow": "t-chain"}, headers=gw.auth("run:write", "carol"))
    run_id = mine.get_json()["run_id"]

    no_confirm = gw.client.post(
        f"/v1/runs/{run_id}/rewind",
        json={"node_id": "c", "confirm": False},
        headers=gw.auth("run:write", "carol"),
    )
    stranger = gw.client.post(
        f"/v1/runs/{run_id}/rewind",
        json={"node_id": "c", "confirm": True},
        headers=gw.auth("run:write", "dave"),
    )
    unknown = gw.client.post(
        f"/v1/runs/{run_id}/rewind",
        json={"node_id": "zz", "confirm": True},
        headers=gw.auth("run:write", "carol"),
    )
    launcher = gw.client.post(
        f"/v1/runs/{run_id}/rewind",
        json={"node_id": "c", "confirm": True},
        headers=gw.auth("run:write", "carol"),
    )
    admin = gw.client.post(
        f"/v1/runs/{run_id}/replay",
        json={"node_id": "d", "confirm": True, "run_id": "rp-1"},
        headers=gw.auth(("run:write", "admin"), "erin"),
    )

    assert no_confirm.status_code == 400 and "confirm" in no_confirm.get_json()["error"]["message"]
    assert stranger.status_code == 403
    assert unknown.status_code == 400 and "no node 'zz'" in unknown.get_json()["error"]["message"]
    assert launcher.status_code == 200 and launcher.get_json()["reopened"] == ["c", "d", "e"]
    assert admin.status_code == 201 and admin.get_json()["new_run_id"] == "rp-1"
    trail = gw.client.get(f"/v1/runs/{run_id}/audit", headers=gw.auth("run:read")).get_json()
    kinds = [(e["source"], e["type"]) for e in trail["entries"]]
    assert kinds[0] == ("event", "run.launched")
    assert ("time_travel", "time_travel.rewind") in kinds and ("time_travel", "time_travel.replay") in kinds
