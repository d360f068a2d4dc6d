"""Request bodies and query strings: size, JSON, known fields, types.

Each body is declared once as a :class:`BodySchema` (a small subset of JSON Schema);
the views validate with it and the OpenAPI document publishes it, so the two cannot
drift. Everything is checked before anything is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import request

from smithers.gateway.services import services
from smithers.shared.errors import InvalidInput, PayloadTooLarge
from smithers.shared.jsonsafe import check_json, check_text, parse_float
from smithers.shared.jsonsafe import parse_int as json_int
from smithers.shared.store.runs import RUN_ID

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "object": (dict,),
    "array": (list,),
}
MAX_DEPTH = 64


@dataclass(frozen=True)
class BodySchema:
    """An object body: its properties (JSON Schema subset), the required ones, and
    whether an empty body stands for ``{}``."""

    name: str
    properties: Mapping[str, Mapping[str, Any]]
    required: tuple[str, ...] = ()
    optional_body: bool = False
    description: str = ""
    examples: Mapping[str, Any] = field(default_factory=dict)

    def openapi(self) -> dict[str, Any]:
        """This schema as an OpenAPI 3.0 schema object."""
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: dict(v) for k, v in self.properties.items()},
        }
        if self.required:
            schema["required"] = list(self.required)
        if self.description:
            schema["description"] = self.description
        return schema

    def validate(self, value: Any) -> dict[str, Any]:
        """``value`` if it is an object of known, well-typed fields; else InvalidInput."""
        if not isinstance(value, dict):
            raise InvalidInput(f"the request body must be a JSON object, not {_kind(value)}")
        for key in value:
            if key not in self.properties:
                raise InvalidInput(f"unknown field {key!r} (known: {', '.join(self.properties)})")
        for key in self.required:
            if key not in value:
                raise InvalidInput(f"missing field {key!r}")
        for key, item in value.items():
            _check_field(key, item, self.properties[key])
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for name, types in _TYPES.items():
        if isinstance(value, types):
            return name
    return "number" if isinstance(value, float) else type(value).__name__


def _check_field(name: str, value: Any, spec: Mapping[str, Any]) -> None:  # noqa: C901
    if value is None:
        if spec.get("nullable"):
            return
        raise InvalidInput(f"field {name!r} must not be null")
    wanted = str(spec.get("type", ""))
    types = _TYPES.get(wanted)
    if types is not None and (
        not isinstance(value, types) or (wanted == "integer" and isinstance(value, bool))
    ):
        raise InvalidInput(f"field {name!r} must be {wanted}, not {_kind(value)}")
    if isinstance(value, str):
        if len(value) < int(spec.get("minLength", 0)):
            raise InvalidInput(f"field {name!r} must not be empty")
        if "maxLength" in spec and len(value) > int(spec["maxLength"]):
            raise InvalidInput(f"field {name!r} is longer than {spec['maxLength']} characters")
        if "pattern" in spec and not re.search(_ecma(str(spec["pattern"])), value):
            raise InvalidInput(f"field {name!r} must match {spec['pattern']}")
    if isinstance(value, int) and not isinstance(value, bool):
        if "minimum" in spec and value < int(spec["minimum"]):
            raise InvalidInput(f"field {name!r} must be >= {spec['minimum']}")
        if "maximum" in spec and value > int(spec["maximum"]):
            raise InvalidInput(f"field {name!r} must be <= {spec['maximum']}")
    if "enum" in spec and value not in spec["enum"]:
        raise InvalidInput(f"field {name!r} must be one of {', '.join(map(str, spec['enum']))}")
    if isinstance(value, list):
        if len(value) < int(spec.get("minItems", 0)):
            raise InvalidInput(f"field {name!r} needs at least {spec['minItems']} item(s)")
        if "maxItems" in spec and len(value) > int(spec["maxItems"]):
            raise InvalidInput(f"field {name!r} has more than {spec['maxItems']} items")
        items = spec.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(value):
                _check_field(f"{name}[{i}]", item, items)


def _ecma(pattern: str) -> str:
    """JSON Schema's ``$`` ends the text; Python's also matches before a final newline."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern


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


def read_body(schema: BodySchema) -> dict[str, Any]:
    """The request's JSON body checked against ``schema`` (413 when over the size limit)."""
    limit = services().config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the request body is over {limit} bytes")
    raw = request.get_data(cache=False)
    if len(raw) > limit:
        raise PayloadTooLarge(f"the request body is over {limit} bytes")
    if not raw.strip():
        if schema.optional_body:
            return {}
        raise InvalidInput("a JSON object body is required")
    return schema.validate(parse_json(raw))


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
