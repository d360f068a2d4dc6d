"""The console: a browser UI under ``/ui/``, served by the gateway from files in the package.

The pages are static (plain ES modules in ``smithers/gateway/console``, no build step)
and use the same REST API and event streams as every other client, with the caller's
own scopes. Every UI response carries a strict Content-Security-Policy: scripts and
styles only from this origin, no inline script or style, no framing.
"""

from __future__ import annotations

from pathlib import Path

from apiflask import APIBlueprint
from flask import Response, redirect, send_from_directory

from smithers.gateway.apidoc import Responses, errors, param, reads, text
from smithers.shared.errors import NotFound

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

bp = APIBlueprint("ui", __name__)


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"  # revalidate: a deploy changes the files
    return response


@bp.get("/ui")
@bp.doc(
    summary="The console (redirect)",
    operation_id="consoleRedirect",
    responses=Responses({308: {"description": "To `/ui/`."}}),
)
def root() -> Response:
    """``/ui`` -> ``/ui/``."""
    return redirect("/ui/", code=308)  # type: ignore[return-value]


@bp.get("/ui/")
@bp.doc(
    summary="The console",
    operation_id="console",
    description="A browser UI on this API (docs/console.md); static files under a strict"
    " Content-Security-Policy. It needs no credential; every call it makes does.",
    responses=Responses({200: text(("text/html",), "The console's page.")}),
)
def index() -> Response:
    """The console's single page (it needs no credential; every API call it makes does)."""
    return asset("index.html")


@bp.get("/ui/<path:name>")
@bp.doc(
    summary="A console file",
    operation_id="consoleFile",
    responses={200: text(("text/javascript", "text/css"), "The file."), **errors(404)},
)
@reads(param("name", "path", {"type": "string"}, "A console file (`app.js`, `app.css`, ...)."))
def asset(name: str) -> Response:
    """One of the console's files; anything else is 404."""
    path = (CONSOLE_DIR / name).resolve()
    if CONSOLE_DIR not in path.parents or path.suffix not in _TYPES or not path.is_file():
        raise NotFound(f"no console file {name!r}")
    response = send_from_directory(CONSOLE_DIR, path.relative_to(CONSOLE_DIR).as_posix())
    response.mimetype = _TYPES[path.suffix]
    return response
