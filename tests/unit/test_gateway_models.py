"""The request-body models: what they refuse and how the refusal reads, and the schemas
they publish (OpenAPI 3.0: no null type, no const, no generated titles)."""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest
from pydantic import ValidationError

from smithers.gateway import models as m
from smithers.gateway.openapi import document
from smithers.shared.grants import GrantKind, Scope

L, R, G = m.LaunchRequest, m.RewindRequest, m.GrantRequest
REFUSED: list[tuple[type[m.Body], Any, str]] = [
    (L, {"workflow": "w", "inputs": {}}, "unknown field 'inputs' (known: workflow, input, run_id,"),
    (L, {"input": {}}, "missing field 'workflow'"),
    (L, {"workflow": "w", "input": []}, "field 'input' must be object, not array"),
    (L, [1, 2], "the request body must be a JSON object, not array"),
    (L, {"workflow": "w", "run_id": None}, "field 'run_id' must not be null"),
    (L, {"workflow": "w", "run_id": "abc\n"}, "field 'run_id' must match ^[a-z0-9_-]{1,64}$"),
    (L, {"workflow": "w", "priority": True}, "field 'priority' must be integer, not boolean"),
    (L, {"workflow": "w", "priority": 10}, "field 'priority' must be <= 9"),
    (L, {"workflow": ""}, "field 'workflow' must not be empty"),
    (R, {"node_id": "a", "confirm": True, "item": -1}, "field 'item' must be >= 0"),
    (R, {"node_id": "a", "confirm": True, "item": "4"}, "field 'item' must be integer, not string"),
    (R, {"node_id": "a", "confirm": False}, "field 'confirm' must be one of True"),
    (G, {"subject": "a", "scopes": []}, "field 'scopes' needs at least 1 item(s)"),
    (G, {"subject": "a", "scopes": ["root"]}, "field 'scopes[0]' must be one of run:read,"),
    (G, {"subject": "a", "scopes": ["admin"], "note": "x" * 1001}, "longer than 1000 characters"),
    (m.MigrateWorkflowRequest, {"source": "0" * 8, "to": "0" * 8}, "unknown field 'source' (known: from,"),
    (m.Empty, {"x": 1}, "unknown field 'x' (this body has no fields)"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "body", "message"), REFUSED)
def test_a_refused_body_names_its_field(model: type[m.Body], body: Any, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body)
    assert message in m.invalid_input(refused.value, empty_body=False).message


def test_an_empty_body_is_required_where_a_field_is() -> None:
    with pytest.raises(ValidationError) as refused:
        m.LaunchRequest.model_validate({})
    assert m.invalid_input(refused.value, empty_body=True).message == "a JSON object body is required"
    assert m.RerunRequest.optional_body and m.RerunRequest.model_validate({}).run_id is None


def test_nullable_fields_take_null_and_the_others_may_be_left_out() -> None:
    decision = m.DecisionRequest.model_validate({"approved": True, "note": None, "payload": None})
    assert decision.note is None and decision.iteration is None
    launch = m.LaunchRequest.model_validate({"workflow": "w"})
    assert (launch.input, launch.run_id, launch.priority) == ({}, None, None)


def test_the_grant_literals_are_the_enums() -> None:
    scopes = typing.get_args(typing.get_args(m.GrantRequest.model_fields["scopes"].annotation)[0])
    kinds = typing.get_args(typing.get_args(m.GrantRequest.model_fields["kind"].annotation)[0])
    assert set(scopes) == {s.value for s in Scope}
    assert set(kinds) == {k.value for k in GrantKind}


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def test_the_published_schemas_are_openapi_3_0() -> None:
    schemas = document()["components"]["schemas"]
    for name in ("LaunchRequest", "GrantRequest", "Grant", "ScheduleList", "RevisionList", "Empty"):
        assert name in schemas, name
    text = json.dumps(schemas)
    assert '"type": "null"' not in text and "$defs" not in text
    assert not {"const", "anyOf", "title"} & _keys(schemas)
    assert schemas["DecisionRequest"]["properties"]["note"]["nullable"] is True
    assert "nullable" not in schemas["LaunchRequest"]["properties"]["run_id"]
    assert schemas["LaunchRequest"]["additionalProperties"] is False
