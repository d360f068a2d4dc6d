"""Tokens from outside issuers, and the gateway's own tokens signed with a key pair, on
SQLite and PostgreSQL.

An identity provider's RS256, ES256 and EdDSA tokens (JWKS served over HTTP by a tiny
server on 127.0.0.1, or read from a file) are accepted with the scopes their claim maps
to and recorded once as a grant row naming the issuer; every forged or mis-addressed
token gets 401 with a JSON body and writes no grant. Self-issued tokens signed with a
private key verify on a gateway that holds only the public key, which cannot mint one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from smithers.gateway.auth import SESSION_COOKIE, session_key
from smithers.gateway.config import GatewayConfig, load_key_pair
from smithers.gateway.issuers import parse_issuers
from smithers.shared.config import resolve_deployment
from smithers.shared.errors import Conflict, InvalidInput
from smithers.shared.grants import GrantKind, Scope, TtlPolicy
from smithers.shared.store import schema as s
from smithers.shared.store.queries import get_run
from tests.integration.gateway.support import Gateway, jti_of, make_gateway, module_database

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
CORP = "https://idp.corp.test"
CI = "https://ci.test/oidc"
AUDIENCE = "smithers-test"
LEEWAY = 30
PERSON_MAX = 3600
ALGS = ("RS256", "ES256", "EdDSA")


def private_key(alg: str) -> Any:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def jwk(alg: str, key: Any, kid: str) -> dict[str, Any]:
    to_jwk = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[alg].to_jwk
    data: dict[str, Any] = to_jwk(key.public_key(), as_dict=True)
    return {**data, "kid": kid, "use": "sig", "alg": alg}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class JwksServer:
    """A JWKS over HTTP on 127.0.0.1: ``keys`` is served as it is at each request."""

    keys: list[dict[str, Any]]
    hits: int = 0
    delay_s: float = 0.0
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def start(self) -> JwksServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                time.sleep(owner.delay_s)
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@dataclass
class Idp:
    """The identity providers of these tests: their keys, their JWKS, the gateway."""

    gw: Gateway
    server: JwksServer
    keys: dict[str, Any]  # alg -> private key, kid = "corp-<alg>"
    ci_key: Any
    jwks_file: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def token(
        self,
        alg: str = "RS256",
        *,
        groups: Any = ("viewers",),
        iss: str = CORP,
        aud: str = AUDIENCE,
        sub: str = "dana@corp.test",
        exp_in: float = 600,
        iat_ago: float = 0,
        jti: str | None = "",
        kid: str | None = "",
        key: Any = None,
        drop: tuple[str, ...] = (),
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": iss,
            "aud": aud,
            "sub": sub,
            "iat": now - int(iat_ago),
            "exp": now + int(exp_in),
            "groups": list(groups) if not isinstance(groups, str) else groups,
            "jti": uuid.uuid4().hex if jti == "" else jti,
            **claims,
        }
        for name in drop:
            payload.pop(name, None)
        if payload["jti"] is None:
            del payload["jti"]
        headers = {"kid": f"corp-{alg}" if kid == "" else kid}
        if headers["kid"] is None:
            del headers["kid"]
        return jwt.encode(payload, key or self.keys[alg], algorithm=alg, headers=headers)

    def ci_token(self, roles: list[str], **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": CI,
            "aud": "smithers-ci",
            "sub": "acme-deploy",
            "iat": now,
            "exp": now + 3000,
            "roles": roles,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(payload, self.ci_key, algorithm="ES256", headers={"kid": "ci-1"})

    def grants(self) -> int:
        return self.gw.count(s.grants)


def issuers_config(jwks_url: str, jwks_file: Path) -> dict[str, Any]:
    return {
        "issuers": [
            {
                "name": "corp",
                "issuer": CORP,
                "audience": [AUDIENCE, "other-app"],
                "jwks_url": jwks_url,
                "claim": "groups",
                "scopes": {
                    "viewers": ["run:read"],
                    "approvers": ["run:read", "approval:read", "approval:submit"],
                    "ops": ["run:read", "run:write", "admin"],
                },
            },
            {
                "name": "ci",
                "issuer": CI,
                "audience": "smithers-ci",
                "jwks_file": str(jwks_file),
                "algorithms": ["ES256"],
                "kind": "automation",
                "claim": "roles",
                "subject_prefix": "ci:",
                "scopes": {"deployer": ["run:read", "run:write"]},
            },
        ]
    }


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def idp(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_server: str
) -> Iterator[Idp]:
    pg = request.getfixturevalue("pg_admin") if request.param == "postgres" else None
    tmp = tmp_path_factory.mktemp("gw-idp")
    keys = {alg: private_key(alg) for alg in ALGS}
    server = JwksServer([jwk(alg, key, f"corp-{alg}") for alg, key in keys.items()]).start()
    ci_key = private_key("ES256")
    jwks_file = tmp / "ci-jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk("ES256", ci_key, "ci-1")]}))
    policy = TtlPolicy(person_max_s=PERSON_MAX)
    issuers = parse_issuers(issuers_config(server.url, jwks_file), policy)
    try:
        with (
            module_database(request.param, tmp, pg) as url,
            make_gateway(
                url,
                redis_server,
                ttl=policy,
                outside_issuers=issuers,
                idp_leeway_s=LEEWAY,
                jwks_timeout_s=2.0,
                jwks_refresh_min_s=1,
                auth_failures=10**6,
            ) as gw,
        ):
            yield Idp(gw, server, keys, ci_key, jwks_file)
    finally:
        server.stop()


def get(idp: Idp, path: str, token: str) -> Any:
    return idp.gw.client.get(path, headers={"Authorization": f"Bearer {token}"})


# -- accepted -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_each_algorithm_is_accepted_with_the_scopes_its_claim_maps_to(idp: Idp, alg: str) -> None:
    # given a viewer's token signed by the provider with this algorithm
    viewer = idp.token(alg, groups=["viewers", "unmapped-group"], sub=f"viewer-{alg.lower()}@corp.test")
    # then it reads but neither launches nor approves
    assert get(idp, "/v1/runs", viewer).status_code == 200
    who = get(idp, "/v1/session", viewer).get_json()
    assert (who["subject"], who["scopes"]) == (f"viewer-{alg.lower()}@corp.test", ["run:read"])
    launch = idp.gw.client.post(
        "/v1/runs", json={"workflow": "t-chain"}, headers={"Authorization": f"Bearer {viewer}"}
    )
    assert launch.status_code == 403
    assert get(idp, "/v1/approvals", viewer).status_code == 403

    # an approver's token (one space-separated string works as a list does) reads approvals
    approver = idp.token(alg, groups="approvers viewers")
    assert get(idp, "/v1/approvals", approver).status_code == 200
    assert get(idp, "/v1/session", approver).get_json()["scopes"] == [
        "approval:read",
        "approval:submit",
        "run:read",
    ]

    # and the grant row names the issuer, the kind it configures, and the provider's jti
    grant = idp.gw.control.get(_grant_id(approver))
    assert grant is not None
    assert (grant.subject, grant.issuer, grant.kind, grant.scopes) == (
        "dana@corp.test",
        CORP,
        GrantKind.PERSON,
        (Scope.APPROVAL_READ, Scope.APPROVAL_SUBMIT, Scope.RUN_READ),
    )
    assert grant.note == f"outside token jti {jti_of(approver)}"
    (recorded,) = [a for a in idp.gw.audit("grant.recorded") if a.target_id == grant.jti]
    assert recorded.actor == "idp:corp"


def _grant_id(token: str, issuer: str = CORP) -> str:
    return "idp_" + hashlib.sha256(f"{issuer}\njti\n{jti_of(token)}".encode()).hexdigest()[:56]


def test_automation_issuer_decides_the_kind_and_prefixes_the_subject(idp: Idp) -> None:
    token = idp.ci_token(["deployer"], kind="person")  # a claim cannot choose the kind
    launched = idp.gw.client.post(
        "/v1/runs", json={"workflow": "t-chain"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert launched.status_code == 201, launched.get_json()
    grant = idp.gw.control.get(_grant_id(token, CI))
    assert grant is not None
    assert (grant.subject, grant.kind, grant.issuer) == ("ci:acme-deploy", GrantKind.AUTOMATION, CI)
    with idp.gw.store.read() as conn:
        run = get_run(conn, launched.get_json()["run_id"])
    assert run is not None and run.launched_by == "ci:acme-deploy"


def test_a_token_within_the_clock_skew_is_accepted(idp: Idp) -> None:
    assert get(idp, "/v1/runs", idp.token(exp_in=-(LEEWAY - 10), iat_ago=600)).status_code == 200
    assert get(idp, "/v1/runs", idp.token(iat_ago=-(LEEWAY - 10))).status_code == 200


# -- refused --------------------------------------------------------------------------------


def _hs256_with_public_key(idp: Idp) -> str:
    """HS256 signed with the RSA public key's PEM as the HMAC secret (key confusion)."""
    pem = (
        idp.keys["RS256"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    _, payload, _ = idp.token("RS256").split(".")
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "corp-RS256"}).encode())
    sig = b64(hmac.new(pem, f"{head}.{payload}".encode(), hashlib.sha256).digest())
    return f"{head}.{payload}.{sig}"


def _alg_none(idp: Idp) -> str:
    _, payload, _ = idp.token("RS256").split(".")
    return b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "corp-RS256"}).encode()) + f".{payload}."


def _tampered_signature(idp: Idp) -> str:
    head, payload, sig = idp.token("ES256").split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[5] ^= 0x01
    return f"{head}.{payload}.{b64(bytes(raw))}"


def _tampered_payload(idp: Idp) -> str:
    head, payload, sig = idp.token("EdDSA").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["groups"] = ["ops"]
    return f"{head}.{b64(json.dumps(claims).encode())}.{sig}"


def _swapped_alg(idp: Idp) -> str:
    """An ES256 token whose header names the RSA key's kid."""
    return idp.token("ES256", kid="corp-RS256")


REFUSED: dict[str, tuple[Any, str]] = {
    # what the gateway is sent -> the message it answers with
    "wrong issuer": (lambda idp: idp.token(iss="https://evil.test"), "invalid token"),
    "wrong audience": (lambda idp: idp.token(aud="someone-else"), "token audience is not this gateway"),
    "expired beyond the skew": (lambda idp: idp.token(exp_in=-(LEEWAY + 30)), "token expired"),
    "issued in the future": (lambda idp: idp.token(iat_ago=-(LEEWAY + 60)), "token not valid yet"),
    "not yet valid": (lambda idp: idp.token(nbf=int(time.time()) + LEEWAY + 60), "token not valid yet"),
    "unknown kid": (lambda idp: idp.token(kid="corp-rotated-away"), "token signed with an unknown key"),
    "no kid": (lambda idp: idp.token(kid=None), "token names no kid"),
    "alg none": (_alg_none, "token algorithm 'none' is not one issuer 'corp' uses"),
    "hs256 with the public key": (
        _hs256_with_public_key,
        "token algorithm 'HS256' is not one issuer 'corp' uses",
    ),
    "alg of another key": (_swapped_alg, "token algorithm 'ES256' does not match its key"),
    "tampered signature": (_tampered_signature, "invalid token"),
    "tampered payload": (_tampered_payload, "invalid token"),
    "another key, the right kid": (
        lambda idp: idp.token("ES256", key=private_key("ES256")),
        "invalid token",
    ),
    "no exp": (lambda idp: idp.token(drop=("exp",)), "invalid token"),
    "no subject": (lambda idp: idp.token(drop=("sub",)), "token lacks its 'sub' claim"),
    "bad subject": (lambda idp: idp.token(sub="auth0|12345"), "token's 'sub' is not a valid subject"),
    "no mapped group": (
        lambda idp: idp.token(groups=["marketing"]),
        "token's 'groups' claim maps to no scope on this gateway",
    ),
    "ci token on the corp audience": (
        lambda idp: idp.ci_token(["deployer"], aud=AUDIENCE),
        "token audience is not this gateway",
    ),
    "ci issuer, rs256": (
        lambda idp: jwt.encode(
            {"iss": CI, "aud": "smithers-ci", "sub": "x", "exp": int(time.time()) + 60, "roles": ["x"]},
            idp.keys["RS256"],
            algorithm="RS256",
            headers={"kid": "ci-1"},
        ),
        "token algorithm 'RS256' is not one issuer 'ci' uses",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(REFUSED))
def test_forged_and_misaddressed_tokens_are_refused_with_a_json_401(idp: Idp, name: str) -> None:
    make, message = REFUSED[name]
    token = make(idp)
    grants_before = idp.grants()
    denied_before = idp.gw.denied(401)
    for method, path in (("GET", "/v1/runs"), ("POST", "/v1/runs"), ("GET", "/v1/approvals")):
        response = idp.gw.client.open(
            path,
            method=method,
            json={"workflow": "t-chain"} if method == "POST" else None,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 401, (name, response.get_json())
        assert response.get_json()["error"] == {"code": "unauthorized", "message": message}
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert idp.grants() == grants_before  # nothing recorded for a refused token
    assert idp.gw.denied(401) - denied_before == 3


# -- the grant row --------------------------------------------------------------------------


def test_the_grant_row_is_written_once_per_token_and_revocable(idp: Idp) -> None:
    token = idp.token("ES256", groups=["approvers"])
    before = idp.grants()
    for _ in range(3):
        assert get(idp, "/v1/approvals", token).status_code == 200
    assert idp.grants() == before + 1
    grant_id = _grant_id(token)
    assert [a.target_id for a in idp.gw.audit("grant.recorded")].count(grant_id) == 1

    # the same jti signed again with wider groups is no second grant: the row bounds it
    again = idp.token("ES256", groups=["ops"], jti=jti_of(token))
    assert get(idp, "/v1/runs", again).status_code == 200
    wider = {"Authorization": f"Bearer {again}"}
    assert idp.gw.client.post("/v1/runs", json={"workflow": "t-chain"}, headers=wider).status_code == 403
    assert idp.gw.client.get("/v1/grants", headers=wider).status_code == 403
    assert idp.grants() == before + 1

    # an admin lists it with its issuer and revokes it over the API; it is refused at once
    admin = idp.gw.auth("admin", "root")
    listed = idp.gw.client.get("/v1/grants?subject=dana@corp.test", headers=admin).get_json()["grants"]
    assert [(g["issuer"], g["kind"]) for g in listed if g["jti"] == grant_id] == [(CORP, "person")]
    assert idp.gw.client.post(f"/v1/grants/{grant_id}/revoke", headers=admin).status_code == 200
    refused = get(idp, "/v1/approvals", token)
    assert refused.status_code == 401 and refused.get_json()["error"]["message"] == "token revoked"

    # tokens without a jti: one row per token
    first, second = idp.token(jti=None), idp.token(jti=None, exp_in=601)
    before = idp.grants()
    for t in (first, second, first):
        assert get(idp, "/v1/runs", t).status_code == 200
    assert idp.grants() == before + 2


def test_a_person_token_lives_at_most_the_person_maximum(idp: Idp) -> None:
    # a provider that hands out 10-hour person tokens: the row ends after PERSON_MAX
    token = idp.token(exp_in=10 * 3600)
    assert get(idp, "/v1/runs", token).status_code == 200
    grant = idp.gw.control.get(_grant_id(token))
    assert grant is not None and grant.expires_at - grant.issued_at == PERSON_MAX
    assert grant.issued_at == jwt.decode(token, options={"verify_signature": False})["iat"]
    # the scheme is case-insensitive for outside tokens too
    assert idp.gw.client.get("/v1/runs", headers={"Authorization": f"bearer {token}"}).status_code == 200
    # a token issued longer ago than that is refused, and nothing is recorded
    before = idp.grants()
    old = get(idp, "/v1/runs", idp.token(exp_in=3600, iat_ago=PERSON_MAX + LEEWAY + 60))
    assert old.status_code == 401
    assert old.get_json()["error"]["message"] == "token expired (a person token lives at most 1h)"
    assert idp.grants() == before


def test_an_outside_token_makes_a_console_session_bound_to_its_grant(idp: Idp) -> None:
    token = idp.token("EdDSA", groups=["viewers"])
    created = idp.gw.client.post("/v1/session", headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201
    assert idp.gw.client.get("/v1/runs").status_code == 200  # the cookie alone
    idp.gw.control.revoke(_grant_id(token), actor="test")
    assert idp.gw.client.get("/v1/runs").status_code == 401
    idp.gw.client.delete_cookie(SESSION_COOKIE)


# -- the JWKS ------------------------------------------------------------------------------


def test_the_jwks_is_cached_and_a_rotated_key_is_fetched(idp: Idp) -> None:
    jwks = idp.gw.app.extensions["smithers.outside"].jwks[CORP]
    get(idp, "/v1/runs", idp.token())  # loaded (if not yet)
    hits = idp.server.hits
    for alg in ALGS:
        assert get(idp, "/v1/runs", idp.token(alg)).status_code == 200
    assert idp.server.hits == hits  # served from the cache

    # the provider rotates in a new key; a token with its kid reads the JWKS again
    rotated = private_key("ES256")
    idp.server.keys = [*idp.server.keys, jwk("ES256", rotated, "corp-rotated")]
    time.sleep(1.1)  # jwks_refresh_min_s
    fresh = idp.token("ES256", kid="corp-rotated", key=rotated)
    assert get(idp, "/v1/runs", fresh).status_code == 200
    assert idp.server.hits == hits + 1

    # unknown kids in a burst read it at most once per interval
    time.sleep(1.1)
    reads = jwks.reads
    for _ in range(5):
        assert get(idp, "/v1/runs", idp.token(kid="corp-nope")).status_code == 401
    assert jwks.reads == reads + 1


def test_a_slow_jwks_endpoint_is_given_up_after_the_timeout(idp: Idp) -> None:
    # given a gateway that has not read this provider's keys yet, and a provider that hangs
    slow = JwksServer([jwk("RS256", idp.keys["RS256"], "corp-RS256")], delay_s=5).start()
    try:
        issuers = parse_issuers(issuers_config(slow.url, idp.jwks_file), TtlPolicy())
        url = str(idp.gw.store.engine.url.render_as_string(hide_password=False))
        with make_gateway(url, None, outside_issuers=issuers, jwks_timeout_s=0.5) as gw:
            started = time.monotonic()
            response = gw.client.get("/v1/runs", headers={"Authorization": f"Bearer {idp.token()}"})
            elapsed = time.monotonic() - started
        assert response.status_code == 401
        assert response.get_json()["error"]["message"].startswith("the keys of issuer 'corp' cannot be read")
        assert elapsed < 3
    finally:
        slow.delay_s = 0
        slow.stop()


def test_the_issuers_file_is_checked_when_the_gateway_starts(tmp_path: Path) -> None:
    jwks_file = tmp_path / "jwks.json"
    good = issuers_config("https://idp.corp.test/keys", jwks_file)

    def refused(change: Any, policy: TtlPolicy | None = None) -> str:
        data = json.loads(json.dumps(good))
        change(data["issuers"][1])
        with pytest.raises(InvalidInput) as caught:
            parse_issuers(data, policy or TtlPolicy())
        return caught.value.message

    # an automation issuer may map to admin or approval:submit only where configured
    def deploy_admin(i: dict[str, Any]) -> None:
        i["scopes"]["deployer"] = ["run:write", "admin"]

    assert "may not carry 'admin'" in refused(deploy_admin)
    data = json.loads(json.dumps(good))
    deploy_admin(data["issuers"][1])
    allowed = TtlPolicy(automation_privileged=frozenset({Scope.ADMIN}))
    assert parse_issuers(data, allowed)[1].mapping[0][1] == (Scope.ADMIN, Scope.RUN_WRITE)

    assert "jwks_url must be https" in refused(
        lambda i: (i.pop("jwks_file"), i.update(jwks_url="http://idp.test/k"))
    )
    assert "exactly one of jwks_url and jwks_file" in refused(lambda i: i.update(jwks_url="https://x.test/k"))
    assert "algorithms must be" in refused(lambda i: i.update(algorithms=["HS256"]))
    assert "unknown scope" in refused(lambda i: i.update(scopes={"deployer": ["run:everything"]}))
    assert "not a known field" in refused(lambda i: i.update(kinds="person"))
    assert "kind must be" in refused(lambda i: i.update(kind="robot"))
    assert "audience" in refused(lambda i: i.update(audience=[]))
    assert "two issuers share one name" in refused(lambda i: i.update(name="corp"))


# -- the gateway's own tokens, signed with a key pair ----------------------------------------


def write_pair(tmp: Path, alg: str) -> tuple[Path, Path]:
    key = private_key(alg)
    private, public = tmp / f"{alg}.key", tmp / f"{alg}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@pytest.mark.parametrize("alg", ALGS)
def test_a_gateway_with_only_the_public_key_verifies_but_cannot_mint(
    idp: Idp, alg: str, tmp_path: Path
) -> None:
    private, public = write_pair(tmp_path, alg)
    issuing = load_key_pair({"SMITHERS_JWT_ALGORITHM": alg, "SMITHERS_JWT_PRIVATE_KEY_FILE": str(private)})
    verifying = load_key_pair({"SMITHERS_JWT_ALGORITHM": alg, "SMITHERS_JWT_PUBLIC_KEY_FILE": str(public)})
    assert issuing is not None and verifying is not None
    assert issuing.public_pem == verifying.public_pem and not verifying.private_pem
    url = idp.gw.store.engine.url.render_as_string(hide_password=False)
    with (
        make_gateway(url, None, key_pair=issuing) as issuer,
        make_gateway(url, None, key_pair=verifying, signing_key="") as verifier,
    ):
        # given a token the issuing side minted with the private key
        token = issuer.token("run:read,admin", "ops-" + alg.lower())
        assert jwt.get_unverified_header(token)["alg"] == alg
        headers = {"Authorization": f"Bearer {token}"}
        # then the public-key gateway accepts it, and refuses to mint one itself
        assert verifier.client.get("/v1/runs", headers=headers).status_code == 200
        grants_before = verifier.count(s.grants)
        minted = verifier.client.post(
            "/v1/grants", json={"subject": "x", "scopes": ["run:read"]}, headers=headers
        )
        assert minted.status_code == 409
        assert "holds only the public key" in minted.get_json()["error"]["message"]
        assert verifier.count(s.grants) == grants_before
        # console sessions need a secret this gateway does not have
        session = verifier.client.post("/v1/session", headers=headers)
        assert session.status_code == 409 and "sessions are off" in session.get_json()["error"]["message"]
        forged = jwt.encode({"sub": "x"}, hashlib.sha256(b"").digest(), algorithm="HS256")
        verifier.client.set_cookie(SESSION_COOKIE, forged)
        assert verifier.client.get("/v1/runs").status_code == 401
        verifier.client.delete_cookie(SESSION_COOKIE)
        with pytest.raises(Conflict):
            session_key("")

        # HS256 signed with the public key, alg none, and an HS256 token of a shared secret
        # for the same grant: all refused
        pem = verifying.public_pem.encode()
        _, payload, _ = token.split(".")
        hs_head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        confused = f"{hs_head}.{payload}." + b64(
            hmac.new(pem, f"{hs_head}.{payload}".encode(), hashlib.sha256).digest()
        )
        unsigned = b64(b'{"alg":"none","typ":"JWT"}') + f".{payload}."
        hs = jwt.encode(
            json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))),
            idp.gw.svc.config.signing_key,
            algorithm="HS256",
        )
        for bad in (confused, unsigned, hs):
            refused = verifier.client.get("/v1/runs", headers={"Authorization": f"Bearer {bad}"})
            assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "unauthorized"


def test_the_key_files_are_checked(tmp_path: Path) -> None:
    rsa_private, rsa_public = write_pair(tmp_path, "RS256")
    _, es_public = write_pair(tmp_path, "ES256")
    (tmp_path / "other").mkdir()
    _, other_rsa_public = write_pair(tmp_path / "other", "RS256")

    def refused(**env: str) -> str:
        with pytest.raises(InvalidInput) as caught:
            load_key_pair(env)
        return caught.value.message

    assert load_key_pair({}) is None  # HS256
    assert "needs SMITHERS_JWT_PUBLIC_KEY_FILE" in refused(SMITHERS_JWT_ALGORITHM="ES256")
    assert "does not hold a key for ES256" in refused(
        SMITHERS_JWT_ALGORITHM="ES256", SMITHERS_JWT_PUBLIC_KEY_FILE=str(rsa_public)
    )
    assert "does not hold a key for RS256" in refused(
        SMITHERS_JWT_ALGORITHM="RS256", SMITHERS_JWT_PUBLIC_KEY_FILE=str(es_public)
    )
    assert "is not the public half" in refused(
        SMITHERS_JWT_ALGORITHM="RS256",
        SMITHERS_JWT_PRIVATE_KEY_FILE=str(rsa_private),
        SMITHERS_JWT_PUBLIC_KEY_FILE=str(other_rsa_public),
    )
    assert "SMITHERS_JWT_ALGORITHM must be one of" in refused(SMITHERS_JWT_ALGORITHM="none")
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "small.key").write_bytes(
        small.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    assert "RSA of 2048+ bits" in refused(
        SMITHERS_JWT_ALGORITHM="RS256", SMITHERS_JWT_PRIVATE_KEY_FILE=str(tmp_path / "small.key")
    )


def test_smithers_token_issue_needs_the_private_key(tmp_path: Path) -> None:
    private, public = write_pair(tmp_path, "EdDSA")
    base = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    base |= {
        "SMITHERS_DATABASE_URL": f"sqlite:///{tmp_path / 'smithers.db'}",
        "SMITHERS_JWT_ALGORITHM": "EdDSA",
    }

    def token_issue(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "smithers", "token", "issue", "--subject", "ops", "--scopes", "run:read"],
            cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    subprocess.run([sys.executable, "-m", "smithers", "migrate"], cwd=ROOT, env=base, check=True, timeout=60)
    public_only = token_issue(SMITHERS_JWT_PUBLIC_KEY_FILE=str(public))
    assert public_only.returncode == 2, public_only.stderr
    assert "issuing a token needs the private key" in public_only.stderr
    assert "Traceback" not in public_only.stderr

    issued = token_issue(SMITHERS_JWT_PRIVATE_KEY_FILE=str(private))
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    pair = load_key_pair({"SMITHERS_JWT_ALGORITHM": "EdDSA", "SMITHERS_JWT_PUBLIC_KEY_FILE": str(public)})
    assert pair is not None
    claims = jwt.decode(token, pair.public_pem, algorithms=["EdDSA"], issuer="smithers")
    assert claims["sub"] == "ops" and claims["scopes"] == ["run:read"]


# -- the kind policy of the gateway's own grants ----------------------------------------------


def test_an_automation_grant_carries_admin_or_approval_submit_only_when_configured(
    idp: Idp, tmp_path: Path
) -> None:
    admin = idp.gw.auth("admin", "root")
    for scope in ("admin", "approval:submit"):
        body = {"subject": "bot", "scopes": ["run:read", scope], "kind": "automation", "ttl_s": 7 * 86400}
        refused = idp.gw.client.post("/v1/grants", json=body, headers=admin)
        assert refused.status_code == 400, refused.get_json()
        assert f"may not carry {scope!r}" in refused.get_json()["error"]["message"]
        # a person may hold it, for a person's short lifetime
        person = {**body, "kind": "person", "ttl_s": 600}
        assert idp.gw.client.post("/v1/grants", json=person, headers=admin).status_code == 201
    # the human ceiling holds whatever the scopes
    long = {"subject": "dana", "scopes": ["run:read"], "kind": "person", "ttl_s": PERSON_MAX + 1}
    assert idp.gw.client.post("/v1/grants", json=long, headers=admin).status_code == 400

    # configured: the automation grant may carry approval:submit (and still not admin)
    url = idp.gw.store.engine.url.render_as_string(hide_password=False)
    allowed = TtlPolicy(automation_privileged=frozenset({Scope.APPROVAL_SUBMIT}))
    with make_gateway(url, None, ttl=allowed) as gw:
        root = gw.auth("admin", "root")
        body = {"subject": "bot", "scopes": ["approval:submit"], "kind": "automation", "ttl_s": 86400}
        assert gw.client.post("/v1/grants", json=body, headers=root).status_code == 201
        body["scopes"] = ["admin"]
        assert gw.client.post("/v1/grants", json=body, headers=root).status_code == 400
    with pytest.raises(InvalidInput, match="names only admin and approval:submit"):
        TtlPolicy.from_env({"SMITHERS_TOKEN_AUTOMATION_PRIVILEGED_SCOPES": "run:write"})
    assert TtlPolicy.from_env(
        {"SMITHERS_TOKEN_AUTOMATION_PRIVILEGED_SCOPES": "admin,approval:submit"}
    ).automation_privileged == frozenset({Scope.ADMIN, Scope.APPROVAL_SUBMIT})


def test_one_token_arriving_on_many_requests_at_once_is_one_grant(idp: Idp) -> None:
    # given a new token whose first requests arrive together (a console opening its streams)
    token = idp.token("RS256", groups=["viewers"])
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def first_use() -> None:
        client = idp.gw.app.test_client()
        barrier.wait()
        statuses.append(client.get("/v1/workflows", headers={"Authorization": f"Bearer {token}"}).status_code)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # then every request got through and the token is one row with one audit entry
    assert statuses == [200] * 8
    recorded = [a for a in idp.gw.audit("grant.recorded") if a.target_id == _grant_id(token)]
    assert len(recorded) == 1


def test_record_grant_is_idempotent_under_concurrent_writers(idp: Idp) -> None:
    now = time.time()
    jti = "race-" + uuid.uuid4().hex[:20]
    barrier = threading.Barrier(8)
    results: list[bool] = []
    errors: list[BaseException] = []

    def record() -> None:
        barrier.wait()
        try:
            _, created = idp.gw.control.record_grant(
                jti=jti, subject="eve", scopes="run:read", kind=GrantKind.PERSON, issuer=CORP,
                issued_at=now, expires_at=now + 600, actor="idp:corp",
            )  # fmt: skip
            results.append(created)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=record) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and sorted(results) == [False] * 7 + [True]


def test_the_gateway_config_reads_the_key_pair_and_the_issuers_from_the_environment(tmp_path: Path) -> None:
    private, public = write_pair(tmp_path, "ES256")
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps(issuers_config("https://idp.corp.test/keys", tmp_path / "jwks.json")))
    cluster = {
        "SMITHERS_DATABASE_URL": "postgresql+psycopg2://root@127.0.0.1/nothing",
        "SMITHERS_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    env = {
        **cluster,
        "SMITHERS_JWT_ALGORITHM": "ES256",
        "SMITHERS_JWT_PUBLIC_KEY_FILE": str(public),
        "SMITHERS_IDP_ISSUERS_FILE": str(issuers),
        "SMITHERS_IDP_LEEWAY": "2m",
        "SMITHERS_IDP_JWKS_TIMEOUT": "1.5",
        "SMITHERS_IDP_JWKS_CACHE": "5m",
        "SMITHERS_IDP_JWKS_REFRESH_MIN": "10s",
    }
    config = GatewayConfig.from_env(env, resolve_deployment(env))
    # a verify-only cluster gateway needs no secret: its sessions are off
    assert config.signing_key == "" and config.key_pair is not None and not config.key_pair.private_pem
    assert [i.name for i in config.outside_issuers] == ["corp", "ci"]
    assert config.outside_issuers[1].kind is GrantKind.AUTOMATION
    assert (config.idp_leeway_s, config.jwks_timeout_s, config.jwks_cache_s, config.jwks_refresh_min_s) == (
        120,
        1.5,
        300,
        10,
    )
    # where the private key is, it signs, and it never shows in a repr (or a log line)
    issuing = GatewayConfig.from_env(
        {**env, "SMITHERS_JWT_PRIVATE_KEY_FILE": str(private)}, resolve_deployment(env)
    )
    assert issuing.key_pair is not None and "PRIVATE KEY" in issuing.key_pair.private_pem
    assert "PRIVATE" not in repr(issuing)
    # HS256 (the default) still needs its secret
    with pytest.raises(InvalidInput, match="no token signing key"):
        GatewayConfig.from_env(cluster, resolve_deployment(cluster))
    # no outside issuer may claim the gateway's own iss
    own = issuers_config("https://idp.corp.test/keys", tmp_path / "jwks.json")
    own["issuers"][0]["issuer"] = "smithers"
    issuers.write_text(json.dumps(own))
    with pytest.raises(InvalidInput, match="'smithers' is the gateway's own issuer"):
        GatewayConfig.from_env(env, resolve_deployment(env))
    # a file too big or not JSON is named
    issuers.write_text("{not json")
    with pytest.raises(InvalidInput, match="is not JSON"):
        GatewayConfig.from_env(env, resolve_deployment(env))
    issuers.write_text(" " * (1 << 20) + "{}")
    with pytest.raises(InvalidInput, match="is over 1048576 bytes"):
        GatewayConfig.from_env(env, resolve_deployment(env))
