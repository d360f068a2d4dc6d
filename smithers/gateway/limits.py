"""Limits the gateway enforces itself: failed authentications per source, and the size
of the request line and headers.

:class:`FailureLimiter` counts failed authentications (401) per source address in a
fixed window; once a source has used its allowance, every request it makes that needs
a token is answered 429 with ``Retry-After`` before the token is looked at, until the
window ends. The counts are per gateway worker process and bounded in memory.

:class:`RequestLimits` is WSGI middleware: a request line, a header or the headers
over their bound get 414 or 431 in the JSON error shape (gunicorn's own limits are set
above these, see smithers.gateway.server). It also reads the ``Authorization`` scheme
case-insensitively (``bearer`` is ``Bearer``, RFC 9110 section 11.1).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

MAX_SOURCES = 10_000
MAX_REQUEST_LINE = 8190  # method, path and query string
MAX_HEADER = 8190  # one header's name and value
MAX_HEADERS_TOTAL = 32_768
MAX_HEADER_COUNT = 100


class FailureLimiter:
    """At most ``limit`` failed authentications per source per ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._counts: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def retry_after(self, source: str, now: float | None = None) -> int | None:
        """Seconds until ``source`` may try again, or None when it may now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            start, failures = self._counts.get(source, (now, 0))
        if now - start >= self.window_s or failures < self.limit:
            return None
        return max(1, math.ceil(start + self.window_s - now))

    def failed(self, source: str, now: float | None = None) -> None:
        """Count one failed authentication of ``source``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            start, failures = self._counts.get(source, (now, 0))
            if now - start >= self.window_s:
                start, failures = now, 0
            self._counts[source] = (start, failures + 1)
            if len(self._counts) > MAX_SOURCES:
                self._prune(now)

    def _prune(self, now: float) -> None:
        for key, (start, _) in list(self._counts.items()):
            if now - start >= self.window_s:
                del self._counts[key]
        while len(self._counts) > MAX_SOURCES:  # every window still open: forget the oldest
            del self._counts[next(iter(self._counts))]


def json_error(
    status: int, code: str, message: str, request_id: str
) -> tuple[str, list[tuple[str, str]], bytes]:
    """A complete JSON error response (status line, headers, body) outside Flask."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    reason = {400: "Bad Request", 414: "URI Too Long", 431: "Request Header Fields Too Large"}.get(
        status, "Error"
    )
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Request-ID", request_id),
    ]
    return f"{status} {reason}", headers, body


def oversize(environ: WSGIEnvironment) -> tuple[int, str] | None:
    """``(status, message)`` when the request line or headers are over their bounds."""
    line = len(str(environ.get("REQUEST_METHOD", ""))) + len(str(environ.get("RAW_URI") or ""))
    if not environ.get("RAW_URI"):
        line += len(str(environ.get("PATH_INFO", ""))) + len(str(environ.get("QUERY_STRING", ""))) + 1
    if line > MAX_REQUEST_LINE:
        return 414, f"the request line is over {MAX_REQUEST_LINE} bytes"
    total = count = 0
    for key, value in environ.items():
        if not key.startswith("HTTP_"):
            continue
        size = len(key) + len(str(value))
        if size > MAX_HEADER:
            return 431, f"header {key[5:].replace('_', '-').title()!r} is over {MAX_HEADER} bytes"
        total += size
        count += 1
    if total > MAX_HEADERS_TOTAL or count > MAX_HEADER_COUNT:
        return 431, f"the headers are over {MAX_HEADERS_TOTAL} bytes or {MAX_HEADER_COUNT} fields"
    return None


class RequestLimits:
    """WSGI middleware (inside the access log): size bounds, and the auth scheme's case."""

    def __init__(self, app: WSGIApplication, request_id_key: str) -> None:
        self.app = app
        self.request_id_key = request_id_key

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        problem = oversize(environ)
        if problem is not None:
            status, headers, body = json_error(
                problem[0], "request_too_large", problem[1], str(environ.get(self.request_id_key, "-"))
            )
            headers = [h for h in headers if h[0] != "X-Request-ID"]  # the access log adds it
            start_response(status, headers)
            return [body]
        auth = environ.get("HTTP_AUTHORIZATION")
        if isinstance(auth, str):
            scheme, _, rest = auth.strip().partition(" ")
            if scheme.lower() == "bearer" and scheme != "Bearer":
                environ["HTTP_AUTHORIZATION"] = "Bearer " + rest.strip()
        return self.app(environ, start_response)
