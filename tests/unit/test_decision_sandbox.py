"""The pure decision for sandbox nodes held for diff review."""

from __future__ import annotations

from typing import Any

import pytest

from smithers.shared.actions import UNSET, AttemptView, Dispatch, NodeView, RunView, SetNode, SetRun
from smithers.shared.decision import decide
from smithers.shared.errors import InvalidWorkflow
from smithers.shared.sandbox import SandboxSpec
from smithers.shared.status import AttemptState, NodeStatus, RunStatus
from smithers.shared.workflow import Workflow

pytestmark = pytest.mark.timeout(10)

SPEC = SandboxSpec(command=("true",))


def workflow(on_reject: str = "fail", continue_on_fail: bool = False) -> Workflow:
    wf = Workflow("t-review")
    wf.sandbox("propose", SPEC, on_reject=on_reject, continue_on_fail=continue_on_fail)  # type: ignore[arg-type]

    @wf.task(after=["propose"])
    def use(ctx: Any) -> None:
        return None

    wf.validate()
    return wf


def held(decision: dict[str, Any] | None, status: RunStatus = RunStatus.RUNNING) -> RunView:
    """The run once the sandbox attempt committed and the node waits for review."""
    attempt = AttemptView("att-1", AttemptState.SUCCEEDED, 1, dispatched_at=0.0)
    node = NodeView("propose", 0, NodeStatus.WAITING, attempt=attempt, decision=decision)
    return RunView("run-1", status, {}, {("propose", 0): node})


def review(status: str, by: str = "carol", note: str | None = "ok") -> dict[str, Any]:
    return {"status": status, "sandbox_id": "sbx-1", "note": note, "decided_by": by, "decided_at": 5.0}


OUTPUT = {"sandbox_id": "sbx-1", "workspace": {"files": {"a.txt": "patched\n"}}}


def test_pending_review_waits_and_the_run_is_waiting() -> None:
    for decision in (None, review("pending", by="", note=None)):
        result = decide(workflow(), held(decision), {("propose", 0): OUTPUT}, now=10.0)
        assert [a for a in result.actions if isinstance(a, (SetNode, Dispatch))] == []
        assert result.actions == (SetRun(RunStatus.WAITING),)


def test_accepted_review_succeeds_without_touching_the_output_and_starts_downstream() -> None:
    view = held(review("accepted"), RunStatus.WAITING)
    result = decide(workflow(), view, {("propose", 0): OUTPUT}, now=10.0)
    set_node = next(a for a in result.actions if isinstance(a, SetNode))
    assert (set_node.node_id, set_node.status, set_node.event) == (
        "propose",
        NodeStatus.SUCCEEDED,
        "node.succeeded",
    )
    assert set_node.payload == {
        "review": {"sandbox_id": "sbx-1", "accepted": True, "note": "ok", "decided_by": "carol"}
    }
    assert set_node.output is UNSET
    dispatch = next(a for a in result.actions if isinstance(a, Dispatch))
    assert dispatch.node_id == "use"
    assert result.actions[-1] == SetRun(RunStatus.RUNNING)


def test_rejected_review_fails_the_node_and_the_run() -> None:
    result = decide(workflow(), held(review("rejected", note="no")), {("propose", 0): OUTPUT}, now=10.0)
    set_node = next(a for a in result.actions if isinstance(a, SetNode))
    assert set_node.status is NodeStatus.FAILED
    assert set_node.output is None  # the rejected workspace is never handed downstream
    assert set_node.error == {"code": "review_rejected", "message": "patches rejected by carol", "note": "no"}
    run = result.actions[-1]
    assert isinstance(run, SetRun) and run.status is RunStatus.FAILED
    assert run.error is not None and run.error["node_id"] == "propose"
    assert not any(isinstance(a, Dispatch) for a in result.actions)


def test_rejected_review_with_on_reject_skip_skips_the_node_and_what_depends_only_on_it() -> None:
    result = decide(workflow("skip"), held(review("rejected")), {("propose", 0): OUTPUT}, now=10.0)
    nodes = [(a.node_id, a.status, a.event) for a in result.actions if isinstance(a, SetNode)]
    assert nodes == [
        ("propose", NodeStatus.SKIPPED, "node.skipped"),
        ("use", NodeStatus.SKIPPED, "node.skipped"),
    ]
    assert result.actions[-1] == SetRun(RunStatus.SUCCEEDED, output={})


def test_rejected_review_with_continue_on_fail_runs_downstream() -> None:
    result = decide(workflow(continue_on_fail=True), held(review("rejected")), {}, now=10.0)
    assert any(isinstance(a, Dispatch) and a.node_id == "use" for a in result.actions)


def test_on_reject_must_be_fail_or_skip() -> None:
    with pytest.raises(InvalidWorkflow, match="on_reject"):
        Workflow("t-bad").sandbox("s", SPEC, on_reject="ignore")  # type: ignore[arg-type]
