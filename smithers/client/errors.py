"""Gateway error bodies as the errors of :mod:`smithers.shared.errors`.

A ``{"error": {"code", "message"}}`` answer becomes the exception of its family (404:
:class:`~smithers.shared.errors.NotFound`, 403: :class:`~smithers.shared.errors.Forbidden`,
...), carrying the gateway's own ``code``, ``message``, ``details`` and HTTP status, so a
caller handles a remote refusal as it handles a local one. A gateway that cannot be
reached at all is :class:`GatewayUnavailable`.
"""

from __future__ import annotations

import json
from typing import Any

from smithers.shared.errors import (
    BrokerUnavailable,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SmithersError,
    StoreUnavailable,
    Unauthorized,
)

_FAMILIES: dict[int, type[SmithersError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    503: StoreUnavailable,
}


class GatewayUnavailable(SmithersError):
    """The gateway did not answer (refused connection, reset, timeout) or answered 5xx."""

    code = "gateway_unavailable"
    http_status = 503


class ApiError(SmithersError):
    """An answer of a status no family covers (405, 415, 422, 500, ...)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.http_status = status


def error_from(status: int, body: bytes, retry_after: str | None = None) -> SmithersError:
    """The exception for a non-2xx answer of ``status`` with ``body``."""
    code, message, details = _parse(status, body)
    exc: SmithersError
    if status == 429:
        exc = RateLimited(message, int(retry_after) if retry_after and retry_after.isdigit() else 60)
    elif status == 503 and code == BrokerUnavailable.code:
        exc = BrokerUnavailable(message)
    elif status in _FAMILIES:
        exc = _FAMILIES[status](message)
    elif status >= 500:
        exc = GatewayUnavailable(message)
    else:
        exc = ApiError(message, status)
    exc.code = code  # the gateway's own (unknown_workflow, revision_conflict, ...)
    exc.details = details
    exc.http_status = status
    return exc


def _parse(status: int, body: bytes) -> tuple[str, str, dict[str, Any] | None]:
    """``(code, message, details)`` of an error body; a body that is not the error shape
    (a proxy's HTML page) still gives a message naming the status."""
    try:
        data = json.loads(body)
        error = data["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, TypeError, KeyError):
        return f"http_{status}", f"the gateway answered HTTP {status}", None
    details = error.get("details")
    return code, message, details if isinstance(details, dict) else None
