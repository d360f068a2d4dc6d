"""The scheduler's pure decision, on plain data (no Redis, no database)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from smithers.shared.actions import (
    AttemptView,
    Decision,
    DecisionConfig,
    Dispatch,
    EndAttempt,
    EscalateApproval,
    ExpireApproval,
    MissingOutputs,
    NodeView,
    OpenApproval,
    Redispatch,
    RunView,
    SetNode,
    SetRun,
)
from smithers.shared.decision import decide
from smithers.shared.registry import Registry
from smithers.shared.status import AttemptState, NodeStatus, RunStatus
from smithers.shared.workflow import Workflow

NOW = 1000.0


def noop(ctx: object) -> None:
    return None


def build(wf: Workflow) -> Workflow:
    Registry().register(wf)
    return wf


def diamond() -> Workflow:
    wf = Workflow("diamond")
    wf.task("a")(noop)
    wf.task("b", after=["a"], retries=2, backoff="fixed", retry_delay_s=5)(noop)
    wf.task("c", after=["a"], continue_on_fail=True)(noop)
    wf.task("d", after=["b", "c"])(noop)
    return build(wf)


def done(
    node: str, it: int = 0, status: NodeStatus = NodeStatus.SUCCEEDED
) -> tuple[tuple[str, int], NodeView]:
    return (node, it), NodeView(node, it, status)


def running(node: str, **attempt: Any) -> tuple[tuple[str, int], NodeView]:
    fields = {
        "state": AttemptState.RUNNING,
        "dispatched_at": NOW - 5,
        "lease_expires_at": NOW + 10,
        **attempt,
    }
    failures = fields.pop("failures", 0)
    return (node, 0), NodeView(
        node, 0, NodeStatus.RUNNING, failures=failures, attempt=AttemptView(f"att-{node}", number=1, **fields)
    )


def run_view(
    *nodes: tuple[tuple[str, int], NodeView],
    status: RunStatus = RunStatus.RUNNING,
    cancel: bool = False,
    run_input: dict[str, Any] | None = None,
) -> RunView:
    return RunView("r1", status, run_input or {}, dict(nodes), cancel)


def dispatched(d: Decision) -> list[tuple[str, int]]:
    return [(a.node_id, a.iteration) for a in d.actions if isinstance(a, Dispatch)]


def of(d: Decision, kind: type) -> list[Any]:
    return [a for a in d.actions if isinstance(a, kind)]


def test_a_new_run_dispatches_its_roots_and_starts_running() -> None:
    d = decide(diamond(), run_view(status=RunStatus.QUEUED), {}, NOW)
    assert dispatched(d) == [("a", 0)]
    assert of(d, SetRun) == [SetRun(RunStatus.RUNNING)]
    assert d.wake_at == NOW + DecisionConfig().redispatch_after_s


def test_fan_out_dispatches_every_child_once() -> None:
    d = decide(diamond(), run_view(done("a")), {}, NOW)
    assert sorted(dispatched(d)) == [("b", 0), ("c", 0)]


def test_fan_in_becomes_ready_exactly_once_when_both_parents_finish_together() -> None:
    wf = diamond()
    state = run_view(done("a"), done("b"), done("c"))
    first = decide(wf, state, {}, NOW)
    assert dispatched(first) == [("d", 0)]
    # once d has a node row (written with the dispatch), deciding again dispatches nothing
    after = run_view(done("a"), done("b"), done("c"), running("d", state=AttemptState.QUEUED))
    assert dispatched(decide(wf, after, {}, NOW)) == []


def test_fan_in_waits_for_every_parent() -> None:
    d = decide(diamond(), run_view(done("a"), done("b"), running("c")), {}, NOW)
    assert dispatched(d) == []


def test_a_failed_attempt_is_retried_after_its_backoff() -> None:
    wf = diamond()
    failed = running("b", state=AttemptState.FAILED, error={"message": "boom"})
    d = decide(wf, run_view(done("a"), failed, done("c")), {}, NOW)
    (node,) = of(d, SetNode)
    assert (node.node_id, node.status, node.next_at, node.failures) == ("b", NodeStatus.BACKOFF, NOW + 5, 1)
    assert d.wake_at == NOW + 5
    backoff = (("b", 0), NodeView("b", 0, NodeStatus.BACKOFF, failures=1, next_at=NOW + 5))
    assert dispatched(decide(wf, run_view(done("a"), backoff, done("c")), {}, NOW + 4)) == []
    assert dispatched(decide(wf, run_view(done("a"), backoff, done("c")), {}, NOW + 5)) == [("b", 0)]


def test_retries_exhausted_fail_the_node_and_then_the_run() -> None:
    wf = diamond()
    failed = running("b", state=AttemptState.FAILED, failures=2, error={"message": "boom"})
    d = decide(wf, run_view(done("a"), failed, done("c")), {}, NOW)
    assert [(a.node_id, a.status) for a in of(d, SetNode)] == [("b", NodeStatus.FAILED)]
    assert of(d, SetRun)[0].status is RunStatus.FAILED
    assert of(d, SetRun)[0].error == {"node_id": "b", "iteration": 0, "message": "boom"}


def test_a_failure_waits_for_in_flight_steps_before_failing_the_run() -> None:
    wf = diamond()
    failed = running("b", state=AttemptState.FAILED, failures=2, error={"message": "boom"})
    d = decide(wf, run_view(done("a"), failed, running("c")), {}, NOW)
    assert of(d, SetRun) == []  # c is still running; its result is kept for a resume
    assert dispatched(d) == []


def test_continue_on_fail_lets_downstream_run() -> None:
    d = decide(diamond(), run_view(done("a"), done("b"), done("c", status=NodeStatus.FAILED)), {}, NOW)
    assert dispatched(d) == [("d", 0)]


def test_an_expired_lease_gives_up_the_attempt_without_spending_a_retry() -> None:
    d = decide(diamond(), run_view(done("a"), running("b", lease_expires_at=NOW - 1), done("c")), {}, NOW)
    (end,) = of(d, EndAttempt)
    assert (end.attempt_id, end.state) == ("att-b", AttemptState.LOST)
    (disp,) = of(d, Dispatch)
    assert (disp.node_id, disp.reason, disp.lost, disp.failures) == ("b", "lost", 1, None)


def test_a_step_past_its_deadline_times_out_and_counts_as_a_failure() -> None:
    wf = Workflow("deadline")
    wf.task("a", timeout_s=1)(noop)
    build(wf)
    d = decide(wf, run_view(running("a", deadline_at=NOW - 0.1)), {}, NOW)
    assert of(d, EndAttempt)[0].state is AttemptState.TIMED_OUT
    assert of(d, SetNode)[0].status is NodeStatus.FAILED
    assert of(d, SetRun)[0].error["code"] == "timeout"  # type: ignore[index]


def test_a_queued_attempt_whose_message_was_lost_is_sent_again() -> None:
    wf = diamond()
    config = DecisionConfig(redispatch_after_s=30)
    stale = running("b", state=AttemptState.QUEUED, dispatched_at=NOW - 31)
    d = decide(wf, run_view(done("a"), stale, done("c")), {}, NOW, config)
    assert of(d, Redispatch) == [Redispatch("att-b", "b", 0)]
    fresh = running("b", state=AttemptState.QUEUED, dispatched_at=NOW - 1)
    assert of(decide(wf, run_view(done("a"), fresh, done("c")), {}, NOW, config), Redispatch) == []


def test_a_queued_attempt_sent_before_the_broker_lost_its_messages_is_sent_again_at_once() -> None:
    # given a message sent 10 s ago, waiting in a busy queue: not sent again...
    wf = diamond()
    waiting = running("b", state=AttemptState.QUEUED, dispatched_at=NOW - 10)
    view = run_view(done("a"), waiting, done("c"))
    assert of(decide(wf, view, {}, NOW, DecisionConfig(intact_since=NOW - 20)), Redispatch) == []
    # ...until the broker's epoch says its contents began after it was sent (a flush)
    lost = decide(wf, view, {}, NOW, DecisionConfig(intact_since=NOW - 2))
    assert of(lost, Redispatch) == [Redispatch("att-b", "b", 0)]


def test_an_approval_waits_and_the_run_says_waiting() -> None:
    wf = Workflow("appr")
    wf.task("a")(noop)
    wf.approval("ok", after=["a"], owner="alice", fallback_owner="bob", escalate_after_s=60)
    wf.task("b", after=["ok"])(noop)
    build(wf)
    d = decide(wf, run_view(done("a")), {}, NOW)
    empty = {
        "description": "",
        "show": [],
        "schema": None,
        "options": [],
        "default": None,
        "timeout_at": None,
    }
    assert of(d, OpenApproval) == [OpenApproval("ok", 0, "alice", "bob", NOW + 60, empty)]
    assert of(d, SetRun) == [SetRun(RunStatus.WAITING)]
    assert d.wake_at == NOW + 60  # the escalation is announced on time
    approved = (
        ("ok", 0),
        NodeView(
            "ok",
            0,
            NodeStatus.WAITING,
            decision={"status": "approved", "note": "fine", "decided_by": "alice"},
        ),
    )
    d2 = decide(wf, run_view(done("a"), approved, status=RunStatus.WAITING), {}, NOW)
    assert of(d2, SetNode)[0].output == {"approved": True, "note": "fine", "decided_by": "alice"}
    assert dispatched(d2) == [("b", 0)]


def waiting_approval(**row: Any) -> tuple[tuple[str, int], NodeView]:
    decision = {"status": "pending", "fallback_owner": "bob", "escalate_at": None, "escalated_at": None}
    return (("ok", 0), NodeView("ok", 0, NodeStatus.WAITING, decision={**decision, **row}))


def declared_approval() -> Workflow:
    wf = Workflow("appr-spec")
    wf.task("a")(noop)
    wf.approval(
        "ok",
        after=["a"],
        owner="alice",
        fallback_owner="bob",
        escalate_after_s=60,
        description="Ship it?",
        show=["a"],
        schema={"type": "object", "properties": {"channel": {"enum": ["beta", "stable"]}}},
        timeout_s=600,
        default="deny",
    )
    wf.task("b", after=["ok"])(noop)
    return build(wf)


def test_an_approval_escalates_once_and_is_denied_by_default_after_its_timeout() -> None:
    wf = declared_approval()
    opened = of(decide(wf, run_view(done("a")), {}, NOW), OpenApproval)[0]
    assert opened.spec is not None and opened.spec["timeout_at"] == NOW + 600
    assert opened.spec["show"] == ["a"] and opened.spec["description"] == "Ship it?"
    spec = dict(opened.spec)

    # before the escalation time: nothing happens, the run wakes at that time
    early = decide(wf, run_view(done("a"), waiting_approval(escalate_at=NOW + 60, spec=spec)), {}, NOW)
    assert of(early, EscalateApproval) == [] and early.wake_at == NOW + 60
    # past it: one escalation; once it is recorded, never again
    late = decide(wf, run_view(done("a"), waiting_approval(escalate_at=NOW - 1, spec=spec)), {}, NOW)
    assert of(late, EscalateApproval) == [EscalateApproval("ok", 0, "bob")]
    assert late.wake_at == NOW + 600
    again = waiting_approval(escalate_at=NOW - 1, escalated_at=NOW - 0.5, spec=spec)
    assert of(decide(wf, run_view(done("a"), again), {}, NOW), EscalateApproval) == []

    # past the timeout: the declared default decides, and the node fails as denied
    expired = decide(wf, run_view(done("a"), again), {}, NOW + 601)
    (expire,) = of(expired, ExpireApproval)
    assert (expire.node_id, expire.iteration, expire.approved) == ("ok", 0, False)
    assert "default 'deny'" in expire.note
    (failed,) = [a for a in of(expired, SetNode) if a.node_id == "ok"]
    assert failed.status is NodeStatus.FAILED and failed.output["decided_by"] == "smithers:timeout"


def test_an_approval_payload_is_its_output() -> None:
    wf = declared_approval()
    approved = waiting_approval(status="approved", note=None, decided_by="alice", payload={"channel": "beta"})
    d = decide(wf, run_view(done("a"), approved, status=RunStatus.WAITING), {}, NOW)
    assert of(d, SetNode)[0].output == {
        "approved": True,
        "note": None,
        "decided_by": "alice",
        "payload": {"channel": "beta"},
    }


def branching() -> Workflow:
    wf = Workflow("branching")
    wf.task("a")(noop)
    wf.branch(
        "route",
        after=["a"],
        choose=lambda ctx: "x" if ctx.outputs["a"] > 0 else "y",
        paths={"x": ["x1"], "y": ["y1"]},
    )
    wf.task("x1")(noop)
    wf.task("y1")(noop)
    wf.task("y2", after=["y1"])(noop)
    wf.task("join", after=["x1", "y2"])(noop)
    return build(wf)


def test_a_branch_skips_the_paths_it_did_not_choose_and_their_descendants() -> None:
    wf = branching()
    d = decide(wf, run_view(done("a")), {("a", 0): 5}, NOW)
    by_node = {a.node_id: a for a in of(d, SetNode)}
    assert by_node["route"].output == {"path": "x"}
    assert by_node["y1"].status is NodeStatus.SKIPPED
    assert by_node["y2"].status is NodeStatus.SKIPPED
    assert dispatched(d) == [("x1", 0)]
    d2 = decide(
        wf,
        run_view(
            done("a"),
            done("route"),
            done("x1"),
            done("y1", status=NodeStatus.SKIPPED),
            done("y2", status=NodeStatus.SKIPPED),
        ),
        {("route", 0): {"path": "x"}},
        NOW,
    )
    assert dispatched(d2) == [("join", 0)]


def test_a_branch_that_raises_fails_with_the_error() -> None:
    wf = branching()
    d = decide(wf, run_view(done("a")), {("a", 0): "not a number"}, NOW)
    failed = [a for a in of(d, SetNode) if a.status is NodeStatus.FAILED]
    assert failed[0].node_id == "route" and "TypeError" in failed[0].error["message"]


def looping(max_iterations: int = 3) -> Workflow:
    wf = Workflow("looping")
    wf.task("draft")(noop)
    wf.task("check", after=["draft"])(noop)
    wf.loop(
        "refine",
        body=["draft", "check"],
        until=lambda ctx: ctx.outputs["check"] == "ok",
        max_iterations=max_iterations,
    )
    wf.task("ship", after=["refine"])(noop)
    return build(wf)


def test_a_loop_runs_its_body_then_starts_the_next_iteration() -> None:
    wf = looping()
    d = decide(wf, run_view(status=RunStatus.QUEUED), {}, NOW)
    assert dispatched(d) == [("draft", 0)]
    loop_row = (("refine", 0), NodeView("refine", 0, NodeStatus.RUNNING, current_iteration=0))
    d2 = decide(wf, run_view(loop_row, done("draft"), done("check")), {("check", 0): "meh"}, NOW)
    assert [a.current_iteration for a in of(d2, SetNode)] == [1]
    assert dispatched(d2) == [("draft", 1)]


def test_a_loop_ends_when_its_condition_holds_or_at_max_iterations() -> None:
    wf = looping(max_iterations=2)
    loop_row = (("refine", 0), NodeView("refine", 0, NodeStatus.RUNNING, current_iteration=1))
    nodes = [loop_row, done("draft"), done("check"), done("draft", 1), done("check", 1)]
    d = decide(wf, run_view(*nodes), {("check", 0): "meh", ("check", 1): "meh", ("draft", 1): 2}, NOW)
    (end,) = [a for a in of(d, SetNode) if a.node_id == "refine"]
    assert end.status is NodeStatus.SUCCEEDED
    assert end.output == {"iterations": 2, "condition_met": False, "outputs": {"draft": 2, "check": "meh"}}
    assert dispatched(d) == [("ship", 0)]


def test_a_timer_waits_then_fires() -> None:
    wf = Workflow("timed")
    wf.timer("t", seconds=30)
    build(wf)
    d = decide(wf, run_view(status=RunStatus.QUEUED), {}, NOW)
    assert of(d, SetNode)[0].next_at == NOW + 30 and d.wake_at == NOW + 30
    assert of(d, SetRun) == [SetRun(RunStatus.RUNNING)]  # a timer frees every worker but is not "waiting"
    row = (("t", 0), NodeView("t", 0, NodeStatus.WAITING, next_at=NOW + 30))
    d2 = decide(wf, run_view(row), {}, NOW + 30)
    assert of(d2, SetNode)[0].status is NodeStatus.SUCCEEDED
    assert of(d2, SetRun)[0].status is RunStatus.SUCCEEDED


def test_cancel_gives_up_live_attempts_and_cancels_the_run() -> None:
    d = decide(diamond(), run_view(done("a"), running("b"), cancel=True), {}, NOW)
    assert of(d, EndAttempt)[0].state is AttemptState.CANCELLED
    assert of(d, SetRun) == [SetRun(RunStatus.CANCELLED)]
    assert d.wake_at is None


def test_a_terminal_run_decides_nothing() -> None:
    d = decide(diamond(), run_view(status=RunStatus.SUCCEEDED), {}, NOW)
    assert d == Decision((), None)


def test_success_records_the_outputs_of_the_leaves() -> None:
    d = decide(diamond(), run_view(done("a"), done("b"), done("c"), done("d")), {("d", 0): {"v": 1}}, NOW)
    assert of(d, SetRun) == [SetRun(RunStatus.SUCCEEDED, output={"d": {"v": 1}})]


def test_a_branch_returning_something_that_is_not_a_path_fails_cleanly() -> None:
    wf = Workflow("weird-branch")
    wf.task("a")(noop)
    wf.branch("route", after=["a"], choose=lambda ctx: ["x"], paths={"x": ["x1"]})  # type: ignore[arg-type,return-value]
    wf.task("x1")(noop)
    build(wf)
    d = decide(wf, run_view(done("a")), {}, NOW)
    failed = [a for a in of(d, SetNode) if a.status is NodeStatus.FAILED]
    assert failed[0].node_id == "route" and "unknown path" in failed[0].error["message"]


def test_attempt_numbers_follow_the_node_rows_current_attempt_unless_the_run_was_reopened() -> None:
    wf = diamond()
    # a new node execution starts at 1; a retry follows the current attempt's number
    d = decide(wf, run_view(), {}, NOW)
    assert [(a.node_id, a.number) for a in of(d, Dispatch)] == [("a", 1)]
    key, b = running("b", lease_expires_at=NOW - 1)
    b = replace(b, attempt=replace(b.attempt, number=3))  # type: ignore[arg-type]
    d = decide(wf, run_view(done("a"), (key, b), done("c")), {}, NOW)
    assert [(a.node_id, a.number) for a in of(d, Dispatch)] == [("b", 4)]
    # after a rewind or resume removed node rows, the store counts (None)
    reopened = replace(run_view(), reopened=True)
    assert [(a.node_id, a.number) for a in of(decide(wf, reopened, {}, NOW), Dispatch)] == [("a", None)]
    d = decide(wf, replace(run_view(done("a"), (key, b), done("c")), reopened=True), {}, NOW)
    assert [(a.node_id, a.number) for a in of(d, Dispatch)] == [("b", 4)]  # its row is there


# -- partial decisions: the outputs a decision reads are named, then given -------------


def branchy() -> Workflow:
    wf = Workflow("branchy")
    wf.task("a")(noop)
    wf.task("b", after=["a"])(noop)
    wf.task("l")(noop)
    wf.task("r")(noop)
    wf.branch("pick", after=["b"], paths={"left": ["l"], "right": ["r"]}, choose=lambda ctx: ctx.output("a"))
    return build(wf)


def test_a_partial_decision_that_reads_no_output_needs_none() -> None:
    # a chain's next step: dispatched without reading any output
    d = decide(diamond(), run_view(done("a")), {}, NOW, partial=True)

    assert dispatched(d) == [("b", 0), ("c", 0)]


def test_a_partial_decision_names_every_output_a_branch_may_read_then_decides_with_them() -> None:
    wf, view = branchy(), run_view(done("a"), done("b"))
    try:
        decide(wf, view, {}, NOW, partial=True)
    except MissingOutputs as need:
        asked = need.keys
    else:
        raise AssertionError("the branch's outputs were not asked for")

    # every node the branch depends on, at once (one query), not one per read
    assert asked == {("a", 0), ("b", 0)}
    d = decide(wf, view, {("a", 0): "left", ("b", 0): None}, NOW, partial=True)
    chosen = next(a for a in d.actions if isinstance(a, SetNode) and a.node_id == "pick")
    assert chosen.output == {"path": "left"}
    assert decide(wf, view, {("a", 0): "left"}, NOW) == d  # complete outputs: an absent key is no output


def test_a_partial_decision_asks_for_the_leaves_output_when_the_run_ends() -> None:
    wf = diamond()
    view = run_view(done("a"), done("b"), done("c"), done("d"))
    try:
        decide(wf, view, {}, NOW, partial=True)
    except MissingOutputs as need:
        assert need.keys == {("d", 0)}
    else:
        raise AssertionError("the run's output was not asked for")
    d = decide(wf, view, {("d", 0): 7}, NOW, partial=True)
    assert of(d, SetRun)[0].output == {"d": 7}
