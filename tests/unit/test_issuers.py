"""Outside issuers, pure parts: claim lookup, the grant row's key, the JWKS document."""

from __future__ import annotations

import hashlib
import json

import pytest

from smithers.gateway.issuers import OutsideIssuer, _parse_jwks, claim_value
from smithers.shared.errors import InvalidInput, Unauthorized
from smithers.shared.grants import GrantKind, Scope

ISSUER = OutsideIssuer(
    name="corp",
    issuer="https://idp.test",
    audiences=("smithers",),
    kind=GrantKind.PERSON,
    claim="realm_access.roles",
    mapping=(("ops", (Scope.RUN_READ, Scope.RUN_WRITE)),),
    jwks_file="/dev/null",
    subject_claim="email",
    subject_prefix="corp:",
)


def test_a_claim_is_a_key_first_then_a_dotted_path() -> None:
    claims = {"realm_access": {"roles": ["ops"]}, "https://x.test/roles": ["a"], "a.b": 1, "a": {"b": 2}}
    assert claim_value(claims, "realm_access.roles") == ["ops"]
    assert claim_value(claims, "https://x.test/roles") == ["a"]
    assert claim_value(claims, "a.b") == 1  # the key wins over the path
    assert claim_value(claims, "realm_access.missing") is None
    assert claim_value(claims, "realm_access.roles.0") is None
    assert ISSUER.scopes(claims) == {Scope.RUN_READ, Scope.RUN_WRITE}


def test_the_subject_is_the_prefixed_claim_and_must_be_a_valid_subject() -> None:
    assert ISSUER.subject({"email": "dana@corp.test"}) == "corp:dana@corp.test"
    for claims in ({}, {"email": ""}, {"email": 7}, {"email": "a|b"}, {"email": "x" * 200}):
        with pytest.raises(Unauthorized):
            ISSUER.subject(claims)


def test_the_grant_key_names_the_issuer_and_the_jti_or_the_token() -> None:
    key = ISSUER.grant_id({"jti": "abc"}, "token-1")
    assert key == "idp_" + hashlib.sha256(b"https://idp.test\njti\nabc").hexdigest()[:56]
    assert key == ISSUER.grant_id({"jti": "abc"}, "token-2")  # one jti, one row
    other = OutsideIssuer(**{**ISSUER.__dict__, "issuer": "https://other.test"})
    assert other.grant_id({"jti": "abc"}, "token-1") != key  # never another issuer's row
    assert ISSUER.grant_id({}, "token-1") != ISSUER.grant_id({}, "token-2")
    assert len(key) == 60


def test_a_jwks_document_keeps_only_usable_signing_keys() -> None:
    ed = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ed"}
    hs = {"kty": "oct", "k": "c2VjcmV0", "kid": "hs"}  # a shared secret: never a verification key
    document = {"keys": [ed, {**ed, "kid": "enc", "use": "enc"}, hs]}
    keys = _parse_jwks(json.dumps(document).encode())
    assert list(keys) == ["ed"] and keys["ed"].algorithm_name == "EdDSA"
    for bad in (b"not json", b"[]", b'{"keys": {}}', b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'):
        with pytest.raises(InvalidInput):
            _parse_jwks(bad)
