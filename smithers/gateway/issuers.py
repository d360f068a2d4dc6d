"""Outside issuers: JWTs from an identity provider, verified with the keys of its JWKS.

``SMITHERS_IDP_ISSUERS_FILE`` names a JSON file ``{"issuers": [...]}``; each issuer is

    {"name": "okta",                            # the grant rows' actor: idp:okta
     "issuer": "https://example.okta.com",      # the tokens' iss, exactly
     "audience": "smithers",                    # or a list: the token's aud must name one
     "jwks_url": "https://example.okta.com/oauth2/v1/keys",   # or "jwks_file": "/etc/..."
     "algorithms": ["RS256", "ES256", "EdDSA"], # the default: all three, never HS* or none
     "kind": "person",                          # or "automation": the issuer decides, not the token
     "claim": "groups",                         # a list of strings, or one space-separated string
     "scopes": {"smithers-approvers": ["run:read", "approval:read", "approval:submit"]},
     "subject_claim": "sub", "subject_prefix": ""}

A token is accepted when its header's ``alg`` is the algorithm of the JWKS key its
``kid`` names and one the issuer allows, its signature verifies with that key, its
``iss`` is the issuer's, its ``aud`` one of the issuer's audiences, and ``exp`` (required),
``nbf`` and ``iat`` hold within the configured clock skew. A JWKS is read once and kept
for ``SMITHERS_IDP_JWKS_CACHE``; a ``kid`` it lacks reads it again (a rotated key), at
most once per ``SMITHERS_IDP_JWKS_REFRESH_MIN``, so unknown kids cannot make the gateway
hammer the provider. A URL is fetched with ``SMITHERS_IDP_JWKS_TIMEOUT`` and a size
bound, over https (plain http only to a loopback address).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from smithers.shared.errors import InvalidInput, Unauthorized
from smithers.shared.grants import (
    GrantKind,
    Scope,
    TtlPolicy,
    check_subject,
    mapped_scopes,
    parse_scopes,
)
from smithers.shared.store.grants import ISSUER

ALGORITHMS = ("RS256", "ES256", "EdDSA")
PUBLIC_KTYS = frozenset({"RSA", "EC", "OKP"})
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
CLAIM = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")
FIELDS = frozenset(
    {
        "name",
        "issuer",
        "audience",
        "jwks_url",
        "jwks_file",
        "algorithms",
        "kind",
        "claim",
        "scopes",
        "subject_claim",
        "subject_prefix",
    }
)
MAX_ISSUERS = 32
MAX_MAPPINGS = 256
MAX_FILE_BYTES = 1 << 20
MAX_JWKS_BYTES = 256 * 1024
MAX_JWKS_KEYS = 64
MAX_TOKEN_CHARS = 16 * 1024
LEEWAY_LIMIT_S = 300


@dataclass(frozen=True)
class OutsideIssuer:
    """One trusted issuer: how its tokens are verified and what they become."""

    name: str
    issuer: str
    audiences: tuple[str, ...]
    kind: GrantKind
    claim: str
    mapping: tuple[tuple[str, tuple[Scope, ...]], ...]
    algorithms: tuple[str, ...] = ALGORITHMS
    jwks_url: str = ""
    jwks_file: str = ""
    subject_claim: str = "sub"
    subject_prefix: str = ""

    @property
    def actor(self) -> str:
        """Who the grant rows of this issuer's tokens are recorded by."""
        return f"idp:{self.name}"

    def scopes(self, claims: Mapping[str, Any]) -> frozenset[Scope]:
        """The scopes the token's claim maps to (none when it names no mapped value)."""
        return mapped_scopes(claim_value(claims, self.claim), dict(self.mapping))

    def subject(self, claims: Mapping[str, Any]) -> str:
        """The grant's subject: the subject claim, with the configured prefix."""
        value = claim_value(claims, self.subject_claim)
        if not isinstance(value, str) or not value:
            raise Unauthorized(f"token lacks its {self.subject_claim!r} claim")
        try:
            return check_subject(self.subject_prefix + value)
        except InvalidInput:
            raise Unauthorized(f"token's {self.subject_claim!r} is not a valid subject") from None

    def grant_id(self, claims: Mapping[str, Any], token: str) -> str:
        """The grant row's key: the issuer with the token's ``jti`` (or, lacking one, the
        token itself), hashed: one row per token, never the key of another issuer's row."""
        jti = claims.get("jti")
        what = f"jti\n{jti}" if isinstance(jti, str) and jti else f"token\n{token}"
        return "idp_" + hashlib.sha256(f"{self.issuer}\n{what}".encode()).hexdigest()[:56]


def claim_value(claims: Mapping[str, Any], name: str) -> object:
    """``claims[name]``, else the dotted path (``realm_access.roles``), else None."""
    if name in claims:
        return claims[name]
    value: object = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


# -- the issuers file ---------------------------------------------------------------------


def load_issuers(path: str, policy: TtlPolicy) -> tuple[OutsideIssuer, ...]:
    """The issuers ``path`` describes; InvalidInput naming the file and the field if bad."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read SMITHERS_IDP_ISSUERS_FILE {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise InvalidInput(f"SMITHERS_IDP_ISSUERS_FILE {path} is over {MAX_FILE_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"SMITHERS_IDP_ISSUERS_FILE {path} is not JSON: {exc}") from None
    try:
        return parse_issuers(data, policy)
    except InvalidInput as exc:
        raise InvalidInput(f"SMITHERS_IDP_ISSUERS_FILE {path}: {exc.message}") from None


def parse_issuers(data: object, policy: TtlPolicy) -> tuple[OutsideIssuer, ...]:
    """Issuers from the file's JSON: ``{"issuers": [...]}``, each checked in full, and
    an automation issuer's mapping checked against the policy's privileged scopes."""
    if not isinstance(data, dict) or set(data) != {"issuers"} or not isinstance(data["issuers"], list):
        raise InvalidInput('the file must be {"issuers": [...]}')
    items = data["issuers"]
    if len(items) > MAX_ISSUERS:
        raise InvalidInput(f"at most {MAX_ISSUERS} issuers")
    issuers = tuple(_issuer(item, i, policy) for i, item in enumerate(items))
    for field_name in ("name", "issuer"):
        values = [getattr(x, field_name) for x in issuers]
        if len(set(values)) != len(values):
            raise InvalidInput(f"two issuers share one {field_name}")
    return issuers


def _text(item: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = item.get(key, default)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{where}.{key} must be a non-empty string")
    return value


def _issuer(item: object, index: int, policy: TtlPolicy) -> OutsideIssuer:
    where = f"issuers[{index}]"
    if not isinstance(item, dict):
        raise InvalidInput(f"{where} must be an object")
    unknown = sorted(set(item) - FIELDS)
    if unknown:
        raise InvalidInput(f"{where}.{unknown[0]} is not a known field ({', '.join(sorted(FIELDS))})")
    name = _text(item, "name", where)
    if not NAME.fullmatch(name):
        raise InvalidInput(f"{where}.name must match {NAME.pattern}")
    issuer = _text(item, "issuer", where)
    if not ISSUER.fullmatch(issuer):
        raise InvalidInput(f"{where}.issuer must match {ISSUER.pattern}")
    audience = item.get("audience")
    audiences = (audience,) if isinstance(audience, str) else audience
    if not isinstance(audiences, list | tuple) or not audiences:
        raise InvalidInput(f"{where}.audience must be a string or a list of strings")
    if not all(isinstance(a, str) and a for a in audiences):
        raise InvalidInput(f"{where}.audience must be a string or a list of strings")
    jwks_url, jwks_file = item.get("jwks_url", ""), item.get("jwks_file", "")
    if bool(jwks_url) == bool(jwks_file) or not isinstance(jwks_url, str) or not isinstance(jwks_file, str):
        raise InvalidInput(f"{where} needs exactly one of jwks_url and jwks_file")
    if jwks_url:
        _check_url(jwks_url, where)
    algorithms = item.get("algorithms", list(ALGORITHMS))
    if not isinstance(algorithms, list) or not algorithms or not set(algorithms) <= set(ALGORITHMS):
        raise InvalidInput(f"{where}.algorithms must be a non-empty list of {', '.join(ALGORITHMS)}")
    kind_name = item.get("kind", GrantKind.PERSON.value)
    if kind_name not in {k.value for k in GrantKind}:
        raise InvalidInput(f"{where}.kind must be person or automation")
    kind = GrantKind(kind_name)
    claim = _text(item, "claim", where, "groups")
    subject_claim = _text(item, "subject_claim", where, "sub")
    for key, value in (("claim", claim), ("subject_claim", subject_claim)):
        if not CLAIM.fullmatch(value):
            raise InvalidInput(f"{where}.{key} must match {CLAIM.pattern}")
    prefix = item.get("subject_prefix", "")
    if not isinstance(prefix, str) or len(prefix) > 32:
        raise InvalidInput(f"{where}.subject_prefix must be a string of at most 32 characters")
    return OutsideIssuer(
        name=name,
        issuer=issuer,
        audiences=tuple(audiences),
        kind=kind,
        claim=claim,
        mapping=_mapping(item.get("scopes"), f"{where}.scopes", kind, policy),
        algorithms=tuple(a for a in ALGORITHMS if a in algorithms),
        jwks_url=jwks_url,
        jwks_file=jwks_file,
        subject_claim=subject_claim,
        subject_prefix=prefix,
    )


def _mapping(
    value: object, where: str, kind: GrantKind, policy: TtlPolicy
) -> tuple[tuple[str, tuple[Scope, ...]], ...]:
    if not isinstance(value, dict) or not value or len(value) > MAX_MAPPINGS:
        raise InvalidInput(f"{where} must map 1 to {MAX_MAPPINGS} claim values to lists of scopes")
    mapping = []
    for claim_item, scopes in sorted(value.items()):
        if not isinstance(scopes, list):
            raise InvalidInput(f"{where}.{claim_item} must be a list of scopes")
        try:
            parsed = parse_scopes(scopes)
            policy.check_kind(kind, parsed)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}.{claim_item}: {exc.message}") from None
        mapping.append((str(claim_item), parsed))
    return tuple(mapping)


def _check_url(url: str, where: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        try:
            if ipaddress.ip_address(parts.hostname).is_loopback:
                return
        except ValueError:
            if parts.hostname == "localhost":
                return
    raise InvalidInput(f"{where}.jwks_url must be https (plain http only to a loopback address)")


# -- keys ---------------------------------------------------------------------------------


class Jwks:
    """One issuer's signing keys, read from its JWKS URL or file and cached.

    Thread-safe: one reader refreshes at a time, under a lock (a cooperative one under
    gevent). A failed read keeps the keys already held and is retried after the
    minimum refresh interval, not on every request.
    """

    def __init__(self, issuer: OutsideIssuer, *, timeout_s: float, cache_s: float, refresh_min_s: float):
        self.issuer = issuer
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self.refresh_min_s = refresh_min_s
        self.reads = 0  # how many times the JWKS was read (for tests and metrics)
        self._lock = threading.Lock()
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._loaded_at = -math.inf
        self._tried_at = -math.inf
        self._error = ""

    def key(self, kid: str | None) -> jwt.PyJWK:
        """The key ``kid`` names (a token without a kid: the set's only key)."""
        with self._lock:
            now = time.monotonic()
            stale = now - self._loaded_at >= self.cache_s
            found = self._find(kid)
            if (stale or found is None) and now - self._tried_at >= self.refresh_min_s:
                self._refresh(now)
                found = self._find(kid)
            if found is not None:
                return found
            if not self._keys:
                raise Unauthorized(f"the keys of issuer {self.issuer.name!r} cannot be read: {self._error}")
        raise Unauthorized("token signed with an unknown key" if kid else "token names no kid")

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _refresh(self, now: float) -> None:
        self._tried_at = now
        self.reads += 1
        try:
            keys = _parse_jwks(self._read())
        except InvalidInput as exc:
            self._error = exc.message
            return
        self._keys, self._loaded_at, self._error = keys, now, ""

    def _read(self) -> bytes:
        if self.issuer.jwks_file:
            try:
                with open(self.issuer.jwks_file, "rb") as handle:
                    raw = handle.read(MAX_JWKS_BYTES + 1)
            except OSError as exc:
                raise InvalidInput(f"cannot read {self.issuer.jwks_file}: {exc.strerror}") from None
        else:
            # the scheme was checked at load: https, or http to a loopback address
            url, accept = self.issuer.jwks_url, {"Accept": "application/json"}
            request = urllib.request.Request(url, headers=accept)  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                    raw = response.read(MAX_JWKS_BYTES + 1)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise InvalidInput(f"fetching {self.issuer.jwks_url} failed: {exc}") from None
        if len(raw) > MAX_JWKS_BYTES:
            raise InvalidInput(f"the JWKS is over {MAX_JWKS_BYTES} bytes")
        return raw


def _parse_jwks(raw: bytes) -> dict[str | None, jwt.PyJWK]:
    """The public signing keys of a JWKS document (RSA, EC or OKP; ``use`` absent or
    ``sig``); keys of another kind, or that PyJWT cannot use, are left out, and a
    document with none is an error."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the JWKS is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise InvalidInput('the JWKS is not {"keys": [...]}')
    keys: dict[str | None, jwt.PyJWK] = {}
    for item in data["keys"][:MAX_JWKS_KEYS]:
        if not isinstance(item, dict) or item.get("use", "sig") != "sig":
            continue
        if item.get("kty") not in PUBLIC_KTYS:  # a symmetric ("oct") key is never a public key
            continue
        try:
            key = jwt.PyJWK(item)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        kid = item.get("kid")
        keys[kid if isinstance(kid, str) else None] = key
    if not keys:
        raise InvalidInput("the JWKS holds no usable signing key")
    return keys


# -- verification -------------------------------------------------------------------------


class OutsideTokens:
    """The configured issuers and their key caches: which issuer a token claims, and
    whether it really is that issuer's."""

    def __init__(
        self,
        issuers: tuple[OutsideIssuer, ...],
        *,
        leeway_s: float,
        timeout_s: float,
        cache_s: float,
        refresh_min_s: float,
    ) -> None:
        self.leeway_s = leeway_s
        self.by_iss = {i.issuer: i for i in issuers}
        self.jwks = {
            i.issuer: Jwks(i, timeout_s=timeout_s, cache_s=cache_s, refresh_min_s=refresh_min_s)
            for i in issuers
        }

    def claimed_issuer(self, token: str) -> OutsideIssuer | None:
        """The configured issuer whose ``iss`` the (unverified) token names, or None: only
        to choose how to verify it, nothing is trusted yet."""
        if not self.by_iss or len(token) > MAX_TOKEN_CHARS:
            return None
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        iss = claims.get("iss")
        return self.by_iss.get(iss) if isinstance(iss, str) else None

    def verify(self, issuer: OutsideIssuer, token: str) -> dict[str, Any]:
        """The token's claims once it is proven to be ``issuer``'s, else Unauthorized."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            raise Unauthorized(f"token algorithm {str(alg)[:16]!r} is not one issuer {issuer.name!r} uses")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("invalid token")
        key = self.jwks[issuer.issuer].key(kid)
        if key.algorithm_name != alg:  # an ES256 header on an RSA key, and so on
            raise Unauthorized(f"token algorithm {alg!r} does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=list(issuer.audiences),
                issuer=issuer.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("token not valid yet") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("token audience is not this gateway") from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        return claims
