"""Request bodies and query strings: size, strict JSON, query parameters.

The fields of a body are a pydantic model's (:mod:`smithers.gateway.models`); this module
reads the bytes under it. Everything is checked before anything is written.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Request, g, request

from smithers.gateway.services import services
from smithers.shared.errors import InvalidInput, PayloadTooLarge
from smithers.shared.jsonsafe import check_json, check_text, parse_float
from smithers.shared.jsonsafe import parse_int as json_int
from smithers.shared.store.runs import RUN_ID

MAX_DEPTH = 64


def check_run_id(run_id: str) -> str:
    """A run id in a path or body: ``[a-z0-9_-]{1,64}``, the whole of it (no trailing newline)."""
    if not RUN_ID.fullmatch(run_id):
        raise InvalidInput(f"run id {run_id!r} must match {RUN_ID.pattern}")
    return run_id


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidInput(f"duplicate field {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise InvalidInput(f"{name} is not valid JSON")


class GatewayRequest(Request):
    """Flask's request whose JSON body is read strictly (:func:`read_json`): APIFlask's
    ``@bp.input`` validates what this returns against the view's model."""

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """The body as strict JSON; None for an empty body (the model says if that is ``{}``)."""
        return read_json()


def read_json() -> Any:
    """The request's body as strict JSON (413 when over the size limit), or None when it is
    empty (``g.body_empty`` is then set, for the message that a body is required)."""
    limit = services().config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the request body is over {limit} bytes")
    raw = request.get_data(cache=False)
    if len(raw) > limit:
        raise PayloadTooLarge(f"the request body is over {limit} bytes")
    if not raw.strip():
        g.body_empty = True
        return None
    return parse_json(raw)


def parse_json(raw: bytes) -> Any:
    """Strict JSON from a request body: no duplicate key, no NaN, integers within
    ±(2^63-1), nested at most MAX_DEPTH, no NUL or lone surrogate (InvalidInput)."""
    try:
        value = json.loads(
            raw,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_int=json_int,
            parse_float=parse_float,
        )
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError:
        raise InvalidInput("malformed JSON: the body is not UTF-8") from None
    except RecursionError:
        raise InvalidInput(f"malformed JSON: nested deeper than {MAX_DEPTH}") from None
    if _depth(value) > MAX_DEPTH:
        raise InvalidInput(f"the request body is nested deeper than {MAX_DEPTH}")
    check_json(value, "body")
    return value


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def query_int(name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    """An integer query parameter within ``[low, high]``, or ``default`` when absent."""
    raw = request.args.get(name)
    if raw is None:
        return default
    return parse_int(raw, name, low, high)


def parse_int(raw: str, name: str, low: int, high: int | None = None) -> int:
    """An integer from text, within ``[low, high]``; InvalidInput naming ``name``."""
    if not re.fullmatch(r"-?\d{1,19}", raw.strip()):
        raise InvalidInput(f"{name} must be an integer")
    value = int(raw)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise InvalidInput(f"{name} must be {bound}")
    return value


def query_choice(name: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
    """A query parameter that must be one of ``choices``."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if raw not in choices:
        raise InvalidInput(f"{name} must be one of {', '.join(choices)}")
    return raw


def check_query(allowed: tuple[str, ...]) -> None:
    """Refuse unknown or repeated query parameters, or a NUL or lone surrogate in one,
    naming the first one."""
    for key in request.args:
        check_text(key, "a query parameter name")
        for raw in request.args.getlist(key):
            check_text(raw, f"query parameter {key!r}")
        if key not in allowed:
            raise InvalidInput(f"unknown query parameter {key!r}")
        if len(request.args.getlist(key)) > 1:
            raise InvalidInput(f"query parameter {key!r} is given more than once")
