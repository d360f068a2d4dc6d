"""Request bodies as pydantic models.

A view declares its body with APIFlask's ``@bp.input(Model, arg_name="body")``: APIFlask
validates the request with the model and publishes the model in the OpenAPI document, so
the two cannot drift. The models are strict (no coercion: ``"4"`` is not an integer) and
refuse unknown fields; :func:`invalid_input` turns pydantic's errors into the gateway's
400 messages, which name the field.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.json_schema import DEFAULT_REF_TEMPLATE, GenerateJsonSchema, JsonSchemaMode
from pydantic_core import ErrorDetails, PydanticCustomError

from smithers.shared.api.model import OpenAPI30
from smithers.shared.errors import InvalidInput
from smithers.shared.grants import TTL_LIMIT_S
from smithers.shared.store.runs import RUN_ID
from smithers.shared.store.sandboxes import MAX_NOTE as MAX_REVIEW_NOTE
from smithers.shared.store.signals import SIGNAL_ID
from smithers.shared.webhook import EVENT_TYPE
from smithers.shared.workflow import NODE_ID, WORKFLOW_NAME

MAX_NOTE = 4000  # an approval decision's note
SUBJECT = r"^[A-Za-z0-9][A-Za-z0-9_.@:+-]*$"
REVISION = r"^[0-9a-f]{8,64}$"


class Body(BaseModel):
    """A request body: a JSON object of known, well-typed fields. A field typed ``X | None``
    may be left out; it may be ``null`` only when it is named in ``nullable``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    optional_body: ClassVar[bool] = False  # True: an empty request body stands for {}
    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _no_null(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if value is None and key in cls._aliases() and key not in cls.nullable:
                    raise PydanticCustomError(
                        "not_null", "field {field} must not be null", {"field": repr(key)}
                    )
        return data

    @classmethod
    def _aliases(cls) -> list[str]:
        return [f.alias or name for name, f in cls.model_fields.items()]

    @classmethod
    def model_json_schema(
        cls,
        by_alias: bool | None = True,
        ref_template: str = DEFAULT_REF_TEMPLATE,
        schema_generator: type[GenerateJsonSchema] = OpenAPI30,
        mode: JsonSchemaMode = "validation",
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The OpenAPI 3.0 schema of this body (APIFlask calls this for the document)."""
        schema = super().model_json_schema(by_alias, ref_template, OpenAPI30, mode, **kwargs)
        for name, prop in schema.get("properties", {}).items():
            if name not in cls.nullable:
                prop.pop("nullable", None)
                if prop.get("default", ...) is None:
                    del prop["default"]
            elif prop == {"default": None} or "type" not in prop:
                prop["nullable"] = True
        return schema


class LaunchRequest(Body):
    """Launch a run of a registered workflow."""

    workflow: str = Field(min_length=1, max_length=128, pattern=WORKFLOW_NAME.pattern)
    input: dict[str, Any] = Field(
        default_factory=dict,
        description="The run input: a credential under a credential-like key, or a URL with a"
        " password, is refused unless the workflow declares the key in `public_inputs`.",
    )
    run_id: str | None = Field(
        None,
        pattern=RUN_ID.pattern,
        description="Choose the run id: launching it again with the same input returns the same run.",
    )
    priority: int | None = Field(
        None,
        ge=0,
        le=9,
        description="0..9, higher first (default 0): the order of its steps' messages on"
        " the broker and its place in line at a concurrency limit.",
    )
    budget: dict[str, Any] | None = Field(
        None,
        description="Spending ceilings for this run, overriding the workflow's by name:"
        " `tokens` (in + out, an integer) and `cost` (a number); null removes that ceiling."
        " Once the run's spending reaches one, the next step waits for an approval that raises it.",
    )


class MigrateRequest(Body):
    """Move the run to another revision of its workflow (every node that already ran must be
    in it with the same kind)."""

    to: str = Field(
        min_length=8,
        max_length=64,
        pattern=REVISION,
        description="A module revision of the run's workflow: the full hash or a prefix (8+ hex digits).",
    )
    note: str | None = Field(None, max_length=1000, description="Why (kept in the audit row).")


class RerunRequest(Body):
    """Optional: the id of the new run (makes the rerun idempotent)."""

    optional_body: ClassVar[bool] = True
    run_id: str | None = Field(None, pattern=RUN_ID.pattern, description="Choose the new run's id.")


class Empty(Body):
    """No fields: an empty object or no body."""

    optional_body: ClassVar[bool] = True


class MigrateWorkflowRequest(Body):
    """Migrate every unfinished or failed run of the workflow from one revision to another."""

    source: str = Field(
        alias="from",
        min_length=8,
        max_length=64,
        pattern=REVISION,
        description="The revision whose unfinished runs move (hash or 8+ hex prefix).",
    )
    to: str = Field(min_length=8, max_length=64, pattern=REVISION, description="The revision they move to.")
    note: str | None = Field(None, max_length=1000, description="Why (kept in each audit row).")


class DecisionRequest(Body):
    """Approve or deny a pending approval, with a note."""

    nullable: ClassVar[frozenset[str]] = frozenset({"note", "payload", "iteration"})
    approved: bool = Field(description="true approves, false denies.")
    note: str | None = Field(None, max_length=MAX_NOTE)
    payload: Any = Field(
        None,
        description="The decision's payload: it must match the approval's declared"
        " `spec.schema`, or be one of `spec.options`.",
    )
    iteration: int | None = Field(
        None, ge=0, le=1_000_000, description="Which iteration (inside a loop); by default the pending one."
    )


class SignalRequest(Body):
    """A signal for the run's signal node waiting for this name."""

    optional_body: ClassVar[bool] = True
    nullable: ClassVar[frozenset[str]] = frozenset({"payload"})
    signal_id: str | None = Field(
        None,
        pattern=SIGNAL_ID.pattern,
        description="Chosen by the client to make the delivery idempotent; generated when absent.",
    )
    payload: Any = Field(
        None,
        description="Any JSON value, checked against the signal node's declared schema;"
        " bounded by the run input limit and redacted before it is stored.",
    )


class GrantRequest(Body):
    """Issue a grant; the response carries its token, shown only once."""

    # the values of Scope and GrantKind, spelled out for the type checker (a unit test
    # keeps them equal): strict validation takes a string for a Literal, not for an Enum
    subject: str = Field(min_length=1, max_length=128, pattern=SUBJECT)
    scopes: list[Literal["run:read", "run:write", "approval:read", "approval:submit", "admin"]] = Field(
        min_length=1, max_length=5
    )
    kind: Literal["person", "automation"] | None = None
    ttl_s: int | None = Field(
        None,
        ge=1,
        le=TTL_LIMIT_S,
        description="Lifetime in seconds: at most the kind's maximum (SMITHERS_TOKEN_TTL_*_MAX,"
        f" never above {TTL_LIMIT_S}, 365 days).",
    )
    note: str | None = Field(None, max_length=1000)


class ReviewRequest(Body):
    """Accept or reject the patches a sandbox step proposed, with a note."""

    nullable: ClassVar[frozenset[str]] = frozenset({"note"})
    accept: bool = Field(description="true applies the patches, false rejects them.")
    note: str | None = Field(None, max_length=MAX_REVIEW_NOTE)


_NODE_DOC = "Rewind to before this node."
_CONFIRM_DOC = "Must be true: time travel changes history."


class RewindRequest(Body):
    """Reopen a node and everything downstream of it; the run resumes from there."""

    node_id: str = Field(pattern=NODE_ID.pattern, description=_NODE_DOC)
    confirm: Literal[True] = Field(description=_CONFIRM_DOC)
    item: int | None = Field(
        None,
        ge=0,
        le=1_000_000,
        description="With a map node: reopen only this item (by index), the map and what follows it.",
    )


class ReplayRequest(Body):
    """A new run keeping this run's finished work upstream of the node (same input)."""

    node_id: str = Field(pattern=NODE_ID.pattern, description=_NODE_DOC)
    confirm: Literal[True] = Field(description=_CONFIRM_DOC)
    run_id: str | None = Field(None, pattern=RUN_ID.pattern, description="The new run's id.")


class ForkRequest(Body):
    """Like replay, with new input for the node and everything after it."""

    node_id: str = Field(pattern=NODE_ID.pattern, description=_NODE_DOC)
    confirm: Literal[True] = Field(description=_CONFIRM_DOC)
    run_id: str | None = Field(None, pattern=RUN_ID.pattern, description="The new run's id.")
    input: dict[str, Any] = Field(description="The new run's input.")


class WebhookEvent(Body):
    """A Standard Webhooks payload; fields not named here are ignored and never stored."""

    # Only published: the webhook reads its body after the signature check, with
    # smithers.shared.webhook.parse (whose 400s name the field), never with this model.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)
    type: str = Field(pattern=EVENT_TYPE.pattern)
    timestamp: str | None = Field(None, description="When the sender made it (informative).")
    data: dict[str, Any] | None = Field(
        None,
        description="What the type needs: `grant_id`, `subject`, `scopes`, `expires_at`"
        " (epoch seconds), `kind`, `issued_at`, `note`, `reason`.",
    )


BODIES: tuple[type[Body], ...] = (
    LaunchRequest,
    RerunRequest,
    MigrateRequest,
    MigrateWorkflowRequest,
    DecisionRequest,
    SignalRequest,
    GrantRequest,
    ReviewRequest,
    RewindRequest,
    ReplayRequest,
    ForkRequest,
    Empty,
)

# -- pydantic's errors as the gateway's messages ------------------------------------------

_KINDS = {
    "string_type": "string",
    "int_type": "integer",
    "bool_type": "boolean",
    "dict_type": "object",
    "list_type": "array",
    "float_type": "number",
    "model_type": "object",
}
# the first error of the earliest kind is the one reported, as a reader fixes them
_ORDER = ("extra_forbidden", "missing")


def json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    if value is None:
        return "null"
    kinds: tuple[tuple[type, str], ...] = (
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        (dict, "object"),
        (list, "array"),
    )
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def _field(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def _message(error: ErrorDetails, model: type[Body]) -> str:
    kind, ctx, loc = error["type"], error.get("ctx") or {}, error["loc"]
    name = _field(loc)
    if kind == "not_null":
        return error["msg"]
    if not loc:
        return f"the request body must be a JSON object, not {json_kind(error['input'])}"
    if kind == "extra_forbidden":
        known = ", ".join(model._aliases())
        return f"unknown field {name!r} " + (f"(known: {known})" if known else "(this body has no fields)")
    if kind == "missing":
        return f"missing field {name!r}"
    if kind in _KINDS:
        if error["input"] is None:
            return f"field {name!r} must not be null"
        return f"field {name!r} must be {_KINDS[kind]}, not {json_kind(error['input'])}"
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return f"field {name!r} must not be empty"
        return f"field {name!r} must be at least {ctx.get('min_length')} characters"
    expected = str(ctx.get("expected", "")).replace(" or ", ", ").replace("'", "")
    texts = {
        "string_too_long": f"is longer than {ctx.get('max_length')} characters",
        "string_pattern_mismatch": f"must match {ctx.get('pattern')}",
        "greater_than_equal": f"must be >= {ctx.get('ge')}",
        "less_than_equal": f"must be <= {ctx.get('le')}",
        "literal_error": f"must be one of {expected}",
        "too_short": f"needs at least {ctx.get('min_length')} item(s)",
        "too_long": f"has more than {ctx.get('max_length')} items",
    }
    return f"field {name!r} {texts.get(kind, error['msg'])}"


_BY_NAME = {model.__name__: model for model in BODIES}


def body_model(name: str) -> type[Body]:
    """The body model of this name (as the OpenAPI document names it)."""
    return _BY_NAME[name]


def invalid_input(exc: ValidationError, empty_body: bool) -> InvalidInput:
    """The InvalidInput (400) that answers a body its model refused, naming the field."""
    errors = exc.errors(include_url=False)
    if empty_body:
        return InvalidInput("a JSON object body is required")
    model = _BY_NAME.get(exc.title, Empty)
    errors.sort(key=lambda e: _ORDER.index(e["type"]) if e["type"] in _ORDER else len(_ORDER))
    return InvalidInput(_message(errors[0], model))
