"""The approval, sandbox and webhook response models send what the hand-built dicts sent:
every field of the record (none dropped by ``extra="ignore"``), an approval's ``context``
and ``workflow`` only where a listing gave them."""

from __future__ import annotations

import json
from typing import Any

from smithers.gateway.approvals import approval_json
from smithers.shared.api import Approval, ApprovalList, Sandbox, WebhookResult
from smithers.shared.status import ApprovalStatus
from smithers.shared.store import ApprovalRecord
from smithers.shared.store.sandboxes import ReviewRecord, ReviewStatus, SandboxRecord, SandboxStatus

SPEC = {
    "description": "Raise the budget?",
    "show": [],
    "schema": {"type": "object"},
    "options": [],
    "default": None,
    "timeout_at": None,
    "budget": {"exceeded": ["cost"]},  # a budget approval's own keys stay
    "reason": "budget",
}
RECORD = ApprovalRecord(
    run_id="run-1",
    node_id="gate",
    iteration=2,
    status=ApprovalStatus.APPROVED,
    owner="alice",
    fallback_owner=None,
    escalate_at=None,
    requested_at=1700000000.5,
    decided_by="alice",
    decided_at=1700000001.25,
    note="ok",
    spec=SPEC,
    payload={"amount": [1, 2, None]},
    escalated_at=None,
)


def wire(value: Any) -> Any:
    """What jsonify sent for a hand-built dict."""
    return json.loads(json.dumps(value))


def test_a_decision_has_no_context_or_workflow() -> None:
    sent = Approval.model_validate(approval_json(RECORD)).model_dump(mode="json", by_alias=True)
    assert sent == wire(approval_json(RECORD))
    assert "context" not in sent and "workflow" not in sent


def test_a_listed_approval_has_its_context_and_workflow_even_when_null() -> None:
    listed = {**approval_json(RECORD, {"draft": {"text": "hi"}}), "workflow": None}
    sent = ApprovalList(approvals=(Approval.model_validate(listed),)).model_dump(mode="json", by_alias=True)
    assert sent == {"approvals": [wire(listed)]}
    assert sent["approvals"][0]["workflow"] is None


def test_a_sandbox_keeps_every_field_of_its_record() -> None:
    record = SandboxRecord(
        sandbox_id="sb-1",
        run_id="run-1",
        node_id="edit",
        iteration=0,
        attempt_id="att-1",
        runtime="docker",
        image="python:3.11",
        image_digest=None,
        container_id="c0ffee",
        limits={"cpus": 1.0, "memory": "256m"},
        status=SandboxStatus.SUCCEEDED,
        review_status=ReviewStatus.ACCEPTED,
        bundle_path="/tmp/sb-1",
        request_bytes=10,
        result_bytes=None,
        manifest={"patches": [{"path": "a.py", "diff": "+x"}]},
        error=None,
        created_at=1.0,
        finished_at=2.0,
        reviews=(ReviewRecord(accept=True, actor="bob", note=None, decided_at=3.0),),
    )
    sent = Sandbox.model_validate(record.to_json()).model_dump(mode="json", by_alias=True)
    assert sent == wire(record.to_json())


def test_a_webhook_result_is_the_store_result() -> None:
    result = {"webhook_id": "msg_1", "type": "grant.created", "effect": "grant_recorded",
              "grants": ["g1"], "revoked": []}  # fmt: skip
    assert WebhookResult.model_validate(result).model_dump(mode="json") == result
