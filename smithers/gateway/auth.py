"""Bearer grants: JWTs verified by flask-jwt-extended, then checked against their row.

A token is accepted when its signature, issuer and expiry are valid (HS256 with the
configured key, no leeway), it carries ``sub``, ``scopes``, ``exp`` and ``jti``, and
its grant row exists, names the same subject, and is neither revoked nor expired. The
row is read on every request, so a revocation takes effect at once. The scopes a
request may use are those in both the token and the row.

The console may instead send a session cookie (:mod:`smithers.gateway.session`): a short
JWT signed with a key derived from the signing key (so neither kind passes for the
other), naming the same grant and at most its scopes. It is checked the same way (the
grant row on every request, the same scope check), and an unsafe method also needs
the session's CSRF token in ``X-CSRF-Token``. A request with an ``Authorization``
header is judged by that header alone.
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
from flask import Flask, g, request
from flask_jwt_extended import JWTManager, create_access_token, get_jwt, verify_jwt_in_request
from flask_jwt_extended.exceptions import (
    JWTExtendedException,
    NoAuthorizationError,
    RevokedTokenError,
)

from smithers.gateway.services import services
from smithers.shared.errors import Forbidden, RateLimited, Unauthorized
from smithers.shared.grants import Grant, Scope, effective_scopes, grant_problem, require_scope

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


@dataclass(frozen=True)
class Principal:
    """Who is calling, with what."""

    subject: str
    scopes: frozenset[Scope]
    jti: str
    session: dict[str, Any] | None = None  # the session's claims, when the cookie was used


def configure_jwt(app: Flask, key: str, issuer: str) -> JWTManager:
    """Configure flask-jwt-extended on ``app`` and hook the grant-row check into it."""
    app.config.update(
        JWT_SECRET_KEY=key,
        JWT_ALGORITHM=ALGORITHM,
        JWT_DECODE_ALGORITHMS=[ALGORITHM],
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
    grant = services().control.get(jti)
    problem = grant_problem(grant, subject, time.time())
    g.smithers_grant = grant
    g.smithers_problem = problem
    return problem is not None


def mint(grant: Grant) -> str:
    """The bearer token of ``grant`` (needs an app configured by :func:`configure_jwt`)."""
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


def mint_with_key(key: str, issuer: str, grant: Grant) -> str:
    """The bearer token of ``grant`` outside the gateway (``smithers token issue``)."""
    app = Flask("smithers-token")
    configure_jwt(app, key, issuer)
    with app.app_context():
        return mint(grant)


def session_key(key: str) -> bytes:
    """The key session cookies are signed with: derived, so a bearer token is never a
    valid session and a session never a valid bearer token."""
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


def _from_bearer() -> Principal:
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


def _from_session(cookie: str) -> Principal:
    config = services().config
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
    grant = services().control.get(str(claims["jti"]))
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
