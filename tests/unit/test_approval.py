"""The approval declaration and the payload check (the subset of JSON Schema it supports)."""

from __future__ import annotations

from typing import Any

import pytest

from smithers.shared.approval import check_payload, validate
from smithers.shared.errors import InvalidInput, InvalidWorkflow
from smithers.shared.workflow import Workflow

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["channel", "percent"],
    "properties": {
        "channel": {"type": "string", "enum": ["beta", "stable"]},
        "percent": {"type": "integer", "minimum": 1, "maximum": 100},
        "ticket": {"type": "string", "pattern": "^OPS-[0-9]+$", "maxLength": 20},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
    },
}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "payload must be of type object"),
        ({"percent": 5}, "payload.channel is required"),
        ({"channel": "nightly", "percent": 5}, 'payload.channel must be one of "beta", "stable"'),
        ({"channel": "beta", "percent": 0}, "payload.percent must be >= 1"),
        ({"channel": "beta", "percent": True}, "payload.percent must be of type integer"),
        ({"channel": "beta", "percent": 5, "ticket": "x"}, "payload.ticket must match ^OPS-[0-9]+$"),
        ({"channel": "beta", "percent": 5, "tags": ["a", 1]}, "payload.tags[1] must be of type string"),
        ({"channel": "beta", "percent": 5, "tags": ["a", "b", "c"]}, "payload.tags allows at most 2 items"),
        ({"channel": "beta", "percent": 5, "extra": 1}, "payload.extra is not allowed"),
    ],
)
def test_a_bad_payload_is_refused_naming_its_path(payload: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate(SCHEMA, payload)
    assert info.value.message == message


def test_a_good_payload_passes_and_the_declaration_decides_what_is_needed() -> None:
    validate(SCHEMA, {"channel": "beta", "percent": 5, "ticket": "OPS-12", "tags": ["a"]})
    spec = {"schema": SCHEMA, "options": []}
    with pytest.raises(InvalidInput, match="needs a payload"):
        check_payload(spec, True, None)
    check_payload(spec, False, None)  # a denial needs none
    with pytest.raises(InvalidInput, match="one of"):
        check_payload({"schema": None, "options": ["a", "b"]}, True, "c")
    check_payload({"schema": None, "options": ["a", "b"]}, True, "b")
    with pytest.raises(InvalidInput, match="declares no payload"):
        check_payload({"schema": None, "options": []}, True, {"x": 1})
    check_payload(None, True, None)  # an approval from before v7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schema": {"type": "object", "oneOf": []}}, "not supported: oneOf"),
        ({"schema": {"type": "date"}}, "type 'date'"),
        ({"schema": {"type": "object"}, "options": ["a"]}, "a schema or options, not both"),
        ({"options": ["a", "a"]}, "options repeat"),
        ({"timeout_s": 10}, "timeout_s and default go together"),
        ({"timeout_s": 10, "default": "maybe"}, "default must be"),
        ({"timeout_s": 10, "default": "approve", "options": ["a"]}, "payload nobody chose"),
        ({"show": ["nope"]}, "shows unknown 'nope'"),
    ],
)
def test_a_bad_declaration_is_refused_naming_the_node(kwargs: dict[str, Any], message: str) -> None:
    wf = Workflow("decl")
    wf.task("a")(lambda ctx: None)
    with pytest.raises(InvalidWorkflow, match=message) as info:
        wf.approval("gate", after=["a"], **kwargs)
        wf.validate()
    assert "gate" in info.value.message
