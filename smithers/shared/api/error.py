"""The error bodies: every 4xx and 5xx, and the 503 of the readiness probe."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from smithers.shared.api.model import Resource


class ErrorDetail(Resource):
    """What went wrong: a stable code, and a message that names the field or the state."""

    code: str
    message: str
    details: dict[str, Any] | None = Field(
        None, description="More, where the error has it (a migration's `conflicts`)."
    )


class Error(Resource):
    """The body of every error response: `{"error": {"code": ..., "message": ...}}`."""

    error: ErrorDetail


class NotReady(Resource):
    """The readiness probe's 503: the error, and each check's state."""

    error: ErrorDetail
    checks: dict[str, str]
