"""Console sessions as the API returns them (``/v1/session``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from smithers.shared.api.model import Resource


class Session(Resource):
    """Who the caller is: subject, scopes, expiry; the CSRF token of a session."""

    subject: str
    scopes: tuple[str, ...]
    expires_at: float | None
    csrf_token: str | None = Field(description="Send as `X-CSRF-Token` on unsafe session requests.")
    via: Literal["session", "bearer"]


class SignedOut(Resource):
    """A session's end: its cookie was cleared."""

    signed_out: bool
