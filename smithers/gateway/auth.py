"""Bearer grants: JWTs verified by flask-jwt-extended, then checked against their row.

A token is accepted when its signature, issuer and expiry are valid (HS256 with the
configured key, no leeway), it carries ``sub``, ``scopes``, ``exp`` and ``jti``, and
its grant row exists, names the same subject, and is neither revoked nor expired. The
row is read again at most ``SMITHERS_GRANT_CACHE`` seconds (1) after a worker last read
it: a revocation through this worker takes effect at once, one made elsewhere within
that bound; expiry is judged against the clock on every request. A worker verifies a
token's signature once and keeps its claims (at most ``VERIFIED_MAX`` tokens): later
requests with the same token check its expiry and its grant row only. The scopes a
request may use are those in both the token and the row.

The console may instead send a session cookie (:mod:`smithers.gateway.session`): a short
JWT signed with a key derived from the signing key (so neither kind passes for the
other), naming the same grant and at most its scopes. It is checked the same way (the
grant row on every request, the same scope check), and an unsafe method also needs
the session's CSRF token in ``X-CSRF-Token``. A request with an ``Authorization``
header is judged by that header alone.

The gateway's own tokens are HS256 by default; with a key pair (``SMITHERS_JWT_ALGORITHM``
RS256, ES256 or EdDSA) they are verified with the public key, and only a process holding
the private key mints them. A bearer token whose ``iss`` is a configured outside issuer
(:mod:`smithers.gateway.issuers`) is verified with that issuer's JWKS instead; its claim
maps to scopes, and the first request with it records its grant row (kind and issuer
from the configuration, the lifetime capped by the kind's maximum), which every later
request reads like any other (a revocation applies as above).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import jwt
from flask import Flask, current_app, g, request
from flask_jwt_extended import JWTManager, create_access_token, get_jwt, verify_jwt_in_request
from flask_jwt_extended.exceptions import (
    JWTExtendedException,
    NoAuthorizationError,
    RevokedTokenError,
)

from smithers.gateway.config import GatewayConfig, KeyPair
from smithers.gateway.issuers import OutsideIssuer, OutsideTokens
from smithers.gateway.services import services
from smithers.shared.errors import Conflict, Forbidden, InvalidInput, RateLimited, Unauthorized
from smithers.shared.grants import Grant, Scope, effective_scopes, grant_problem, require_scope
from smithers.shared.settings import format_duration

P = ParamSpec("P")
R = TypeVar("R")
ALGORITHM = "HS256"
SUBJECT_KEY = "smithers.subject"
SCOPE_ATTR = "required_scope"
ANY_SCOPE = "any"  # the SCOPE_ATTR of a view any valid credential may call
SESSION_COOKIE = "smithers_session"
SESSION_AUDIENCE = "smithers-console"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OUTSIDE = "smithers.outside"  # app.extensions: the OutsideTokens of the configured issuers
MINTS = "smithers.mints"  # app.extensions: whether this app holds a key that signs tokens
# app.extensions: the claims of bearer tokens this app verified, by token (a signature is
# checked once per worker; expiry and the grant row on every request)
VERIFIED = "smithers.verified"
VERIFIED_MAX = 4096


@dataclass(frozen=True)
class Principal:
    """Who is calling, with what."""

    subject: str
    scopes: frozenset[Scope]
    jti: str
    session: dict[str, Any] | None = None  # the session's claims, when the cookie was used


def configure_auth(app: Flask, config: GatewayConfig) -> None:
    """Everything :func:`authenticate` needs on ``app``: the gateway's own tokens
    (:func:`configure_jwt`) and the configured outside issuers."""
    configure_jwt(app, config.signing_key, config.issuer, config.key_pair)
    app.extensions[OUTSIDE] = OutsideTokens(
        config.outside_issuers,
        leeway_s=config.idp_leeway_s,
        timeout_s=config.jwks_timeout_s,
        cache_s=config.jwks_cache_s,
        refresh_min_s=config.jwks_refresh_min_s,
    )


def configure_jwt(app: Flask, key: str, issuer: str, key_pair: KeyPair | None = None) -> JWTManager:
    """Configure flask-jwt-extended on ``app`` and hook the grant-row check into it:
    HS256 with ``key``, or ``key_pair``'s algorithm (minting only with its private key)."""
    if key_pair is None:
        keys: dict[str, Any] = {"JWT_SECRET_KEY": key, "JWT_ALGORITHM": ALGORITHM}
        app.extensions[MINTS] = True
    else:
        keys = {
            "JWT_ALGORITHM": key_pair.algorithm,
            "JWT_PUBLIC_KEY": key_pair.public_pem,
            "JWT_PRIVATE_KEY": key_pair.private_pem or None,
        }
        app.extensions[MINTS] = bool(key_pair.private_pem)
    app.config.update(
        **keys,
        JWT_DECODE_ALGORITHMS=[keys["JWT_ALGORITHM"]],  # one algorithm: no HS256-with-public-key
        JWT_TOKEN_LOCATION=["headers"],
        JWT_IDENTITY_CLAIM="sub",
        JWT_ENCODE_ISSUER=issuer,
        JWT_DECODE_ISSUER=issuer,
        JWT_DECODE_LEEWAY=0,
        JWT_ACCESS_TOKEN_EXPIRES=False,  # every token carries its grant's own exp
        JWT_ENCODE_NBF=False,
    )
    manager = JWTManager(app)
    manager.token_in_blocklist_loader(_refused)
    return manager


def _refused(_header: dict[str, Any], claims: dict[str, Any]) -> bool:
    """flask-jwt-extended's blocklist hook: look the grant row up and remember why."""
    jti, subject = claims.get("jti"), claims.get("sub")
    if not isinstance(jti, str) or not isinstance(subject, str):
        g.smithers_problem = "token lacks a jti or a subject"
        return True
    grant = services().control.cached(jti)
    problem = grant_problem(grant, subject, time.time())
    g.smithers_grant = grant
    g.smithers_problem = problem
    return problem is not None


def can_mint() -> bool:
    """Whether the current app holds a key that signs tokens (not a public key alone)."""
    return bool(current_app.extensions.get(MINTS))


def require_minting() -> None:
    """Raise Conflict when this gateway verifies with a public key only."""
    if not can_mint():
        raise Conflict(
            "this gateway holds only the public key (SMITHERS_JWT_PUBLIC_KEY_FILE): issue tokens"
            " where SMITHERS_JWT_PRIVATE_KEY_FILE is, with `smithers token issue`"
        )


def mint(grant: Grant) -> str:
    """The bearer token of ``grant`` (needs an app configured by :func:`configure_jwt`)."""
    require_minting()
    token: str = create_access_token(
        identity=grant.subject,
        additional_claims={
            "jti": grant.jti,
            "scopes": [s.value for s in grant.scopes],
            "iat": int(grant.issued_at),
            "exp": int(grant.expires_at),
        },
    )
    return token


def mint_with_key(key: str, issuer: str, grant: Grant, key_pair: KeyPair | None = None) -> str:
    """The bearer token of ``grant`` outside the gateway (``smithers token issue``):
    HS256 with ``key``, or signed with ``key_pair``'s private key."""
    app = Flask("smithers-token")
    configure_jwt(app, key, issuer, key_pair)
    with app.app_context():
        return mint(grant)


def session_key(key: str) -> bytes:
    """The key session cookies are signed with: derived, so a bearer token is never a
    valid session and a session never a valid bearer token. Conflict when there is no
    secret (a key-pair gateway without SMITHERS_JWT_SECRET): sessions are off."""
    if not key:
        raise Conflict(
            "console sessions are off on this gateway: they need SMITHERS_JWT_SECRET"
            " (or a data directory's gateway.key) beside the key pair"
        )
    return hmac.new(key.encode(), b"smithers console session", hashlib.sha256).digest()


def authenticate(needed: Scope | None) -> Principal:
    """Check the request's bearer token or session cookie and, unless ``needed`` is None,
    its scope; raise Unauthorized or Forbidden, or RateLimited when the source failed
    authentication too often (the credential unread)."""
    wait = services().limiter.retry_after(source())
    if wait is not None:
        raise RateLimited(f"too many failed authentications from this address; retry in {wait} s", wait)
    if "Authorization" not in request.headers and SESSION_COOKIE in request.cookies:
        principal = _from_session(request.cookies[SESSION_COOKIE])
    else:
        principal = _from_bearer()
    g.principal = principal
    request.environ[SUBJECT_KEY] = principal.subject
    if needed is not None:
        require_scope(principal.scopes, needed)
    return principal


def _bearer_token() -> str | None:
    kind, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if kind.lower() == "bearer" and token.strip() else None


def _from_bearer() -> Principal:
    outside: OutsideTokens | None = current_app.extensions.get(OUTSIDE)
    token = _bearer_token()
    if outside is not None and token is not None:
        issuer = outside.claimed_issuer(token)
        if issuer is not None:
            return _from_outside(outside, issuer, token)
    verified: dict[str, dict[str, Any]] = current_app.extensions.setdefault(VERIFIED, {})
    claims = verified.get(token) if token is not None else None
    if claims is not None:
        return _from_verified(claims)
    try:
        verify_jwt_in_request()
    except NoAuthorizationError:
        raise Unauthorized("a bearer token is required") from None
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except RevokedTokenError:
        raise Unauthorized(getattr(g, "smithers_problem", None) or "token revoked") from None
    except (JWTExtendedException, jwt.PyJWTError):
        raise Unauthorized("invalid token") from None
    claims = get_jwt()
    principal = _principal(claims)
    if token is not None:
        if len(verified) >= VERIFIED_MAX:
            verified.clear()
        verified[token] = claims
    return principal


def _from_verified(claims: dict[str, Any]) -> Principal:
    """A token whose signature and issuer this app verified before (its claims then):
    checked again for expiry, against the clock, and against its grant row."""
    if not float(claims["exp"]) > time.time():  # as PyJWT with no leeway
        raise Unauthorized("token expired")
    if _refused({}, claims):
        raise Unauthorized(getattr(g, "smithers_problem", None) or "token revoked")
    return _principal(claims)


def _principal(claims: dict[str, Any]) -> Principal:
    grant: Grant | None = getattr(g, "smithers_grant", None)
    scopes_claim = claims.get("scopes")
    if (
        grant is None
        or not isinstance(scopes_claim, list)
        or not isinstance(claims.get("exp"), int)
        or int(claims["exp"]) != int(grant.expires_at)
    ):
        raise Unauthorized("invalid token")
    return Principal(grant.subject, effective_scopes(grant, scopes_claim), grant.jti)


def _from_outside(outside: OutsideTokens, issuer: OutsideIssuer, token: str) -> Principal:
    """A token of an outside issuer: verified, mapped, and its grant row recorded once."""
    claims = outside.verify(issuer, token)
    subject = issuer.subject(claims)
    scopes = issuer.scopes(claims)
    if not scopes:
        raise Unauthorized(f"token's {issuer.claim!r} claim maps to no scope on this gateway")
    control = services().control
    jti = issuer.grant_id(claims, token)
    now = time.time()
    grant = control.cached(jti)
    if grant is None:
        grant = _record_outside(issuer, claims, jti, subject, scopes, now, outside.leeway_s)
    g.smithers_grant = grant
    # the skew the signature check allowed applies to the row's expiry too
    problem = grant_problem(grant, subject, now - outside.leeway_s)
    if problem is not None:
        raise Unauthorized(problem)
    # the row's scopes, and of those only what the mapping still grants (a narrowed
    # mapping takes effect at once, a widened one with the provider's next token)
    return Principal(grant.subject, effective_scopes(grant, [s.value for s in scopes]), grant.jti)


def _record_outside(
    issuer: OutsideIssuer,
    claims: dict[str, Any],
    jti: str,
    subject: str,
    scopes: frozenset[Scope],
    now: float,
    leeway_s: float,
) -> Grant:
    control = services().control
    iat = claims.get("iat")
    issued = float(int(min(float(iat), now))) if isinstance(iat, int | float) else float(int(now))
    ceiling = control.policy.max_ttl(issuer.kind)
    expires_at = min(float(claims["exp"]), issued + ceiling)  # the kind's ceiling, whatever exp says
    if expires_at <= now - leeway_s:
        raise Unauthorized(
            f"token expired (a {issuer.kind.value} token lives at most {format_duration(ceiling)})"
        )
    outside_jti = claims.get("jti")
    note = f"outside token jti {str(outside_jti)[:200]}" if isinstance(outside_jti, str) else None
    try:
        grant, _ = control.record_grant(
            jti=jti,
            subject=subject,
            scopes=[s.value for s in scopes],
            kind=issuer.kind,
            issuer=issuer.issuer,
            issued_at=issued,
            expires_at=expires_at,
            actor=issuer.actor,
            note=note,
        )
    except Conflict:  # recorded meanwhile, or before with other claims: one jti, one token
        existing = control.get(jti)
        if existing is None or (existing.subject, existing.issuer) != (subject, issuer.issuer):
            raise Unauthorized("token's jti was already used with other claims") from None
        return existing
    except InvalidInput as exc:
        raise Unauthorized(f"token refused: {exc.message}") from None
    return grant


def _from_session(cookie: str) -> Principal:
    config = services().config
    if not config.signing_key:
        raise Unauthorized("console sessions are off on this gateway")
    try:
        claims: dict[str, Any] = jwt.decode(
            cookie,
            session_key(config.signing_key),
            algorithms=[ALGORITHM],
            audience=SESSION_AUDIENCE,
            issuer=config.issuer,
            options={"require": ["exp", "sub", "jti", "sid", "csrf", "scopes"]},
            leeway=0,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("session expired") from None
    except jwt.PyJWTError:
        raise Unauthorized("invalid session") from None
    grant = services().control.cached(str(claims["jti"]))
    g.smithers_grant = grant
    problem = grant_problem(grant, str(claims["sub"]), time.time())
    if problem is not None or grant is None or not isinstance(claims["scopes"], list):
        raise Unauthorized(problem or "invalid session")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), str(claims["csrf"]).encode()):
            g.principal = Principal(grant.subject, frozenset(), grant.jti, claims)
            raise Forbidden(f"a session request that changes anything needs its {CSRF_HEADER} header")
    return Principal(grant.subject, effective_scopes(grant, claims["scopes"]), grant.jti, claims)


def requires(scope: Scope | None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a view: it runs only for a valid credential holding ``scope`` (any valid
    credential when ``scope`` is None)."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            authenticate(scope)
            return view(*args, **kwargs)

        setattr(wrapper, SCOPE_ATTR, ANY_SCOPE if scope is None else scope)
        return wrapper

    return decorate


def source() -> str:
    """The client address the failed-authentication limit counts (the peer's address)."""
    return str(request.remote_addr or "-")[:64]


def principal() -> Principal:
    """The authenticated caller of this request."""
    found: Principal | None = getattr(g, "principal", None)
    if found is None:
        raise Unauthorized("a bearer token is required")
    return found
