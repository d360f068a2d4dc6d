"""Bearer grants: JWTs verified by flask-jwt-extended, then checked against their row.

A token is accepted when its signature, issuer and expiry are valid (HS256 with the
configured key, no leeway), it carries ``sub``, ``scopes``, ``exp`` and ``jti``, and
its grant row exists, names the same subject, and is neither revoked nor expired. The
row is read on every request, so a revocation takes effect at once. The scopes a
request may use are those in both the token and the row.
"""

from __future__ import annotations

import functools
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
from smithers.shared.errors import RateLimited, Unauthorized
from smithers.shared.grants import Grant, Scope, effective_scopes, grant_problem, require_scope

P = ParamSpec("P")
R = TypeVar("R")
ALGORITHM = "HS256"
SUBJECT_KEY = "smithers.subject"
SCOPE_ATTR = "required_scope"


@dataclass(frozen=True)
class Principal:
    """Who is calling, with what."""

    subject: str
    scopes: frozenset[Scope]
    jti: str


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


def authenticate(needed: Scope) -> Principal:
    """Check the request's bearer token and scope; raise Unauthorized or Forbidden, or
    RateLimited when the source failed authentication too often (the token unread)."""
    wait = services().limiter.retry_after(source())
    if wait is not None:
        raise RateLimited(f"too many failed authentications from this address; retry in {wait} s", wait)
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
    principal = Principal(grant.subject, effective_scopes(grant, scopes_claim), grant.jti)
    g.principal = principal
    request.environ[SUBJECT_KEY] = principal.subject
    require_scope(principal.scopes, needed)
    return principal


def requires(scope: Scope) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a view: it runs only for a valid token holding ``scope``."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            authenticate(scope)
            return view(*args, **kwargs)

        setattr(wrapper, SCOPE_ATTR, scope)
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
