"""/v1/grants (admin): issue, list and revoke bearer grants over the API.

``smithers token`` does the same from a shell. The token is returned once, at issue;
only its grant row (never the token) is stored.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify, request

from smithers.gateway.auth import mint, principal, require_minting, requires
from smithers.gateway.body import BodySchema, check_query, query_choice, read_body
from smithers.gateway.services import services
from smithers.shared.errors import InvalidInput
from smithers.shared.grants import TTL_LIMIT_S, GrantKind, Scope, check_subject
from smithers.shared.store.grants import JTI

bp = Blueprint("grants", __name__, url_prefix="/v1/grants")

ISSUE = BodySchema(
    "GrantRequest",
    {
        "subject": {
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.@:+-]*$",
        },
        "scopes": {
            "type": "array",
            "minItems": 1,
            "maxItems": 5,
            "items": {"type": "string", "enum": [s.value for s in Scope]},
        },
        "kind": {"type": "string", "enum": [k.value for k in GrantKind]},
        "ttl_s": {
            "type": "integer",
            "minimum": 1,
            "maximum": TTL_LIMIT_S,
            "description": "Lifetime in seconds: at most the kind's maximum (SMITHERS_TOKEN_TTL_*_MAX,"
            f" never above {TTL_LIMIT_S}, 365 days).",
        },
        "note": {"type": "string", "maxLength": 1000},
    },
    required=("subject", "scopes"),
    description="Issue a grant; the response carries its token, shown only once.",
)


@bp.post("")
@requires(Scope.ADMIN)
def issue() -> tuple[Response, int]:
    """Issue a grant and return it with its token."""
    body = read_body(ISSUE)
    require_minting()  # before the row: a public-key-only gateway writes nothing
    svc = services()
    grant = svc.control.issue(
        subject=check_subject(body["subject"]),
        scopes=[str(s) for s in body["scopes"]],
        kind=GrantKind(body.get("kind", GrantKind.PERSON.value)),
        ttl_s=body.get("ttl_s"),
        issuer=svc.config.issuer,
        actor=principal().subject,
        note=body.get("note"),
    )
    return jsonify({"token": mint(grant), "grant": grant.to_json(time.time())}), 201


@bp.get("")
@requires(Scope.ADMIN)
def index() -> Response:
    """Grants, newest first; ``state=active`` leaves out revoked and expired ones."""
    check_query(("subject", "state"))
    state = query_choice("state", ("active", "all"), "all")
    subject = request.args.get("subject")
    found = services().control.grants(
        subject=None if subject is None else check_subject(subject),
        active_only=state == "active",
        limit=services().config.page_max,
    )
    now = time.time()
    return jsonify({"grants": [g.to_json(now) for g in found]})


@bp.post("/<jti>/revoke")
@requires(Scope.ADMIN)
def revoke(jti: str) -> Response:
    """Revoke a grant at once (revoking twice is a no-op)."""
    if not JTI.fullmatch(jti):
        raise InvalidInput(f"jti {jti!r} must match {JTI.pattern}")
    read_body(BodySchema("Empty", {}, optional_body=True))
    grant = services().control.revoke(jti, actor=principal().subject)
    return jsonify({"grant": grant.to_json(time.time())})
