"""What a view declares its OpenAPI operation with, next to APIFlask's decorators.

A view says its summary, description, operation id and responses with ``@bp.doc``, its
body with ``@bp.input`` and its main response with ``@bp.output``; its scope is the one
``@requires`` demands. This module holds the rest: the error responses and their texts,
the parameters a view reads itself (with its own 400 messages, so not through
``@bp.input``), and the event streams' response.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from smithers.shared.store.runs import RUN_ID
from smithers.shared.workflow import NODE_ID

JSON = "application/json"
Schema = dict[str, Any]
Responses = dict[int | str, Schema]  # what @bp.doc(responses=...) takes
V = TypeVar("V", bound=Callable[..., Any])
READS_ATTR = "openapi_reads"  # on a view: (parameters, body model) for the document
AUTH = (400, 401, 403, 429)  # 429: too many failed authentications from the address

ERROR_TEXT = {
    400: "Bad input: malformed JSON, an unknown or mistyped field (named), a credential-like"
    " input key, a bad parameter, a value strict JSON cannot hold (a non-finite number, an"
    " integer past ±(2^63-1), a NUL or a lone surrogate in a string, key or query parameter).",
    401: "No bearer token, or one that is expired, revoked, tampered with or unknown.",
    403: "The token lacks the scope this operation needs (or is not the approval's owner).",
    404: "No such run, approval, workflow, signal name or grant.",
    409: "The request contradicts the current state (or this gateway holds no key to sign with).",
    413: "The request body is over the configured size.",
    429: "Too many failed authentications from this address (`Retry-After` says when to retry),"
    " or, for time travel, too many calls from this caller in the last minute.",
    503: "The store is unavailable.",
}


def schema_ref(model: type[BaseModel] | str) -> Schema:
    """A reference to a model's component schema."""
    name = model if isinstance(model, str) else model.__name__
    return {"$ref": f"#/components/schemas/{name}"}


def reply(model: type[BaseModel], description: str) -> Schema:
    """A JSON response with a model's body (beside the one ``@bp.output`` declares)."""
    return {"description": description, "content": {JSON: {"schema": schema_ref(model)}}}


def errors(*codes: int, texts: Mapping[int, str] = ERROR_TEXT) -> Responses:
    """Error responses: each an ``Error`` body, described by ``texts``."""
    return {c: {"description": texts[c], "content": {JSON: {"schema": schema_ref("Error")}}} for c in codes}


def param(name: str, where: str, schema: Schema, description: str, required: bool = False) -> Schema:
    """A parameter object (a path parameter is always required)."""
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


def reads(*parameters: Schema, body: type[BaseModel] | None = None) -> Callable[[V], V]:
    """Document what a view reads and checks itself: its path, query and header parameters
    (every path parameter must be here), and a body it parses after a signature check."""

    def mark(view: V) -> V:
        setattr(view, READS_ATTR, (parameters, body))
        return view

    return mark


RUN_ID_PARAM = param("run_id", "path", {"type": "string", "pattern": RUN_ID.pattern}, "The run id.")
NODE_ID_PARAM = param("node_id", "path", {"type": "string", "pattern": NODE_ID.pattern}, "The approval node.")
CURSOR = {"type": "integer", "minimum": 0, "maximum": 2**62}
PAGE = {"type": "integer", "minimum": 1, "maximum": 200}
LAST_EVENT_ID = param(
    "Last-Event-ID",
    "header",
    {"type": "string", "pattern": r"^(\d{1,19})?$"},
    "Resume after this id (wins over the query); empty means no resume point.",
)
SSE: Schema = {
    "description": "A text/event-stream of events; each `data:` is an Event, `id:` its cursor.",
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "description": "One event of the stream: `data` is an Event as JSON; the last one has"
                " `event: end` and data {reason, last_id}.",
                "properties": {
                    "id": {"type": "string", "pattern": r"^\d+$"},
                    "event": {"type": "string"},
                    "data": {"type": "string"},
                    "retry": {"type": "integer"},
                },
            }
        }
    },
}


def text(media_types: tuple[str, ...], description: str) -> Schema:
    """A response that is text of one of ``media_types``."""
    return {"description": description, "content": {t: {"schema": {"type": "string"}} for t in media_types}}
