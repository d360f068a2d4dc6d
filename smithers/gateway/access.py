"""The access log: one structured line per request, written when the response ends.

Fields: time, request id, subject, method, path, status, duration (ms) and bytes sent.
Never a header, a query string or a body; the path goes through the redactor (a token
pasted into a URL is masked). The line is written when the response is closed, so an
event stream's line carries its whole duration. Also counts requests for /metrics.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from smithers.gateway.auth import SUBJECT_KEY
from smithers.gateway.metrics import Metrics
from smithers.shared.redaction import redact_text

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("smithers.gateway.access")

REQUEST_ID_KEY = "smithers.request_id"
ROUTE_KEY = "smithers.route"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_PATH = 256


def request_id(environ: WSGIEnvironment) -> str:
    """The caller's X-Request-ID if it is safe to echo, else a fresh one."""
    given = environ.get("HTTP_X_REQUEST_ID", "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class AccessLog:
    """WSGI middleware around the Flask app."""

    def __init__(self, app: WSGIApplication, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        rid = request_id(environ)
        environ[REQUEST_ID_KEY] = rid
        status: list[str] = []

        def start(
            code: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None, /
        ) -> Callable[[bytes], object]:
            status[:] = [code]
            headers.append(("X-Request-ID", rid))
            return start_response(code, headers, exc_info)

        body = self.app(environ, start)
        return _Logged(body, self, environ, status, started)

    def line(self, environ: WSGIEnvironment, status: str, started: float, sent: int) -> None:
        """Write the access line and count the request."""
        seconds = time.perf_counter() - started
        code = int(status.split(" ", 1)[0]) if status else 500
        method = str(environ.get("REQUEST_METHOD", "-"))[:16]
        route = str(environ.get(ROUTE_KEY, "unmatched"))
        path = redact_text(str(environ.get("PATH_INFO", "")))[:MAX_PATH]
        fields = {
            "request_id": environ.get(REQUEST_ID_KEY),
            "subject": environ.get(SUBJECT_KEY),
            "method": method,
            "path": path,
            "status": code,
            "duration_ms": round(seconds * 1000, 3),
            "bytes": sent,
        }
        log.info("%s %s %s", method, path, code, extra={"fields": fields})
        self.metrics.requests.labels(method, route, str(code)).inc()
        if not route.endswith("events"):
            self.metrics.latency.labels(route).observe(seconds)


class _Logged:
    """The response iterable, logging once it is closed (or fails)."""

    def __init__(
        self,
        body: Iterable[bytes],
        owner: AccessLog,
        environ: WSGIEnvironment,
        status: list[str],
        started: float,
    ) -> None:
        self.body = body
        self.owner = owner
        self.environ = environ
        self.status = status
        self.started = started
        self.sent = 0
        self.done = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.body:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        """Close the inner response, then log."""
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            if not self.done:
                self.done = True
                self.owner.line(self.environ, self.status[0] if self.status else "", self.started, self.sent)
