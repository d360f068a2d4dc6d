"""Signed control-plane webhooks (POST /v1/control/idp and /v1/control/billing), on SQLite
and PostgreSQL: what a delivery writes, and every bad credential refused with nothing
written (no signature, a wrong one, another secret's, stale or future timestamps, a
replayed id, an oversize body, malformed JSON).

Deliveries are signed here from the Standard Webhooks definition itself (HMAC-SHA256 of
``id.timestamp.body``, keyed with the decoded ``whsec_`` secret), not by the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.test import TestResponse

from smithers.gateway.app import create_app
from smithers.shared.grants import Scope
from smithers.shared.store import schema as s
from smithers.shared.webhook import WebhookConfig, parse_secrets
from tests.integration.gateway.support import Gateway, config, make_gateway, module_database, registry

pytestmark = pytest.mark.timeout(120)

IDP_SECRET = "whsec_" + base64.b64encode(b"i" * 32).decode()
BILLING_OLD = "whsec_" + base64.b64encode(b"b" * 24).decode()
BILLING_NEW = "whsec_" + base64.b64encode(b"B" * 48).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"x" * 32).decode()
MAX_BODY = 4096
SECRET_VALUE = "sk_live_51HqLyjWDarjtT1zdp7dcXYZabcdefghijkl"
HOOKS = WebhookConfig(
    idp_secrets=parse_secrets(IDP_SECRET, "idp"),
    billing_secrets=parse_secrets(f"{BILLING_OLD}, {BILLING_NEW}", "billing"),
    tolerance_s=300,
    max_body_bytes=MAX_BODY,
)
SECRETS = {"idp": IDP_SECRET, "billing": BILLING_NEW}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_server: str
) -> Iterator[Gateway]:
    pg = request.getfixturevalue("pg_admin") if request.param == "postgres" else None
    with (
        module_database(request.param, tmp_path_factory.mktemp("gw-hooks"), pg) as url,
        make_gateway(url, redis_server, auth_failures=10**6, webhooks=HOOKS) as gateway,
    ):
        yield gateway


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed(
    secret: str, body: bytes, *, webhook_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    wid = webhook_id or f"msg_{uuid.uuid4().hex}"
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": wid,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature(secret, wid, ts, body),
        "Content-Type": "application/json",
    }


def deliver(
    gw: Gateway, source: str, payload: Any, *, secret: str | None = None, **kwargs: Any
) -> TestResponse:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = signed(secret or SECRETS[source], body, **kwargs)
    return gw.client.post(f"/v1/control/{source}", data=body, headers=headers)


def grant_payload(subject: str, scopes: list[str], ttl_s: float = 600, **data: Any) -> dict[str, Any]:
    now = time.time()
    return {
        "type": "grant.created",
        "timestamp": "2026-12-03T06:00:00Z",
        "data": {
            "grant_id": "g" + uuid.uuid4().hex[:20],
            "subject": subject,
            "scopes": scopes,
            "issued_at": int(now),
            "expires_at": int(now) + ttl_s,
            **data,
        },
    }


def rows(gw: Gateway) -> dict[str, int]:
    return {
        "grants": gw.count(s.grants),
        "deliveries": gw.count(s.webhook_deliveries),
        "received": len(gw.audit("webhook.received")),
    }


# -- what a delivery writes ---------------------------------------------------------------


def test_an_idp_assertion_records_a_grant_its_token_then_works(gw: Gateway) -> None:
    # given an identity provider asserting a grant, with a secret among fields we never read
    payload = grant_payload(
        "erin@example.com",
        ["run:read", "approval:read"],
        note=f"onboarded, key {SECRET_VALUE}",
        client_secret=SECRET_VALUE,
    )
    jti = payload["data"]["grant_id"]
    response = deliver(gw, "idp", payload)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "webhook_id": response.get_json()["webhook_id"],
        "type": "grant.created",
        "effect": "grant_recorded",
        "grants": [jti],
        "revoked": [],
    }
    # then the grant row is the provider's, normalized
    grant = gw.control.get(jti)
    assert grant is not None
    assert (grant.subject, [sc.value for sc in grant.scopes], grant.kind.value, grant.issuer) == (
        "erin@example.com",
        ["approval:read", "run:read"],
        "person",
        "webhook:idp",
    )
    assert SECRET_VALUE not in (grant.note or "")
    # and both audit entries name the webhook; nothing of the payload is stored raw
    (recorded,) = [a for a in gw.audit("grant.recorded") if a.target_id == jti]
    (received,) = [a for a in gw.audit("webhook.received") if a.detail["grants"] == [jti]]
    assert recorded.actor == received.actor == "webhook:idp"
    assert received.target_id == response.get_json()["webhook_id"]
    assert received.detail["effect"] == "grant_recorded"
    everything = json.dumps([a.detail for a in gw.audit()]) + json.dumps(grant.to_json(0))
    assert SECRET_VALUE not in everything
    assert "client_secret" not in everything


def test_subject_revoked_ends_every_token_of_the_subject_at_once(gw: Gateway) -> None:
    token = gw.token("run:read", subject="frank")
    assert gw.client.get("/v1/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    response = deliver(
        gw, "idp", {"type": "subject.revoked", "data": {"subject": "frank", "reason": "left the company"}}
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["effect"] == "subject_revoked"
    assert len(response.get_json()["revoked"]) == 1
    refused = gw.client.get("/v1/runs", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    assert refused.get_json()["error"]["message"] == "token revoked"


def test_grant_revoked_and_a_refused_change_leaves_the_id_for_the_retry(gw: Gateway) -> None:
    # given a revocation of a grant the gateway does not know (yet): 404, nothing claimed
    jti = "late" + uuid.uuid4().hex[:12]
    body = json.dumps({"type": "grant.revoked", "data": {"grant_id": jti}}).encode()
    headers = signed(IDP_SECRET, body)
    before = rows(gw)
    response = gw.client.post("/v1/control/idp", data=body, headers=headers)
    assert response.status_code == 404, response.get_json()
    assert rows(gw) == before
    # when the grant exists and the provider retries the same delivery, it is applied
    created = deliver(gw, "idp", grant_payload("gina", ["run:read"], grant_id=jti))
    assert created.status_code == 200
    retried = gw.client.post("/v1/control/idp", data=body, headers=headers)
    assert retried.status_code == 200, retried.get_json()
    assert retried.get_json()["revoked"] == [jti]
    assert gw.control.state(jti).value == "revoked"  # type: ignore[union-attr]


def test_billing_plans_replace_each_other_and_end_without_touching_other_grants(gw: Gateway) -> None:
    admin_issued = gw.token("run:read", subject="acme")
    first = grant_payload("acme", ["run:read"], ttl_s=86400)
    first["type"] = "subscription.active"
    assert deliver(gw, "billing", first).status_code == 200
    # a plan change: the new grant replaces the old billing grant (signed with the old secret:
    # both are accepted during the rotation)
    second = grant_payload("acme", ["run:read", "run:write"], ttl_s=86400)
    second["type"] = "subscription.active"
    response = deliver(gw, "billing", second, secret=BILLING_OLD)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["revoked"] == [first["data"]["grant_id"]]
    new = gw.control.get(second["data"]["grant_id"])
    assert new is not None and new.kind.value == "automation" and new.issuer == "webhook:billing"
    # other types are audited only
    paid = deliver(gw, "billing", {"type": "invoice.paid", "data": {"amount": 4200, "card": SECRET_VALUE}})
    assert paid.status_code == 200 and paid.get_json()["effect"] == "ignored"
    # the plan ends: its billing grants go, the admin-issued token stays
    ended = deliver(gw, "billing", {"type": "subscription.ended", "data": {"subject": "acme"}})
    assert ended.get_json()["revoked"] == [second["data"]["grant_id"]]
    assert gw.client.get("/v1/runs", headers={"Authorization": f"Bearer {admin_issued}"}).status_code == 200
    assert SECRET_VALUE not in json.dumps([a.detail for a in gw.audit()])


def test_a_webhook_may_grant_only_its_configured_scopes(gw: Gateway) -> None:
    before = rows(gw)
    response = deliver(gw, "idp", grant_payload("mallory", ["run:read", "admin"]))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"
    assert "'admin'" in response.get_json()["error"]["message"]
    billing = grant_payload("mallory", ["approval:submit"])
    billing["type"] = "subscription.active"
    assert deliver(gw, "billing", billing).status_code == 403
    assert rows(gw) == before


def test_bad_data_is_a_400_naming_the_field(gw: Gateway) -> None:
    cases = {
        "data.subject": grant_payload("bad subject!", ["run:read"]),
        "data.scopes": grant_payload("hal", ["run:fly"]),
        "data.expires_at": grant_payload("hal", ["run:read"], expires_at="tomorrow"),
        "data.grant_id": grant_payload("hal", ["run:read"], grant_id="x"),
        "'data'": {"type": "grant.created", "data": [1]},
        "'type'": {"type": "Grant Created!"},
    }
    before = rows(gw)
    for field, payload in cases.items():
        response = deliver(gw, "idp", payload)
        assert response.status_code == 400, (field, response.get_json())
        assert field in response.get_json()["error"]["message"], field
    too_long = grant_payload("hal", ["run:read"], ttl_s=90 * 86400)  # a person's ceiling is 12 h
    assert deliver(gw, "idp", too_long).status_code == 400
    assert rows(gw) == before


# -- the bad-credential matrix, for both endpoints ----------------------------------------


@pytest.mark.parametrize("source", ["idp", "billing"])
def test_every_bad_credential_is_refused_and_writes_nothing(gw: Gateway, source: str) -> None:
    path = f"/v1/control/{source}"
    secret = SECRETS[source]
    good = json.dumps(
        {"type": "invoice.created" if source == "billing" else "user.login", "data": {}}
    ).encode()
    now = int(time.time())

    def flipped(headers: dict[str, str]) -> dict[str, str]:
        sig = headers["webhook-signature"]
        return {**headers, "webhook-signature": sig[:-2] + ("A=" if sig[-2] != "A" else "B=")}

    without = {h: (lambda h=h: {k: v for k, v in signed(secret, good).items() if k != h}) for h in
               ("webhook-id", "webhook-timestamp", "webhook-signature")}  # fmt: skip
    cases: dict[str, tuple[bytes, dict[str, str], int]] = {
        "no signature": (good, {"Content-Type": "application/json"}, 401),
        "no webhook-id": (good, without["webhook-id"](), 401),
        "no webhook-timestamp": (good, without["webhook-timestamp"](), 401),
        "no webhook-signature": (good, without["webhook-signature"](), 401),
        "bad signature": (good, flipped(signed(secret, good)), 401),
        "other secret": (good, signed(OTHER_SECRET, good), 401),
        "other endpoint's secret": (
            good,
            signed(SECRETS["billing" if source == "idp" else "idp"], good),
            401,
        ),
        "not v1": (good, {**signed(secret, good), "webhook-signature": "v2,abc"}, 401),
        "signed another body": (good + b" ", signed(secret, good), 401),
        "stale timestamp": (good, signed(secret, good, timestamp=now - 301), 401),
        "future timestamp": (good, signed(secret, good, timestamp=now + 360), 401),  # slack: a slow run
        "timestamp not a number": (good, {**signed(secret, good), "webhook-timestamp": "soon"}, 401),
        "oversize body": (b" " * (MAX_BODY + 1), signed(secret, b" " * (MAX_BODY + 1)), 413),
        "malformed JSON": (b'{"type": ', signed(secret, b'{"type": '), 400),
        "not an object": (b"[1, 2]", signed(secret, b"[1, 2]"), 400),
        "empty body": (b"", signed(secret, b""), 400),
    }
    before, denied = rows(gw), gw.denied(401)
    for name, (body, headers, status) in cases.items():
        response = gw.client.post(path, data=body, headers=headers)
        assert response.status_code == status, (name, response.get_json())
        error = response.get_json()["error"]
        assert error["code"] == {401: "unauthorized", 413: "payload_too_large", 400: "invalid_input"}[status]
        assert error["message"], name
    assert rows(gw) == before
    assert gw.denied(401) - denied == sum(1 for *_, st in cases.values() if st == 401)

    # a replayed id: the first delivery is applied, the same one again refused (409)
    headers = signed(secret, good)
    assert gw.client.post(path, data=good, headers=headers).status_code == 200
    after_first = rows(gw)
    again = gw.client.post(path, data=good, headers=headers)
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "webhook_replayed"
    assert rows(gw) == after_first
    # and once its timestamp is stale, a replay is refused for that (its id may be forgotten)
    old = signed(secret, good, webhook_id=headers["webhook-id"], timestamp=now - 400)
    assert gw.client.post(path, data=good, headers=old).status_code == 401


def test_one_id_delivered_at_once_twice_is_applied_once(gw: Gateway) -> None:
    payload = grant_payload("ivy", ["run:read"])
    body = json.dumps(payload).encode()
    headers = signed(IDP_SECRET, body)
    statuses: list[int] = []

    def post() -> None:
        client = gw.app.test_client()
        statuses.append(client.post("/v1/control/idp", data=body, headers=headers).status_code)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 409, 409, 409]
    received = [a for a in gw.audit("webhook.received") if a.target_id == headers["webhook-id"]]
    assert len(received) == 1


def test_ids_are_forgotten_once_their_timestamp_is_stale(gw: Gateway) -> None:
    with gw.store.write() as tx:
        tx.conn.execute(
            s.webhook_deliveries.insert().values(
                source="idp", webhook_id="msg_ancient", received_at=0.0, expires_at=1.0
            )
        )
    assert deliver(gw, "idp", {"type": "user.login", "data": {}}).status_code == 200
    with gw.store.read() as conn:
        ids = {r.webhook_id for r in conn.execute(s.webhook_deliveries.select())}
    assert "msg_ancient" not in ids


def test_an_endpoint_without_a_secret_is_not_there(gw: Gateway) -> None:
    off = create_app(
        config(gw.svc.config.database_url, None, webhooks=WebhookConfig()),
        store=gw.store,
        registry=registry(),
    )
    client = off.test_client()
    body = json.dumps({"type": "user.login", "data": {}}).encode()
    response = client.post("/v1/control/idp", data=body, headers=signed(IDP_SECRET, body))
    assert response.status_code == 404
    assert "SMITHERS_WEBHOOK_IDP_SECRETS" in response.get_json()["error"]["message"]


def test_the_webhooks_take_no_bearer_token() -> None:
    from smithers.gateway.openapi import document

    for path in ("/v1/control/idp", "/v1/control/billing"):
        op = document()["paths"][path]["post"]
        assert op["security"] == []
        assert op["x-signature"] == "standard-webhooks-v1"
        assert {p["name"] for p in op["parameters"]} == {
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
        }
        assert "x-required-scope" not in op
    assert Scope.ADMIN not in HOOKS.idp_scopes


def test_failed_signatures_count_as_failed_authentications_of_the_source(gw: Gateway) -> None:
    limited = create_app(
        config(gw.svc.config.database_url, None, webhooks=HOOKS, auth_failures=3),
        store=gw.store,
        registry=registry(),
    )
    client = limited.test_client()
    body = json.dumps({"type": "user.login", "data": {}}).encode()
    forged = signed(OTHER_SECRET, body)
    assert [client.post("/v1/control/idp", data=body, headers=forged).status_code for _ in range(3)] == [
        401
    ] * 3
    before = rows(gw)
    # then even a well-signed delivery from that address waits, unread
    response = client.post("/v1/control/idp", data=body, headers=signed(IDP_SECRET, body))
    assert response.status_code == 429
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) > 0
    assert rows(gw) == before
