"""Grants as the API returns them (``/v1/grants``): never a token, but once, at issue."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from smithers.shared.api.model import Resource


class Grant(Resource):
    """A bearer grant (never its token)."""

    jti: str
    subject: str
    scopes: tuple[str, ...]
    kind: str
    issuer: str
    issued_at: float
    expires_at: float
    revoked_at: float | None
    revoked_by: str | None
    note: str | None
    state: Literal["active", "expired", "revoked"]


class GrantList(Resource):
    """Grants, newest first."""

    grants: tuple[Grant, ...]


class IssuedGrant(Resource):
    """A grant just issued, with its token (shown this once)."""

    token: str = Field(description="The bearer token: shown only in this response.")
    grant: Grant


class RevokedGrant(Resource):
    """A grant as revoking it left it."""

    grant: Grant
