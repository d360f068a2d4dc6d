"""What an approval declares for its approver, and the check of a decision's payload (pure).

A workflow declares, per approval node, what the person deciding sees and may send::

    wf.approval(
        "ship",
        after=[build],
        description="Ship the build to production?",
        show=["build"],                      # upstream outputs shown to the approver
        schema={"type": "object", "properties": {"channel": {"enum": ["beta", "stable"]}},
                "required": ["channel"]},    # the decision payload, checked twice
        timeout_s=86400, default="deny",     # decided by itself when nobody answers
    )

or ``options=("beta", "stable")`` for a payload that is one of a few strings. The
declaration is copied into the approval row when the approval opens, so the console and
the gateway show and check what the run's own revision declared.

The payload schema is a documented subset of JSON Schema, checked here and by the
console in the browser (smithers/gateway/console/schema.js, the same rules):
``type`` (object, string, integer, number, boolean, array, null), ``enum``, ``const``,
``properties``, ``required``, ``additionalProperties`` (a boolean), ``items``,
``minLength``/``maxLength``, ``pattern``, ``minimum``/``maximum``, ``minItems``/``maxItems``,
and ``title``/``description`` (shown in the form). Any other keyword is refused when the
workflow is declared, so a schema never silently checks less than it says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from smithers.shared.errors import InvalidInput, InvalidWorkflow

DefaultDecision = Literal["approve", "deny"]
MAX_DESCRIPTION = 2000
MAX_OPTIONS = 50
MAX_SCHEMA_BYTES = 16_384
MAX_PAYLOAD_BYTES = 16_384
MAX_DEPTH = 8
TIMEOUT_ACTOR = "smithers:timeout"

_KEYWORDS = frozenset(
    {
        "type", "enum", "const", "properties", "required", "additionalProperties", "items",
        "minLength", "maxLength", "pattern", "minimum", "maximum", "minItems", "maxItems",
        "title", "description", "default",
    }
)  # fmt: skip
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


@dataclass(frozen=True)
class ApprovalSpec:
    """What an approval shows its approver and accepts as a decision payload."""

    description: str = ""
    show: tuple[str, ...] = ()
    schema: Mapping[str, Any] | None = None
    options: tuple[str, ...] = ()
    timeout_s: float | None = None
    default: DefaultDecision | None = None

    def to_json(self, now: float) -> dict[str, Any]:
        """The copy stored with a pending approval; ``timeout_at`` is absolute."""
        return {
            "description": self.description,
            "show": list(self.show),
            "schema": dict(self.schema) if self.schema is not None else None,
            "options": list(self.options),
            "default": self.default,
            "timeout_at": None if self.timeout_s is None else now + self.timeout_s,
        }


def make_spec(
    node_id: str,
    *,
    description: str,
    show: Iterable[str],
    schema: Mapping[str, Any] | None,
    options: Iterable[str],
    timeout_s: float | None,
    default: str | None,
) -> ApprovalSpec:
    """Check an approval's declaration; raise InvalidWorkflow naming the node."""
    where = f"approval {node_id!r}"
    opts = tuple(options)
    if len(description) > MAX_DESCRIPTION:
        raise InvalidWorkflow(f"{where}: description is over {MAX_DESCRIPTION} characters")
    if schema is not None and opts:
        raise InvalidWorkflow(f"{where}: declare a schema or options, not both")
    if len(opts) > MAX_OPTIONS or any(not isinstance(o, str) or not o or len(o) > 200 for o in opts):
        raise InvalidWorkflow(f"{where}: options must be at most {MAX_OPTIONS} non-empty strings")
    if len(set(opts)) != len(opts):
        raise InvalidWorkflow(f"{where}: options repeat")
    if schema is not None:
        if len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
            raise InvalidWorkflow(f"{where}: schema is over {MAX_SCHEMA_BYTES} bytes")
        try:
            check_schema(schema)
        except InvalidInput as exc:
            raise InvalidWorkflow(f"{where}: {exc.message}") from None
    if default not in (None, "approve", "deny"):
        raise InvalidWorkflow(f"{where}: default must be 'approve' or 'deny'")
    if (default is None) != (timeout_s is None):
        raise InvalidWorkflow(f"{where}: timeout_s and default go together")
    if timeout_s is not None and timeout_s <= 0:
        raise InvalidWorkflow(f"{where}: timeout_s must be > 0")
    if default == "approve" and (schema is not None or opts):
        raise InvalidWorkflow(f"{where}: a timeout cannot approve with a payload nobody chose")
    return ApprovalSpec(description, tuple(show), schema, opts, timeout_s, default)  # type: ignore[arg-type]


def check_schema(schema: Mapping[str, Any], depth: int = 0) -> None:
    """Refuse a schema that uses a keyword outside the supported subset."""
    if depth > MAX_DEPTH or not isinstance(schema, Mapping):
        raise InvalidInput("schema must be an object nested at most 8 deep")
    unknown = set(schema) - _KEYWORDS
    if unknown:
        raise InvalidInput(f"schema keyword(s) not supported: {', '.join(sorted(unknown))}")
    kind = schema.get("type")
    if kind is not None and kind not in _TYPES:
        raise InvalidInput(f"schema type {kind!r} is not one of {', '.join(_TYPES)}")
    for sub in (schema.get("properties") or {}).values():
        check_schema(sub, depth + 1)
    if "items" in schema:
        check_schema(schema["items"], depth + 1)
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError):
            raise InvalidInput(f"schema pattern {schema['pattern']!r} is not a regular expression") from None


def validate(schema: Mapping[str, Any], value: Any, path: str = "payload") -> None:
    """Check ``value`` against the subset; raise InvalidInput naming the first bad path."""
    kind = schema.get("type")
    if kind is not None and not _is(kind, value):
        raise InvalidInput(f"{path} must be of type {kind}")
    if "const" in schema and value != schema["const"]:
        raise InvalidInput(f"{path} must be {json.dumps(schema['const'])}")
    if "enum" in schema and value not in schema["enum"]:
        raise InvalidInput(f"{path} must be one of {', '.join(json.dumps(v) for v in schema['enum'])}")
    if isinstance(value, str):
        _check_string(schema, value, path)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise InvalidInput(f"{path} must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise InvalidInput(f"{path} must be <= {schema['maximum']}")
    if isinstance(value, dict):
        _check_object(schema, value, path)
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise InvalidInput(f"{path} needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise InvalidInput(f"{path} allows at most {schema['maxItems']} items")
        for i, item in enumerate(value):
            validate(schema.get("items") or {}, item, f"{path}[{i}]")


def _is(kind: str, value: Any) -> bool:
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[kind])


def _check_string(schema: Mapping[str, Any], value: str, path: str) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        raise InvalidInput(f"{path} needs at least {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise InvalidInput(f"{path} allows at most {schema['maxLength']} characters")
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        raise InvalidInput(f"{path} must match {schema['pattern']}")


def _check_object(schema: Mapping[str, Any], value: dict[str, Any], path: str) -> None:
    props: Mapping[str, Any] = schema.get("properties") or {}
    for name in schema.get("required") or ():
        if name not in value:
            raise InvalidInput(f"{path}.{name} is required")
    if schema.get("additionalProperties") is False:
        extra = sorted(set(value) - set(props))
        if extra:
            raise InvalidInput(f"{path}.{extra[0]} is not allowed")
    for name, sub in props.items():
        if name in value:
            validate(sub, value[name], f"{path}.{name}")


def check_payload(spec: Mapping[str, Any] | None, approved: bool, payload: Any) -> None:
    """Check a decision's payload against the approval's stored declaration.

    Approving needs a payload when a schema or options are declared; denying may send
    none. A payload nobody asked for is refused, so nothing unchecked is stored."""
    schema = (spec or {}).get("schema")
    options = (spec or {}).get("options") or []
    if payload is None:
        if approved and (schema is not None or options):
            wanted = "one of the options" if options else "see its schema"
            raise InvalidInput(f"this approval needs a payload: {wanted}")
        return
    if len(json.dumps(payload)) > MAX_PAYLOAD_BYTES:
        raise InvalidInput(f"payload is over {MAX_PAYLOAD_BYTES} bytes")
    if options:
        if payload not in options:
            raise InvalidInput(f"payload must be one of {', '.join(json.dumps(o) for o in options)}")
        return
    if schema is None:
        raise InvalidInput("this approval declares no payload")
    validate(schema, payload)
