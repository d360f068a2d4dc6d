"""CORS for browser consoles on other origins: exact origins only, off unless configured.

``SMITHERS_CORS_ORIGINS`` lists the origins (``https://console.example.com``, comma
separated) whose pages may call the API. With none configured the gateway sends no CORS
header at all, so a browser keeps every other origin out. An allowed origin is echoed
back (never ``*``); the API authenticates with a bearer ``Authorization`` header, not
cookies, so credentials are never allowed. Every response says ``Vary: Origin`` so a
cache never hands one origin's answer to another.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from flask import Flask, Response, request

from smithers.shared.errors import InvalidInput

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID, X-Request-ID"
EXPOSE_HEADERS = "X-Request-ID, Retry-After, Location"
MAX_AGE_S = 600


def parse_origins(raw: str) -> tuple[str, ...]:
    """Exact origins (``scheme://host[:port]``) from a comma-separated list; refuses
    ``*``, paths and anything that is not an http(s) origin."""
    origins: list[str] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        parts = urlsplit(item)
        if item == "*" or parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInput(f"SMITHERS_CORS_ORIGINS: {item!r} is not an origin like https://host[:port]")
        if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
            raise InvalidInput(f"SMITHERS_CORS_ORIGINS: {item!r} must be an origin, without path or user")
        origins.append(f"{parts.scheme}://{parts.netloc}".lower())
    return tuple(dict.fromkeys(origins))


def install_cors(app: Flask, origins: Iterable[str]) -> None:
    """Answer preflights and add CORS headers for ``origins``; nothing when empty."""
    allowed = frozenset(origins)
    if not allowed:
        return

    def preflight() -> Response | None:
        origin = request.headers.get("Origin")
        if (
            request.method != "OPTIONS"
            or origin not in allowed
            or "Access-Control-Request-Method" not in request.headers
        ):
            return None  # a disallowed origin gets Flask's plain answer, without CORS headers
        response = Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = str(MAX_AGE_S)
        return response

    def headers(response: Response) -> Response:
        response.vary.add("Origin")
        origin = request.headers.get("Origin")
        if origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        return response

    # First in line: a preflight carries no token, so it must be answered before any view.
    app.before_request_funcs.setdefault(None, []).insert(0, preflight)
    app.after_request(headers)
