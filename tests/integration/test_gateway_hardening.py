"""What fuzzing and attacks found (issue 24), on SQLite and PostgreSQL: credential-like
input, strict JSON in and out, concurrent launches of one id, failed-authentication
limits and folded denial audits, the auth scheme's case, and spec bounds."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.test import TestResponse

from smithers.gateway.openapi import document
from smithers.shared.grants import TTL_LIMIT_S
from smithers.shared.store import schema as s
from tests.integration.gateway.support import Gateway, make_gateway, module_database

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pg = request.getfixturevalue("pg_admin") if request.param == "postgres" else None
    with module_database(request.param, tmp_path_factory.mktemp("gw-hardening"), pg) as url:
        yield url


@pytest.fixture(scope="module")
def gw(store_url: str, redis_server: str) -> Iterator[Gateway]:
    with make_gateway(store_url, redis_server) as gateway:
        yield gateway


def strict(response: TestResponse) -> Any:
    """The body parsed by a strict JSON parser: no NaN, no Infinity."""

    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(response.get_data(as_text=True), parse_constant=refuse)


def launch(gw: Gateway, body: Any, raw: str | None = None) -> TestResponse:
    headers = {**gw.auth("run:write"), "Content-Type": "application/json"}
    data = raw if raw is not None else json.dumps(body)
    return gw.client.post("/v1/runs", data=data, headers=headers)


# -- credential-like input ------------------------------------------------------------

REFUSED = {
    "accessToken": "abc",
    "clientSecret": "abc",
    "authToken": "abc",
    "githubToken": "abc",
    "passphrase": "correct horse",
    "pwd": "hunter22",
    "auth": "user:pass",
    "password": {"value": "hunter22"},
    "db_password": ["hunter22"],
    "x-api-key": "abc",
}


@pytest.mark.parametrize("key", list(REFUSED))
def test_credential_like_keys_are_refused_whatever_their_spelling_or_shape(gw: Gateway, key: str) -> None:
    runs_before = gw.count(s.runs)
    response = launch(gw, {"workflow": "t-chain", "input": {"outer": {key: REFUSED[key]}}})
    assert response.status_code == 400, strict(response)
    message = strict(response)["error"]["message"]
    assert f"input.outer.{key}" in message and "public_inputs" in message, message
    assert gw.count(s.runs) == runs_before


def test_a_url_with_a_password_is_refused(gw: Gateway) -> None:
    response = launch(gw, {"workflow": "t-chain", "input": {"db": "postgresql://app:hunter22@db/app"}})
    assert response.status_code == 400
    assert "input.db is a URL with a password" in strict(response)["error"]["message"]
    ok = launch(gw, {"workflow": "t-chain", "input": {"db": "postgresql://app@db/app", "max_tokens": 5}})
    assert ok.status_code == 201, strict(ok)


@pytest.mark.parametrize("key", ["secret_name", "password_policy", "token_count", "private_key_path"])
def test_keys_that_describe_a_credential_are_accepted(gw: Gateway, key: str) -> None:
    response = launch(gw, {"workflow": "t-chain", "input": {key: "vault/app"}})
    assert response.status_code == 201, strict(response)


def test_a_workflow_declares_the_input_keys_that_are_no_secret(gw: Gateway) -> None:
    body = {"github_token_ref": "vault:ci/github", "auth": "oidc"}
    assert launch(gw, {"workflow": "t-public-inputs", "input": body}).status_code == 201
    refused = launch(gw, {"workflow": "t-chain", "input": body})
    assert refused.status_code == 400
    assert "declare it in Workflow(..., public_inputs=[" in strict(refused)["error"]["message"]


# -- strict JSON in and out ---------------------------------------------------------------

BAD_BODIES = {
    "overflowing float": ('{"workflow": "t-chain", "input": {"x": 1e400}}', "out of range"),
    "5000-digit integer": ('{"workflow": "t-chain", "input": {"x": ' + "9" * 5000 + "}}", "5000 digits"),
    "20-digit integer": ('{"workflow": "t-chain", "input": {"x": ' + "9" * 20 + "}}", "20 digits"),
    "NaN": ('{"workflow": "t-chain", "input": {"x": NaN}}', "NaN is not valid JSON"),
    "NUL in a value": ('{"workflow": "t-chain", "input": {"x": "a\\u0000b"}}', "body.input.x contains a NUL"),
    "NUL in a key": (
        '{"workflow": "t-chain", "input": {"a\\u0000": 1}}',
        "a key of body.input contains a NUL",
    ),
    "lone surrogate": ('{"workflow": "t-chain", "input": {"x": "\\ud800"}}', "body.input.x contains a lone"),
    "NUL in the workflow": ('{"workflow": "a\\u0000b"}', "body.workflow contains a NUL"),
}


@pytest.mark.parametrize("kind", list(BAD_BODIES))
def test_values_strict_json_cannot_hold_are_400_naming_the_field(gw: Gateway, kind: str) -> None:
    raw, expected = BAD_BODIES[kind]
    runs_before = gw.count(s.runs)
    response = launch(gw, None, raw=raw)
    assert response.status_code == 400, (kind, response.get_data(as_text=True)[:300])
    assert expected in strict(response)["error"]["message"]
    assert gw.count(s.runs) == runs_before


@pytest.mark.parametrize(
    "url",
    [
        "/v1/runs?workflow=a%00b",
        "/v1/runs?status=%00",
        "/v1/runs?a%00=1",
        "/v1/approvals?run_id=a%00b",
        "/v1/runs/x/events?after_seq=%00",
        "/v1/grants?subject=a%00b",
    ],
)
def test_a_nul_in_a_query_string_is_400(gw: Gateway, url: str) -> None:
    response = gw.client.get(url, headers=gw.auth(("run:read", "approval:read", "admin")))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "contains a NUL" in strict(response)["error"]["message"]


def test_run_detail_and_listing_parse_with_a_strict_parser(gw: Gateway) -> None:
    run_id = gw.launch("t-chain", {"x": 1.5, "big": 2**63 - 1, "text": "é\u2028"})
    for url in (f"/v1/runs/{run_id}", "/v1/runs?limit=200"):
        response = gw.client.get(url, headers=gw.auth("run:read"))
        assert response.status_code == 200
        assert strict(response)


# -- concurrent launches of one new id ----------------------------------------------------


def test_concurrent_identical_launches_make_one_run(gw: Gateway) -> None:
    run_id = f"race-{uuid.uuid4().hex[:10]}"
    body = {"workflow": "t-chain", "input": {"n": 1}, "run_id": run_id}
    headers = gw.auth("run:write")
    barrier = threading.Barrier(12)
    results: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def client() -> None:
        test_client = gw.app.test_client()
        barrier.wait()
        for _ in range(3):
            response = test_client.post("/v1/runs", json=body, headers=headers)
            with lock:
                results.append((response.status_code, strict(response)))

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(code for code, _ in results)
    assert codes == [200] * 35 + [201], codes
    assert {b["run_id"] for _, b in results} == {run_id}


# -- auth scheme and spec bounds ----------------------------------------------------------


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
def test_the_auth_scheme_is_case_insensitive(gw: Gateway, scheme: str) -> None:
    token = gw.token("run:read")
    response = gw.client.get("/v1/runs", headers={"Authorization": f"{scheme} {token}"})
    assert response.status_code == 200, strict(response)


def test_a_19_digit_after_seq_within_the_bound_is_accepted_as_a_number(gw: Gateway) -> None:
    run_id = gw.launch("t-chain")
    params = document()["paths"]["/v1/runs/{run_id}/events"]["get"]["parameters"]
    bound = next(p for p in params if p["name"] == "after_seq")["schema"]["maximum"]
    assert len(str(bound)) == 19
    response = gw.client.get(f"/v1/runs/{run_id}/events?after_seq={bound}", headers=gw.auth("run:read"))
    assert response.status_code == 400
    assert "beyond the run's last event" in strict(response)["error"]["message"]  # parsed, not refused
    over = gw.client.get(f"/v1/runs/{run_id}/events?after_seq={bound + 1}", headers=gw.auth("run:read"))
    assert "must be between" in strict(over)["error"]["message"]


def test_confirm_false_is_outside_the_schema_and_refused(gw: Gateway) -> None:
    schemas = document()["components"]["schemas"]
    for name in ("RewindRequest", "ReplayRequest", "ForkRequest"):
        assert schemas[name]["properties"]["confirm"]["enum"] == [True]
    run_id = gw.launch("t-chain")
    response = gw.client.post(
        f"/v1/runs/{run_id}/rewind",
        json={"node_id": "a", "confirm": False},
        headers=gw.auth(("run:write", "admin")),
    )
    assert response.status_code == 400
    assert "confirm" in strict(response)["error"]["message"]


def test_ttl_s_has_a_documented_maximum_that_the_code_keeps(gw: Gateway) -> None:
    spec = document()["components"]["schemas"]["GrantRequest"]["properties"]["ttl_s"]
    assert spec["maximum"] == TTL_LIMIT_S
    body = {"subject": "bot", "scopes": ["run:read"], "kind": "automation", "ttl_s": TTL_LIMIT_S + 1}
    response = gw.client.post("/v1/grants", json=body, headers=gw.auth("admin"))
    assert response.status_code == 400
    assert "ttl_s" in strict(response)["error"]["message"]


def test_a_doubled_slash_is_a_json_404_not_a_redirect(gw: Gateway) -> None:
    response = gw.client.get("/v1//runs", headers=gw.auth("run:read"))
    assert response.status_code == 404
    assert strict(response)["error"]["code"] == "not_found"
    assert response.headers["X-Request-ID"]


# -- failed authentication: limited per source, denials folded into counted rows ---------


def test_failed_authentication_is_limited_per_source_and_audited_in_folded_rows(
    store_url: str, redis_server: str
) -> None:
    with make_gateway(store_url, redis_server, auth_failures=5, auth_window_s=60.0) as gw:
        rows_before = len(gw.audit("request.denied"))
        denied_before = gw.denied(401) + gw.denied(429)
        junk = {"Authorization": "Bearer not-a-token"}
        codes = [gw.client.get("/v1/runs", headers=junk).status_code for _ in range(200)]
        assert codes == [401] * 5 + [429] * 195

        # a 429 is the JSON error shape with Retry-After, even with a valid token now
        limited = gw.client.get("/v1/runs", headers=gw.auth("run:read"))
        assert limited.status_code == 429
        assert strict(limited)["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.headers["X-Request-ID"]

        # another source is not limited
        other = gw.client.get(
            "/v1/runs", headers=gw.auth("run:read"), environ_base={"REMOTE_ADDR": "127.0.0.9"}
        )
        assert other.status_code == 200

        # 201 denials: a few rows, their counts adding up to every one of them
        new_rows = gw.audit("request.denied")[rows_before:]
        assert len(new_rows) <= 4, [  # (401, 429; twice if an interval ends meanwhile)
            (r.detail["status"], r.count) for r in new_rows
        ]
        assert gw.denied(401) + gw.denied(429) - denied_before == 201
