"""/v1/grants (admin): issue, list and revoke bearer grants over the API.

``smithers token`` does the same from a shell. The token is returned once, at issue;
only its grant row (never the token) is stored.
"""

from __future__ import annotations

import time

from apiflask import APIBlueprint
from flask import request

from smithers.gateway.apidoc import AUTH, errors, param, reads
from smithers.gateway.auth import mint, principal, require_minting, requires
from smithers.gateway.body import check_query, query_choice
from smithers.gateway.models import Empty, GrantRequest
from smithers.gateway.services import services
from smithers.shared.api import Grant, GrantList, IssuedGrant, RevokedGrant
from smithers.shared.errors import InvalidInput
from smithers.shared.grants import GrantKind, Scope, check_subject
from smithers.shared.store.grants import JTI

bp = APIBlueprint("grants", __name__, url_prefix="/v1/grants")


@bp.post("")
@requires(Scope.ADMIN)
@bp.input(GrantRequest, arg_name="body")
@bp.output(IssuedGrant, status_code=201, description="The grant and its token (shown only once).")
@bp.doc(summary="Issue a grant", operation_id="issueGrant", responses=errors(*AUTH, 409, 413, 503))
def issue(body: GrantRequest) -> IssuedGrant:
    """Issue a grant and return it with its token."""
    require_minting()  # before the row: a public-key-only gateway writes nothing
    svc = services()
    grant = svc.control.issue(
        subject=check_subject(body.subject),
        scopes=list(body.scopes),
        kind=GrantKind(body.kind or GrantKind.PERSON),
        ttl_s=body.ttl_s,
        issuer=svc.config.issuer,
        actor=principal().subject,
        note=body.note,
    )
    return IssuedGrant(token=mint(grant), grant=Grant.model_validate(grant.to_json(time.time())))


@bp.get("")
@requires(Scope.ADMIN)
@bp.output(GrantList, description="Grants, newest first.")
@bp.doc(summary="List grants", operation_id="listGrants", responses=errors(*AUTH, 503))
@reads(
    param(
        "subject",
        "query",
        {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,127}$"},
        "Only this subject's.",
    ),
    param("state", "query", {"type": "string", "enum": ["active", "all"]}, "Default all."),
)
def index() -> GrantList:
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
    return GrantList(grants=tuple(Grant.model_validate(g.to_json(now)) for g in found))


@bp.post("/<jti>/revoke")
@requires(Scope.ADMIN)
@bp.input(Empty, arg_name="body")
@bp.output(RevokedGrant, description="Revoked (again is a no-op).")
@bp.doc(summary="Revoke a grant", operation_id="revokeGrant", responses=errors(*AUTH, 404, 413, 503))
@reads(param("jti", "path", {"type": "string", "pattern": JTI.pattern}, "The grant."))
def revoke(jti: str, body: Empty) -> RevokedGrant:
    """Revoke a grant at once (revoking twice is a no-op)."""
    if not JTI.fullmatch(jti):
        raise InvalidInput(f"jti {jti!r} must match {JTI.pattern}")
    grant = services().control.revoke(jti, actor=principal().subject)
    return RevokedGrant(grant=Grant.model_validate(grant.to_json(time.time())))
