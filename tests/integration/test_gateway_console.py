"""What the console needs from the gateway, on SQLite and PostgreSQL: sessions (cookie
flags, CSRF, the same grant and scope checks as the bearer token) and approvals that
declare context, a payload schema or options, an escalation and a default on timeout
(with a real scheduler and step worker)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from smithers.gateway.app import create_app
from smithers.gateway.auth import CSRF_HEADER, SESSION_COOKIE
from smithers.gateway.store import GatewayStore
from smithers.shared.registry import load_registry
from smithers.shared.status import RunStatus
from tests.integration.conftest import ROOT, Engine
from tests.integration.gateway.support import Gateway, config, jti_of, make_gateway

pytestmark = pytest.mark.timeout(120)
UI_WORKFLOWS = "tests.ui.workflows"


@pytest.fixture
def gw(database_url: str) -> Iterator[Gateway]:
    with make_gateway(database_url, None) as gateway:
        yield gateway


def session(client: FlaskClient, token: str) -> tuple[dict[str, Any], str]:
    """Start a session; return its body and the raw Set-Cookie header."""
    response = client.post("/v1/session", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.get_json()
    return response.get_json(), response.headers["Set-Cookie"]


def test_a_session_cookie_is_httponly_strict_and_carries_the_tokens_scopes(gw: Gateway) -> None:
    # given a token with two scopes
    token = gw.token("run:read,approval:read", "dana")
    body, cookie = session(gw.client, token)

    # then the cookie is HttpOnly, SameSite=Strict, not Secure over plain http, and short
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie
    assert body["subject"] == "dana" and body["scopes"] == ["approval:read", "run:read"]
    assert body["csrf_token"] and body["via"] == "session"
    assert body["expires_at"] - time.time() <= gw.svc.config.session_ttl_s

    # and the cookie alone reads what the token reads, and nothing else
    assert gw.client.get("/v1/runs").status_code == 200
    assert gw.client.get("/v1/approvals").status_code == 200
    refused = gw.client.post(
        "/v1/runs", json={"workflow": "t-chain"}, headers={CSRF_HEADER: body["csrf_token"]}
    )
    assert refused.status_code == 403
    assert refused.get_json()["error"]["message"] == "this action needs the scope 'run:write'"
    assert gw.client.get("/v1/session").get_json()["csrf_token"] == body["csrf_token"]
    assert gw.audit("session.created")[-1].actor == "dana"


def test_over_https_the_cookie_is_secure(gw: Gateway) -> None:
    token = gw.token("run:read")
    response = gw.client.post(
        "/v1/session", headers={"Authorization": f"Bearer {token}"}, base_url="https://gw.example"
    )
    assert response.status_code == 201 and "Secure" in response.headers["Set-Cookie"]


def test_unsafe_session_requests_need_the_csrf_token(gw: Gateway) -> None:
    body, _ = session(gw.client, gw.token("run:read,run:write"))
    launch = {"workflow": "t-chain"}
    denied_before = gw.denied(403)
    missing = gw.client.post("/v1/runs", json=launch)
    wrong = gw.client.post("/v1/runs", json=launch, headers={CSRF_HEADER: "x" * 43})
    assert (missing.status_code, wrong.status_code) == (403, 403)
    assert "X-CSRF-Token" in missing.get_json()["error"]["message"]
    assert gw.denied(403) - denied_before == 2  # both audited (folded into one row with a count)
    ok = gw.client.post("/v1/runs", json=launch, headers={CSRF_HEADER: body["csrf_token"]})
    assert ok.status_code == 201 and ok.get_json()["launched_by"] == "alice"
    # signing out needs it too, and clears the cookie
    assert gw.client.delete("/v1/session").status_code == 403
    out = gw.client.delete("/v1/session", headers={CSRF_HEADER: body["csrf_token"]})
    assert out.status_code == 200 and f"{SESSION_COOKIE}=;" in out.headers["Set-Cookie"]
    assert gw.client.get("/v1/runs").status_code == 401


def test_revoking_the_grant_ends_its_sessions_at_once(gw: Gateway) -> None:
    token = gw.token("run:read")
    session(gw.client, token)
    assert gw.client.get("/v1/runs").status_code == 200
    gw.control.revoke(jti_of(token), actor="admin")
    refused = gw.client.get("/v1/runs")
    assert refused.status_code == 401 and refused.get_json()["error"]["message"] == "token revoked"


def test_a_session_never_outlives_its_token(gw: Gateway) -> None:
    token = gw.token("run:read", ttl_s=60)  # shorter than the session TTL (1 h)
    body, cookie = session(gw.client, token)
    grant = gw.control.get(jti_of(token))
    assert grant is not None and body["expires_at"] <= grant.expires_at and "Max-Age=" in cookie
    assert int(cookie.split("Max-Age=")[1].split(";")[0]) <= 60


def test_a_session_is_no_bearer_token_and_a_bearer_token_no_session(gw: Gateway) -> None:
    token = gw.token("run:read")
    _, cookie = session(gw.client, token)
    value = cookie.split(";")[0].split("=", 1)[1]
    gw.client.delete_cookie(SESSION_COOKIE)
    assert gw.client.get("/v1/runs", headers={"Authorization": f"Bearer {value}"}).status_code == 401
    gw.client.set_cookie(SESSION_COOKIE, token)
    refused = gw.client.get("/v1/runs")
    assert refused.status_code == 401 and refused.get_json()["error"]["message"] == "invalid session"
    gw.client.set_cookie(SESSION_COOKIE, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    assert gw.client.get("/v1/runs").status_code == 401
    # a session does not mint another one
    gw.client.set_cookie(SESSION_COOKIE, value)
    again = gw.client.post(
        "/v1/session", headers={CSRF_HEADER: gw.client.get("/v1/session").get_json()["csrf_token"]}
    )
    assert again.status_code == 400


# -- approvals that declare what their approver sees and sends --------------------------


@pytest.fixture
def console_gw(database_url: str, redis_url: str, tmp_path: Any) -> Iterator[tuple[Gateway, Engine]]:
    engine = Engine(database_url, redis_url, tmp_path, {"SMITHERS_WORKFLOWS": UI_WORKFLOWS})
    engine.scheduler()
    engine.worker()
    store = GatewayStore(database_url)
    store.migrate()
    app = create_app(
        config(database_url, redis_url), store=store, registry=load_registry(UI_WORKFLOWS, str(ROOT))
    )
    gw = Gateway(app)
    try:
        yield gw, engine
    finally:
        gw.close()
        engine.stop_all()


def test_the_payload_is_checked_by_the_gateway_and_becomes_the_output(
    console_gw: tuple[Gateway, Engine],
) -> None:
    gw, engine = console_gw
    launcher = gw.auth("run:write", "alice")
    assert (
        gw.client.post(
            "/v1/runs",
            json={"workflow": "t-release", "run_id": "r1", "input": {"version": "2.0.0"}},
            headers=launcher,
        ).status_code
        == 201
    )
    engine.wait("r1", until={RunStatus.WAITING})

    # the listing carries the declaration and the declared upstream output
    reader = gw.auth("approval:read", "carol")
    (item,) = gw.client.get("/v1/approvals?order=urgent", headers=reader).get_json()["approvals"]
    assert item["spec"]["description"] == "Ship this build to production?"
    assert item["spec"]["schema"]["required"] == ["channel", "percent"]
    assert item["context"] == {"build": {"artifact": "app-2.0.0.tar.gz", "tests_passed": 128}}
    assert item["workflow"] == "t-release" and item["escalated_at"] is None

    carol = gw.auth("approval:submit", "carol")
    url = "/v1/runs/r1/approvals/ship"
    for payload, message in [
        (None, "this approval needs a payload: see its schema"),
        ({"channel": "nightly", "percent": 5}, 'payload.channel must be one of "beta", "stable"'),
        ({"channel": "beta", "percent": 101}, "payload.percent must be <= 100"),
        ({"channel": "beta", "percent": 5, "x": 1}, "payload.x is not allowed"),
    ]:
        refused = gw.client.post(url, json={"approved": True, "payload": payload}, headers=carol)
        assert refused.status_code == 400 and refused.get_json()["error"]["message"] == message
    assert engine.run("r1").status is RunStatus.WAITING  # nothing was recorded
    decided = gw.client.post(
        url, json={"approved": True, "payload": {"channel": "stable", "percent": 10}}, headers=carol
    )
    assert decided.status_code == 200 and decided.get_json()["payload"] == {
        "channel": "stable",
        "percent": 10,
    }

    run = engine.wait("r1")
    assert run.status is RunStatus.SUCCEEDED
    detail = gw.client.get("/v1/runs/r1", headers=gw.auth("run:read")).get_json()
    outputs = {o["node_id"]: o["value"] for o in detail["outputs"]}
    assert outputs["publish"] == {"channel": "stable", "percent": 10}
    (event,) = [e for e in engine.events("r1") if e.type == "approval.decided"]
    assert event.payload["payload"] == {"channel": "stable", "percent": 10}


def test_an_unanswered_approval_escalates_once_then_its_default_decides(
    console_gw: tuple[Gateway, Engine],
) -> None:
    gw, engine = console_gw
    assert (
        gw.client.post(
            "/v1/runs", json={"workflow": "t-expiring", "run_id": "x1"}, headers=gw.auth("run:write")
        ).status_code
        == 201
    )

    # when nobody answers: one escalation event after 1 s, then the default (deny) at 2.5 s
    run = engine.wait("x1", timeout=30)
    assert run.status is RunStatus.FAILED
    types = [e.type for e in engine.events("x1")]
    assert types.count("approval.escalated") == 1
    assert (
        types.index("approval.requested")
        < types.index("approval.escalated")
        < types.index("approval.decided")
    )
    (decided,) = [e for e in engine.events("x1") if e.type == "approval.decided"]
    assert decided.payload["decided_by"] == "smithers:timeout" and decided.payload["approved"] is False
    (escalated,) = [e for e in engine.events("x1") if e.type == "approval.escalated"]
    assert escalated.payload == {"fallback_owner": "dave"}

    # and the decided listing says who (the timeout), when and why
    (item,) = gw.client.get(
        "/v1/approvals?status=denied&run_id=x1", headers=gw.auth("approval:read")
    ).get_json()["approvals"]
    assert item["decided_by"] == "smithers:timeout" and "default 'deny'" in item["note"]
    assert item["escalated_at"] is not None and item["escalated_at"] <= item["decided_at"]
    assert [a.detail["decided_by"] for a in gw.audit("approval.decided")] == ["smithers:timeout"]
