"""Every gateway endpoint against every kind of credential, on SQLite and PostgreSQL.

No token, a malformed header, expired, revoked, tampered payload, bad signature,
another key's signature and an unknown grant all get 401, and so do an identity
provider's tokens that are expired, mis-addressed, of an unknown key, unsigned or
tampered with; a valid token without the scope gets 403 (the gateway's own or the
provider's); only the right scope gets through. Every refusal is an audit event,
and nothing else is written for it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from werkzeug.test import TestResponse

from smithers.gateway.app import required_scope
from smithers.gateway.auth import SESSION_COOKIE
from smithers.gateway.issuers import parse_issuers
from smithers.shared.errors import InvalidInput
from smithers.shared.grants import GrantKind, Scope, TtlPolicy
from smithers.shared.status import RunStatus
from smithers.shared.store import schema as s
from smithers.shared.store.grants import ControlPlaneStore
from tests.integration.gateway.support import ALL_SCOPES, Gateway, jti_of, make_gateway, module_database

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_server: str
) -> Iterator[Gateway]:
    pg = request.getfixturevalue("pg_admin") if request.param == "postgres" else None
    tmp = tmp_path_factory.mktemp("gw-auth")
    # an identity provider whose groups map one to one onto scopes (its JWKS a file)
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp / "jwks.json").write_text(
        json.dumps({"keys": [{**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1"}]})
    )
    idp = {
        "name": "matrix",
        "issuer": IDP,
        "audience": "smithers",
        "jwks_file": str(tmp / "jwks.json"),
        "scopes": {f"g-{sc}": [sc] for sc in ALL_SCOPES},
    }
    with (
        module_database(request.param, tmp, pg) as url,
        make_gateway(
            url,
            redis_server,
            sse_max_s=1.0,
            auth_failures=10**6,
            outside_issuers=parse_issuers({"issuers": [idp]}, TtlPolicy()),
        ) as gateway,
    ):
        gateway.idp_key = key  # type: ignore[attr-defined]
        yield gateway


IDP = "https://idp.matrix.test"


def outside(gw: Gateway, scopes: str | tuple[str, ...], **change: Any) -> str:
    """A token of the matrix's identity provider for alice, its groups naming ``scopes``."""
    now = int(time.time())
    held = (scopes,) if isinstance(scopes, str) else scopes
    claims = {"iss": IDP, "aud": "smithers", "sub": "alice", "iat": now, "exp": now + 600}
    claims |= {"jti": uuid.uuid4().hex, "groups": [f"g-{sc}" for sc in held]}
    headers = {"kid": change.pop("kid", "k1")}
    return jwt.encode({**claims, **change}, gw.idp_key, algorithm="ES256", headers=headers)  # type: ignore[attr-defined]


def outside_unsigned(gw: Gateway, scope: str) -> str:
    _, payload, _ = outside(gw, scope).split(".")
    return jwt.utils.base64url_encode(b'{"alg":"none","kid":"k1"}').decode() + f".{payload}."


def outside_tampered(gw: Gateway, scope: str) -> str:
    head, payload, sig = outside(gw, scope).split(".")
    flipped = "A" if sig[3] != "A" else "B"
    return f"{head}.{payload}.{sig[:3]}{flipped}{sig[4:]}"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # placeholders: {run} queued, {own} launched by alice, {cancelled}, {done}, {waiting}, {jti}
    scope: str
    body: dict[str, Any] | None = None
    ok: tuple[int, ...] = (200,)
    rule: str = ""
    extra: dict[str, str] = field(default_factory=dict)


ENDPOINTS = {
    "launch": Endpoint("POST", "/v1/runs", "run:write", {"workflow": "t-chain"}, (201,)),
    "list runs": Endpoint("GET", "/v1/runs", "run:read"),
    "read run": Endpoint("GET", "/v1/runs/{run}", "run:read", rule="/v1/runs/<run_id>"),
    "cancel": Endpoint("POST", "/v1/runs/{run}/cancel", "run:write", rule="/v1/runs/<run_id>/cancel"),
    "resume": Endpoint("POST", "/v1/runs/{cancelled}/resume", "run:write", rule="/v1/runs/<run_id>/resume"),
    "rerun": Endpoint("POST", "/v1/runs/{run}/rerun", "run:write", ok=(201,), rule="/v1/runs/<run_id>/rerun"),
    "delete": Endpoint("DELETE", "/v1/runs/{run}", "admin", ok=(204,), rule="/v1/runs/<run_id>"),
    "run events": Endpoint("GET", "/v1/runs/{done}/events", "run:read", rule="/v1/runs/<run_id>/events"),
    "all events": Endpoint("GET", "/v1/events", "run:read"),
    "list approvals": Endpoint("GET", "/v1/approvals", "approval:read"),
    "decide": Endpoint(
        "POST",
        "/v1/runs/{waiting}/approvals/gate",
        "approval:submit",
        {"approved": True, "note": "fine"},
        rule="/v1/runs/<run_id>/approvals/<node_id>",
    ),
    "approval context": Endpoint(
        "GET",
        "/v1/runs/{waiting}/approval-context",
        "approval:read",
        rule="/v1/runs/<run_id>/approval-context",
    ),
    "signal": Endpoint(
        "POST",
        "/v1/runs/{run}/signals/ci.done",
        "run:write",
        {"signal_id": "s-1", "payload": {"ok": True}},
        ok=(404,),  # t-chain waits for no signal: the point is that the credential got through
        rule="/v1/runs/<run_id>/signals/<name>",
    ),
    "list sandboxes": Endpoint(
        "GET", "/v1/runs/{run}/sandboxes", "approval:read", rule="/v1/runs/<run_id>/sandboxes"
    ),
    "review sandbox": Endpoint(
        "POST",
        "/v1/runs/{run}/sandboxes/sbx-none/review",
        "approval:submit",
        {"accept": True},
        ok=(404,),  # no such sandbox: the point is that the credential got through
        rule="/v1/runs/<run_id>/sandboxes/<sandbox_id>/review",
    ),
    "workflows": Endpoint("GET", "/v1/workflows", "run:read"),
    "list schedules": Endpoint("GET", "/v1/schedules", "run:read"),
    "pause schedule": Endpoint(
        "POST",
        "/v1/schedules/t-chain:nope/pause",
        "run:write",
        {},
        ok=(404,),  # t-chain declares no schedule: the point is that the credential got through
        rule="/v1/schedules/<schedule_id>/pause",
    ),
    "resume schedule": Endpoint(
        "POST",
        "/v1/schedules/t-chain:nope/resume",
        "run:write",
        {},
        ok=(404,),
        rule="/v1/schedules/<schedule_id>/resume",
    ),
    "revisions": Endpoint(
        "GET", "/v1/workflows/t-chain/revisions", "run:read", ok=(200,), rule="/v1/workflows/<name>/revisions"
    ),
    "migrate": Endpoint(
        "POST",
        "/v1/runs/{run}/migrate",
        "admin",
        {"to": "0000000000000000"},
        ok=(404,),  # no such revision: the point is that the credential got through
        rule="/v1/runs/<run_id>/migrate",
    ),
    "migrate workflow": Endpoint(
        "POST",
        "/v1/workflows/t-chain/migrate",
        "admin",
        {"from": "0000000000000000", "to": "1111111111111111"},
        ok=(404,),
        rule="/v1/workflows/<name>/migrate",
    ),
    "audit trail": Endpoint("GET", "/v1/runs/{run}/audit", "run:read", rule="/v1/runs/<run_id>/audit"),
    "rewind": Endpoint(
        "POST",
        "/v1/runs/{own}/rewind",
        "run:write",
        {"node_id": "e", "confirm": True},
        rule="/v1/runs/<run_id>/rewind",
    ),
    "replay": Endpoint(
        "POST",
        "/v1/runs/{own}/replay",
        "run:write",
        {"node_id": "e", "confirm": True},
        (201,),
        rule="/v1/runs/<run_id>/replay",
    ),
    "fork": Endpoint(
        "POST",
        "/v1/runs/{own}/fork",
        "run:write",
        {"node_id": "e", "confirm": True, "input": {}},
        (201,),
        rule="/v1/runs/<run_id>/fork",
    ),
    "issue grant": Endpoint(
        "POST", "/v1/grants", "admin", {"subject": "bot", "scopes": ["run:read"]}, (201,)
    ),
    "list grants": Endpoint("GET", "/v1/grants", "admin"),
    "revoke grant": Endpoint("POST", "/v1/grants/{jti}/revoke", "admin", rule="/v1/grants/<jti>/revoke"),
    # console sessions: any valid credential (the session gets that credential's scopes)
    "create session": Endpoint("POST", "/v1/session", "any", ok=(201,)),
    "read session": Endpoint("GET", "/v1/session", "any"),
    "end session": Endpoint("DELETE", "/v1/session", "any"),
}
# the console's static files need no credential; every API call they make does
CONSOLE = {"/ui", "/ui/", "/ui/<path:name>"}
# signed webhooks: no bearer token, the signature is the credential (test_gateway_webhooks.py)
SIGNED = {"/v1/control/idp", "/v1/control/billing"}
PUBLIC = {"/healthz", "/readyz", "/metrics", "/v1/openapi.json", "/static/<path:filename>", *CONSOLE, *SIGNED}

BAD_TOKENS: dict[str, Callable[[Gateway, str], str | None]] = {
    "no token": lambda gw, scope: None,
    "not bearer": lambda gw, scope: "Basic YWxpY2U6c2VjcmV0",
    "garbage": lambda gw, scope: "Bearer not-a-jwt",
    "expired": lambda gw, scope: "Bearer " + gw.expired(scope),
    "revoked": lambda gw, scope: "Bearer " + gw.revoked(scope),
    "tampered payload": lambda gw, scope: "Bearer " + gw.tampered(scope),
    "bad signature": lambda gw, scope: "Bearer " + gw.bad_signature(scope),
    "alg none": lambda gw, scope: "Bearer " + gw.unsigned(scope),
    "other key": lambda gw, scope: "Bearer " + gw.foreign(scope),
    "unknown grant": lambda gw, scope: "Bearer " + gw.unknown_grant(scope),
    "idp expired": lambda gw, scope: "Bearer " + outside(gw, scope, exp=int(time.time()) - 600),
    "idp wrong audience": lambda gw, scope: "Bearer " + outside(gw, scope, aud="another-app"),
    "idp unknown kid": lambda gw, scope: "Bearer " + outside(gw, scope, kid="k-unknown"),
    "idp alg none": lambda gw, scope: "Bearer " + outside_unsigned(gw, scope),
    "idp tampered": lambda gw, scope: "Bearer " + outside_tampered(gw, scope),
}


def call(gw: Gateway, ep: Endpoint, path: str, authorization: str | None) -> TestResponse:
    headers = {"Authorization": authorization} if authorization else {}
    gw.client.delete_cookie(SESSION_COOKIE)  # "create session" sets one: only the header counts here
    response = gw.client.open(path, method=ep.method, json=ep.body, headers=headers, stream=True)
    response.close()  # status only: event streams are not read to their end here
    return response


def fill(gw: Gateway, ep: Endpoint) -> str:
    values: dict[str, str] = {}
    if "{run}" in ep.path:
        values["run"] = gw.launch()
    if "{cancelled}" in ep.path:
        values["cancelled"] = gw.launch()
        gw.finish(values["cancelled"], RunStatus.CANCELLED)
    if "{done}" in ep.path:
        values["done"] = gw.launch()
        gw.finish(values["done"])
    if "{waiting}" in ep.path:
        values["waiting"] = gw.launch("t-approval")
        gw.seed_approval(values["waiting"])
    if "{own}" in ep.path:  # launched by the caller the right-scope token names
        response = gw.client.post("/v1/runs", json={"workflow": "t-chain"}, headers=gw.auth("run:write"))
        values["own"] = str(response.get_json()["run_id"])
    if "{jti}" in ep.path:
        values["jti"] = jti_of(gw.token("run:read", "victim"))
    return ep.path.format(**values)


def test_every_route_is_in_the_matrix(gw: Gateway) -> None:
    routes = {
        (method, rule.rule)
        for rule in gw.app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS") and rule.rule not in PUBLIC
    }
    covered = {(ep.method, ep.rule or ep.path) for ep in ENDPOINTS.values()}
    assert routes == covered
    for rule in gw.app.url_map.iter_rules():
        if rule.rule not in PUBLIC:
            ep = next(
                e
                for e in ENDPOINTS.values()
                if (e.rule or e.path) == rule.rule and e.method in (rule.methods or ())
            )
            assert required_scope(gw.app, rule.endpoint) == ep.scope, rule.rule


@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_credentials_and_scopes(gw: Gateway, name: str) -> None:
    ep = ENDPOINTS[name]
    path = fill(gw, ep)
    denied_before = {status: gw.denied(status) for status in (401, 403)}
    runs_before = gw.count(s.runs)

    # every broken credential: 401, the JSON error shape, a challenge header
    held = "run:read" if ep.scope == "any" else ep.scope  # "any": one unrelated scope
    for kind, make in BAD_TOKENS.items():
        response = call(gw, ep, path, make(gw, held))
        assert response.status_code == 401, (kind, response.get_json())
        assert response.get_json()["error"]["code"] == "unauthorized", kind
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), kind

    # a valid token with every scope but this one, the gateway's own or the provider's: 403
    if ep.scope != "any":
        others = tuple(sc for sc in ALL_SCOPES if sc != ep.scope)
        for token in (gw.token(others), outside(gw, others)):
            response = call(gw, ep, path, "Bearer " + token)
            assert response.status_code == 403, response.get_json()
            assert response.get_json()["error"] == {
                "code": "forbidden",
                "message": f"this action needs the scope {ep.scope!r}",
            }

    # every refusal is audited, and nothing else was written
    # (folded per source, status, subject and reason in the interval: the counts add up)
    assert gw.denied(401) - denied_before[401] == len(BAD_TOKENS)
    assert gw.denied(403) - denied_before[403] == (0 if ep.scope == "any" else 2)
    assert gw.count(s.runs) == runs_before

    # the right scope alone gets through, from either issuer (on a fresh target: the
    # first call may have deleted or cancelled it)
    response = call(gw, ep, path, "Bearer " + gw.token(held))
    assert response.status_code in ep.ok, response.get_json()
    response = call(gw, ep, fill(gw, ep), "Bearer " + outside(gw, held))
    assert response.status_code in ep.ok, response.get_json()


def test_denied_audit_names_the_subject_and_the_reason(gw: Gateway) -> None:
    token = gw.token("run:read", subject="mallory")
    before = len(gw.audit("request.denied"))
    assert (
        gw.client.post(
            "/v1/runs", json={"workflow": "t-chain"}, headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 403
    )
    gw.control.revoke(jti_of(token), actor="admin")
    assert gw.client.get("/v1/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    first, second = gw.audit("request.denied")[before:]
    assert (first.actor, first.detail["status"], first.detail["code"]) == ("mallory", 403, "forbidden")
    assert (second.actor, second.detail["reason"], second.detail["jti"]) == (
        "mallory",
        "token revoked",
        jti_of(token),
    )


def test_revocation_and_expiry_take_effect_at_once(gw: Gateway) -> None:
    token = gw.token("run:read")
    headers = {"Authorization": f"Bearer {token}"}
    assert gw.client.get("/v1/workflows", headers=headers).status_code == 200
    gw.control.revoke(jti_of(token), actor="admin")
    refused = gw.client.get("/v1/workflows", headers=headers)
    assert refused.status_code == 401 and refused.get_json()["error"]["message"] == "token revoked"

    # A JWT's exp is whole seconds (truncated): a 1 s token could be expired 0.1 s after
    # it was issued, so on a slow machine its first use failed. 3 s leaves at least 2.
    short = gw.token("run:read", ttl_s=3)
    assert gw.client.get("/v1/workflows", headers={"Authorization": f"Bearer {short}"}).status_code == 200
    time.sleep(3.2)
    refused = gw.client.get("/v1/workflows", headers={"Authorization": f"Bearer {short}"})
    assert refused.status_code == 401 and refused.get_json()["error"]["message"] == "token expired"


def test_a_revocation_elsewhere_applies_within_the_grant_cache(gw: Gateway) -> None:
    # given: a token this worker has checked (its grant row read and kept for cache_s)
    token = gw.token("run:read")
    headers = {"Authorization": f"Bearer {token}"}
    bound = gw.control.cache_s
    assert bound == 1.0  # SMITHERS_GRANT_CACHE's default
    read_at = time.monotonic()
    assert gw.client.get("/v1/workflows", headers=headers).status_code == 200
    # when: another process revokes it (`smithers token revoke`: its own ControlPlaneStore)
    ControlPlaneStore(gw.store).revoke(jti_of(token), actor="admin")
    # then: this worker may accept it until the bound, and refuses it after
    if time.monotonic() - read_at < bound / 2:
        assert gw.client.get("/v1/workflows", headers=headers).status_code == 200
    time.sleep(max(0.0, read_at + bound + 0.05 - time.monotonic()))
    refused = gw.client.get("/v1/workflows", headers=headers)
    assert refused.status_code == 401 and refused.get_json()["error"]["message"] == "token revoked"


def test_without_a_grant_cache_a_revocation_elsewhere_applies_at_once(gw: Gateway) -> None:
    control = ControlPlaneStore(gw.store, cache_s=0.0)  # SMITHERS_GRANT_CACHE=0
    kept = ControlPlaneStore(gw.store, cache_s=60.0)
    grant = control.issue(subject="alice", scopes="run:read", ttl_s=600, issuer="test", actor="test")
    assert control.cached(grant.jti) == kept.cached(grant.jti) == grant
    ControlPlaneStore(gw.store).revoke(grant.jti, actor="admin")
    now = time.time()
    assert control.cached(grant.jti).state(now).value == "revoked"  # type: ignore[union-attr]
    assert kept.cached(grant.jti).state(now).value == "active"  # type: ignore[union-attr]
    kept.forget()
    assert kept.cached(grant.jti).state(now).value == "revoked"  # type: ignore[union-attr]


def test_launch_and_approval_are_split(gw: Gateway) -> None:
    run_id = gw.launch("t-approval")
    gw.seed_approval(run_id)
    launcher = gw.auth("run:read,run:write", "ci-bot")
    approver = gw.auth("run:read,approval:read,approval:submit", "carol")
    decide = f"/v1/runs/{run_id}/approvals/gate"
    assert gw.client.post(decide, json={"approved": True}, headers=launcher).status_code == 403
    assert gw.client.post("/v1/runs", json={"workflow": "t-chain"}, headers=approver).status_code == 403
    assert gw.client.post(decide, json={"approved": True}, headers=approver).status_code == 200
    # admin is not a superuser either: it neither launches nor approves
    admin = gw.auth("admin", "root")
    assert gw.client.post("/v1/runs", json={"workflow": "t-chain"}, headers=admin).status_code == 403


def test_grants_over_the_api_are_bounded_and_audited(gw: Gateway) -> None:
    admin = gw.auth("admin", "root")
    issued = gw.client.post(
        "/v1/grants", json={"subject": "dash", "scopes": ["run:read", "approval:read"]}, headers=admin
    )
    assert issued.status_code == 201
    body = issued.get_json()
    assert (
        body["grant"]["kind"] == "person" and body["grant"]["expires_at"] - body["grant"]["issued_at"] == 900
    )
    dash = {"Authorization": f"Bearer {body['token']}"}
    assert gw.client.get("/v1/runs", headers=dash).status_code == 200

    too_long = gw.client.post(
        "/v1/grants", json={"subject": "dash", "scopes": ["run:read"], "ttl_s": 13 * 3600}, headers=admin
    )
    assert too_long.status_code == 400 and "at most 12h" in too_long.get_json()["error"]["message"]
    bot = gw.client.post(
        "/v1/grants",
        json={"subject": "bot", "scopes": ["run:write"], "kind": "automation", "ttl_s": 7 * 86400},
        headers=admin,
    )
    assert bot.status_code == 201
    unknown = gw.client.post("/v1/grants", json={"subject": "x", "scopes": ["run:delete"]}, headers=admin)
    assert unknown.status_code == 400

    jti = body["grant"]["jti"]
    revoked = gw.client.post(f"/v1/grants/{jti}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.get_json()["grant"]["state"] == "revoked"
    assert gw.client.get("/v1/runs", headers=dash).status_code == 401
    listed = gw.client.get("/v1/grants?subject=dash", headers=admin).get_json()["grants"]
    assert [(g["jti"], g["state"]) for g in listed if g["jti"] == jti] == [(jti, "revoked")]
    assert "token" not in str(listed)

    issued_audit = [a for a in gw.audit("grant.issued") if a.target_id == jti]
    revoked_audit = [a for a in gw.audit("grant.revoked") if a.target_id == jti]
    assert [(a.actor, a.detail["subject"]) for a in issued_audit] == [("root", "dash")]
    assert [a.actor for a in revoked_audit] == ["root"]


def test_control_plane_records_outside_grants_and_events(gw: Gateway) -> None:
    # given a grant asserted by an identity provider, normalized by a bridge
    now = time.time()
    grant, created = gw.control.record_grant(
        jti="idp-7f3a9c2e11",
        subject="dana@example.com",
        scopes=["run:read", "approval:read"],
        kind=GrantKind.PERSON,
        issuer="idp:okta",
        issued_at=now,
        expires_at=now + 600,
        actor="bridge:okta",
    )
    again, created_again = gw.control.record_grant(
        jti="idp-7f3a9c2e11",
        subject="dana@example.com",
        scopes=["approval:read", "run:read"],
        kind=GrantKind.PERSON,
        issuer="idp:okta",
        issued_at=now,
        expires_at=now + 600,
        actor="bridge:okta",
    )
    assert created and not created_again and again == grant
    with pytest.raises(InvalidInput):  # beyond the person ceiling
        gw.control.record_grant(
            jti="idp-too-long-1",
            subject="dana@example.com",
            scopes="run:read",
            kind=GrantKind.PERSON,
            issuer="idp:okta",
            issued_at=now,
            expires_at=now + 30 * 86400,
            actor="bridge:okta",
        )
    # and a billing webhook that lapsed the subject's plan
    gw.control.record_event(
        "billing.plan_lapsed", actor="webhook:stripe", target_type="subject", target_id="dana@example.com",
        detail={"plan": "team", "api_key": "sk-live-abcdefghijklmnopqrstuv"},
    )  # fmt: skip
    revoked = gw.control.revoke_subject("dana@example.com", actor="webhook:stripe", reason="plan lapsed")
    assert revoked == ["idp-7f3a9c2e11"]
    (event,) = [a for a in gw.audit("billing.plan_lapsed")]
    assert event.detail == {"plan": "team", "api_key": "[redacted]"}
    recorded = [a for a in gw.audit("grant.recorded") if a.target_id == "idp-7f3a9c2e11"]
    assert [a.actor for a in recorded] == ["bridge:okta"]
    assert gw.control.get("idp-7f3a9c2e11").state(time.time()).value == "revoked"  # type: ignore[union-attr]


def test_scope_enum_matches_the_architecture() -> None:
    assert [s.value for s in Scope] == ["run:read", "run:write", "approval:read", "approval:submit", "admin"]
