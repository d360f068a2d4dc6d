"""Console sessions: exchange a bearer token for a short-lived session cookie.

``POST /v1/session`` with ``Authorization: Bearer <token>`` sets ``smithers_session``:
HttpOnly, SameSite=Strict, Secure over https (or always, see
``SMITHERS_SESSION_SECURE_COOKIE``), Path=/. Its value is a JWT signed with a key derived
from the signing key, naming the token's grant and at most its scopes, expiring after
``SMITHERS_SESSION_TTL`` or with the grant, whichever comes first. The response body
carries the session's CSRF token, which the console keeps in memory and sends as
``X-CSRF-Token`` on every request that changes something; ``GET /v1/session`` returns it
again after a reload (a cross-origin page cannot read that response). The long-lived
token itself is never stored by the browser. ``DELETE /v1/session`` signs out: the
cookie is cleared; revoking the grant ends every session made from it at once.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import replace

import jwt
from apiflask import APIBlueprint
from flask import Response, after_this_request, request

from smithers.gateway.apidoc import errors
from smithers.gateway.auth import (
    ALGORITHM,
    SESSION_AUDIENCE,
    SESSION_COOKIE,
    Principal,
    principal,
    requires,
    session_key,
)
from smithers.gateway.body import check_query
from smithers.gateway.services import services
from smithers.shared.api import Session, SignedOut
from smithers.shared.errors import InvalidInput

bp = APIBlueprint("session", __name__)


def session_model(who: Principal, expires_at: float | None, csrf: str | None) -> Session:
    """What the console learns about its caller: subject, scopes, expiry, CSRF token."""
    return Session(
        subject=who.subject,
        scopes=tuple(sorted(s.value for s in who.scopes)),
        expires_at=expires_at,
        csrf_token=csrf,
        via="session" if who.session is not None else "bearer",
    )


def _secure() -> bool:
    mode = services().config.session_secure
    return mode == "true" or (mode == "auto" and request.is_secure)


@bp.post("/v1/session")
@requires(None)
@bp.output(Session, status_code=201, description="The session cookie was set; keep `csrf_token`.")
@bp.doc(
    summary="Start a console session",
    operation_id="createSession",
    description="Exchange the bearer token in `Authorization` for `smithers_session`, an"
    " HttpOnly, SameSite=Strict cookie (Secure over https or with"
    " `SMITHERS_SESSION_SECURE_COOKIE=true`) naming the same grant and at most its scopes,"
    " for `SMITHERS_SESSION_TTL` or until the grant expires. Requests with the cookie are"
    " checked like the token (the grant row, the same scopes); those that change anything"
    " also need `X-CSRF-Token`. Revoking the grant ends its sessions (within"
    " `SMITHERS_GRANT_CACHE`).",
    responses=errors(400, 401, 403, 409, 503),
)
def create() -> Session:
    """Exchange the caller's bearer token for a session cookie bound to its grant."""
    check_query(())
    svc = services()
    who = principal()
    if who.session is not None:  # a session does not mint another session
        raise InvalidInput("send the token to exchange in the Authorization header")
    grant = svc.control.get(who.jti)
    now = time.time()
    expires_at = float(int(min(now + svc.config.session_ttl_s, grant.expires_at if grant else now)))
    csrf = secrets.token_urlsafe(32)
    sid = uuid.uuid4().hex
    claims = {
        "sub": who.subject,
        "jti": who.jti,
        "sid": sid,
        "scopes": sorted(s.value for s in who.scopes),
        "csrf": csrf,
        "iat": int(now),
        "exp": int(expires_at),
        "aud": SESSION_AUDIENCE,
        "iss": svc.config.issuer,
    }
    value = jwt.encode(claims, session_key(svc.config.signing_key), algorithm=ALGORITHM)
    svc.control.record_event(
        "session.created",
        actor=who.subject,
        target_type="session",
        target_id=sid,
        detail={"jti": who.jti, "scopes": claims["scopes"], "expires_at": expires_at},
    )
    secure = _secure()

    @after_this_request
    def set_cookie(response: Response) -> Response:
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=max(1, int(expires_at - now)),
            path="/",
            secure=secure,
            httponly=True,
            samesite="Strict",
        )
        return response

    return session_model(replace(who, session=claims), expires_at, csrf)


@bp.get("/v1/session")
@requires(None)
@bp.output(Session, description="Subject, scopes, expiry; the session's CSRF token.")
@bp.doc(summary="Who is calling", operation_id="readSession", responses=errors(400, 401, 503))
def show() -> Session:
    """Who the caller is and what it may do; the CSRF token when a session is used."""
    check_query(())
    who = principal()
    if who.session is None:
        grant = services().control.get(who.jti)
        return session_model(who, grant.expires_at if grant else None, None)
    return session_model(who, float(who.session["exp"]), str(who.session["csrf"]))


@bp.delete("/v1/session")
@requires(None)
@bp.output(SignedOut, description="The session cookie was cleared.")
@bp.doc(
    summary="Sign out",
    operation_id="endSession",
    description="With the session cookie, `X-CSRF-Token` is needed (else 403).",
    responses=errors(400, 401, 403, 503),
)
def delete() -> SignedOut:
    """Sign out: clear the session cookie (a session request needs its CSRF token)."""
    check_query(())
    who = principal()
    if who.session is not None:
        services().control.record_event(
            "session.ended",
            actor=who.subject,
            target_type="session",
            target_id=str(who.session["sid"]),
            detail={"jti": who.jti},
        )
    secure = _secure()

    @after_this_request
    def clear_cookie(response: Response) -> Response:
        response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="Strict")
        return response

    return SignedOut(signed_out=True)
