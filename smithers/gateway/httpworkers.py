"""gunicorn worker classes whose own error responses are in the gateway's JSON shape.

gunicorn answers a request it cannot parse (a request line or header over its limits,
a malformed line, a bad header) itself, before the app sees it, with an HTML page.
These workers override :meth:`handle_error` (the worker's hook for exactly that): the
answer is ``{"error": {"code", "message"}}`` with an ``X-Request-ID``, and the request
gets an access-log line like every other (smithers.gateway.access).
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from typing import Any

from gunicorn.http import errors as http_errors
from gunicorn.workers.ggevent import GeventWorker
from gunicorn.workers.gthread import ThreadWorker

log = logging.getLogger("smithers.gateway.access")
errors_log = logging.getLogger("smithers.gateway")

DRAIN_S = 1.0
DRAIN_BYTES = 1 << 20
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}


def classify(exc: BaseException) -> tuple[int, str, str]:
    """``(status, code, message)`` for an error gunicorn met while reading a request."""
    if isinstance(exc, http_errors.LimitRequestLine):
        return 414, "request_too_large", "the request line is too long"
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return 431, "request_too_large", "the request headers are too large or too many"
    if isinstance(exc, http_errors.UnsupportedTransferCoding):
        return 501, "not_implemented", "unsupported transfer coding"
    if isinstance(exc, http_errors.ForbiddenProxyRequest):
        return 403, "forbidden", "request forbidden"
    if isinstance(exc, http_errors.ParseException):
        return 400, "invalid_request", f"malformed HTTP request ({type(exc).__name__})"
    return 500, "internal", "internal error"


def error_response(status: int, code: str, message: str, request_id: str) -> bytes:
    """The raw HTTP/1.1 response: JSON body, request id, connection closed."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"X-Request-ID: {request_id}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class JsonErrors:
    """Mixin for a gunicorn worker: JSON errors and an access line for unparsed requests."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Answer an unparsable request (or a crash outside the app) in the JSON shape."""
        status, code, message = classify(exc)
        rid = uuid.uuid4().hex
        if status >= 500:
            errors_log.error("request %s: %s", rid, exc, exc_info=exc)
        method = str(getattr(req, "method", None) or "-")[:16]
        path = str(getattr(req, "path", None) or "-")[:256]
        fields = {"request_id": rid, "subject": None, "method": method, "path": path, "status": status}
        log.info("%s %s %s", method, path, status, extra={"fields": {**fields, "bytes": 0}})
        try:
            client.sendall(error_response(status, code, message, rid))
            _drain(client)
        except OSError:
            errors_log.debug("could not send the error response of request %s", rid)


def _drain(client: Any) -> None:
    """Half-close, then read what the client is still sending (a bounded amount, briefly):
    closing a socket with unread input sends a reset, which can destroy the answer before
    the client reads it."""
    client.shutdown(socket.SHUT_WR)
    client.settimeout(DRAIN_S)
    left = DRAIN_BYTES
    while left > 0:
        chunk = client.recv(min(left, 65536))
        if not chunk:
            return
        left -= len(chunk)


class JsonThreadWorker(JsonErrors, ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker with :class:`JsonErrors`."""


class JsonGeventWorker(JsonErrors, GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker with :class:`JsonErrors`."""


WORKER_CLASSES = {
    "gevent": f"{__name__}.JsonGeventWorker",
    "gthread": f"{__name__}.JsonThreadWorker",
}
