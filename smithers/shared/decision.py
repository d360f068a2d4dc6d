"""The pure decision: given a run's state, what happens next.

``decide`` reads plain data (the workflow, a :class:`RunView`, the outputs it was given
and the time) and returns a :class:`Decision`: a list of actions and the time the run
next needs attention. It performs no I/O (an import contract keeps I/O modules out of
it); the store applies the actions and their events in one transaction. A caller that
cannot tell in advance which outputs a decision reads decides with ``partial=True``:
an output it was not given raises :class:`MissingOutputs` naming every output that
step needs, and the caller loads them and decides again
(:func:`smithers.shared.store.state.decide_run`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smithers.shared import child
from smithers.shared.actions import (
    ConsumeSignal,
    Decision,
    DecisionConfig,
    EndAttempt,
    EscalateApproval,
    ExpireApproval,
    Key,
    MissingOutputs,
    NodeView,
    OpenApproval,
    RunView,
    SetRun,
)
from smithers.shared.approval import TIMEOUT_ACTOR
from smithers.shared.context import DecisionContext
from smithers.shared.decision_budget import budget_decided
from smithers.shared.decision_map import Maps, is_map
from smithers.shared.graph import output_iteration
from smithers.shared.policy import cache_key
from smithers.shared.status import ApprovalStatus, AttemptState, NodeStatus, RunStatus
from smithers.shared.workflow import Node, NodeKind, Workflow


def decide(
    wf: Workflow,
    run: RunView,
    outputs: Mapping[Key, Any],
    now: float,
    config: DecisionConfig | None = None,
    *,
    partial: bool = False,
) -> Decision:
    """Decide the next step of ``run``; pure and deterministic for the same inputs.

    ``outputs``: the run's outputs by (node, iteration); a key it lacks is a node
    without output, unless ``partial``, where it raises :class:`MissingOutputs`."""
    return _Decider(wf, run, outputs, now, config or DecisionConfig(), partial).decide()


def _settled(node: Node, status: NodeStatus) -> bool:
    return status in (NodeStatus.SUCCEEDED, NodeStatus.SKIPPED) or (
        status is NodeStatus.FAILED and node.continue_on_fail
    )


class _Decider(Maps):
    def __init__(
        self,
        wf: Workflow,
        run: RunView,
        outputs: Mapping[Key, Any],
        now: float,
        config: DecisionConfig,
        partial: bool,
    ) -> None:
        super().__init__(run, now, config)
        self.wf = wf
        self.outputs = outputs
        self.partial = partial
        self.taken: set[str] = set()  # signals taken by this decision

    # -- helpers ---------------------------------------------------------------------

    def output(self, key: Key) -> Any:
        return self.outputs_of([key])[key]

    def outputs_of(self, keys: list[Key]) -> dict[Key, Any]:
        """The outputs at ``keys`` (None: no output); a partial decision asks for every
        one it was not given at once (:class:`MissingOutputs`)."""
        if self.partial:
            missing = [k for k in keys if k not in self.new_outputs and k not in self.outputs]
            if missing:
                raise MissingOutputs(missing)
        return {k: self.new_outputs[k] if k in self.new_outputs else self.outputs.get(k) for k in keys}

    # -- the decision ----------------------------------------------------------------

    def decide(self) -> Decision:
        if self.run.status.terminal:
            return Decision((), None)
        if self.run.cancel_requested:
            self.cancel()
            return Decision(tuple(self.actions), None)
        for key, state in sorted(self.run.nodes.items()):
            node = self.wf.nodes.get(key[0])
            if node is not None:
                self.advance(node, state)
        if self.failure is None:
            self.failure = self.first_failure()
        for node_id in self.wf.order:
            node = self.wf.nodes[node_id]
            if node.loop is None:
                self.visit(node, 0)
        self.settle_run()
        wake = min(self.wakes) if self.wakes else None
        return Decision(tuple(self.actions), wake)

    def cancel(self) -> None:
        for key, state in sorted(self.run.nodes.items()):
            node = self.wf.nodes.get(key[0])
            if node is None or state.status.terminal:
                continue
            if state.attempt is not None and state.attempt.state.live:
                self.actions.append(EndAttempt(state.attempt.attempt_id, AttemptState.CANCELLED, None))
            if node.kind is NodeKind.CHILD:
                child.cancel(self, node, state)
            self.set_node(node, key[1], NodeStatus.CANCELLED, "node.cancelled")
        self.actions.append(SetRun(RunStatus.CANCELLED))

    def advance(self, node: Node, st: NodeView) -> None:
        """Move a started node execution forward: attempts, backoff, timers, approvals."""
        if is_map(node, st.iteration):
            return  # the map itself: driven by visit(); its items are tasks
        if st.status in (NodeStatus.QUEUED, NodeStatus.RUNNING) and node.dispatched:
            self.watch_attempt(node, st)
        elif st.status is NodeStatus.BACKOFF:
            if st.next_at is None or st.next_at <= self.now:
                self.dispatch(node, st.iteration, "retry")
            else:
                self.wakes.append(st.next_at)
        elif st.status is NodeStatus.WAITING and node.kind is NodeKind.TIMER:
            if st.next_at is None or st.next_at <= self.now:
                self.set_node(
                    node,
                    st.iteration,
                    NodeStatus.SUCCEEDED,
                    "timer.fired",
                    output={"fired_at": self.now},
                )
            else:
                self.wakes.append(st.next_at)
        elif st.status is NodeStatus.WAITING and node.kind is NodeKind.APPROVAL:
            self.approval_decided(node, st)
        elif st.status is NodeStatus.WAITING and node.kind is NodeKind.SANDBOX:
            self.review_decided(node, st)
        elif st.status is NodeStatus.WAITING and node.kind is NodeKind.SIGNAL:
            self.signal_waits(node, st.iteration, st.next_at)
        elif st.status is NodeStatus.RUNNING and node.kind is NodeKind.CHILD:
            child.waits(self, node, st)
        elif st.status is NodeStatus.OVER_BUDGET:
            budget_decided(self, node, st)

    def signal_waits(self, node: Node, iteration: int, timeout_at: float | None) -> None:
        """A signal node: take the first signal of its name not yet taken, else fail
        past its timeout, else wait (woken at the timeout, or by a delivery)."""
        assert node.signal is not None
        for sig in self.run.signals.get(node.signal, ()):
            if sig.signal_id in self.taken:
                continue
            self.taken.add(sig.signal_id)
            self.actions.append(ConsumeSignal(sig.signal_id, node.signal, node.id, iteration))
            out = {
                "signal_id": sig.signal_id,
                "payload": sig.payload,
                "sender": sig.sender,
                "received_at": sig.received_at,
            }
            self.set_node(
                node,
                iteration,
                NodeStatus.SUCCEEDED,
                "node.succeeded",
                payload={"signal_id": sig.signal_id},
                output=out,
            )
            return
        if timeout_at is not None and timeout_at <= self.now:
            error = {
                "code": "signal_timeout",
                "message": f"no signal {node.signal!r} within {node.signal_timeout_s}s",
            }
            self.set_node(node, iteration, NodeStatus.FAILED, "node.failed", error=error)
            return
        if (node.id, iteration) not in self.states:  # starting
            self.set_node(
                node,
                iteration,
                NodeStatus.WAITING,
                "signal.waiting",
                payload={"name": node.signal, "timeout_at": timeout_at},
                next_at=timeout_at,
            )
        if timeout_at is not None:
            self.wakes.append(timeout_at)

    def approval_decided(self, node: Node, st: NodeView) -> None:
        decision = st.decision
        if decision is None:
            return
        if decision.get("status") == ApprovalStatus.PENDING:
            decision = self.approval_waits(node, st, decision)
            if decision is None:
                return
        out = {
            "approved": decision.get("status") == ApprovalStatus.APPROVED,
            "note": decision.get("note"),
            "decided_by": decision.get("decided_by"),
        }
        if decision.get("payload") is not None:
            out["payload"] = decision["payload"]
        if out["approved"]:
            self.set_node(node, st.iteration, NodeStatus.SUCCEEDED, "node.succeeded", output=out)
        else:
            error = {"code": "denied", "message": f"approval denied by {out['decided_by']}"}
            self.set_node(node, st.iteration, NodeStatus.FAILED, "node.failed", output=out, error=error)

    def approval_waits(self, node: Node, st: NodeView, row: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """A pending approval: announce its escalation once, and decide it by its declared
        default once its timeout has passed (returned as the decided row)."""
        escalate_at = row.get("escalate_at")
        if escalate_at is not None and row.get("escalated_at") is None:
            if escalate_at <= self.now:
                self.actions.append(EscalateApproval(node.id, st.iteration, row.get("fallback_owner")))
            else:
                self.wakes.append(escalate_at)
        spec = row.get("spec") or {}
        timeout_at, default = spec.get("timeout_at"), spec.get("default")
        if timeout_at is None or default is None:
            return None
        if timeout_at > self.now:
            self.wakes.append(timeout_at)
            return None
        approved = default == "approve"
        note = f"no decision within the approval's timeout; default {default!r}"
        self.actions.append(ExpireApproval(node.id, st.iteration, approved, note))
        status = ApprovalStatus.APPROVED if approved else ApprovalStatus.DENIED
        return {**row, "status": status, "note": note, "decided_by": TIMEOUT_ACTOR, "payload": None}

    def review_decided(self, node: Node, st: NodeView) -> None:
        """A sandbox node held for diff review: accepted succeeds (output unchanged)."""
        decision = st.decision
        if decision is None or decision.get("status") not in ("accepted", "rejected"):
            return
        review = {
            "sandbox_id": decision.get("sandbox_id"),
            "accepted": decision.get("status") == "accepted",
            "note": decision.get("note"),
            "decided_by": decision.get("decided_by"),
        }
        if review["accepted"]:
            self.set_node(
                node, st.iteration, NodeStatus.SUCCEEDED, "node.succeeded", payload={"review": review}
            )
            return
        message = f"patches rejected by {review['decided_by']}"
        if node.on_reject == "skip":
            payload = {"reason": message, "review": review}
            self.set_node(
                node, st.iteration, NodeStatus.SKIPPED, "node.skipped", payload=payload, output=None
            )
            return
        error = {"code": "review_rejected", "message": message, "note": review["note"]}
        self.set_node(
            node,
            st.iteration,
            NodeStatus.FAILED,
            "node.failed",
            payload={"review": review},
            output=None,
            error=error,
        )

    def visit(self, node: Node, iteration: int) -> None:
        """Start ``node`` if it is ready; drive a running loop through its body."""
        st = self.states.get((node.id, iteration))
        if st is None:
            if self.failure is None:
                self.maybe_start(node, iteration)
            st = self.states.get((node.id, iteration))
        if st is not None and node.kind is NodeKind.LOOP and st.status is NodeStatus.RUNNING:
            self.drive_loop(node, st.current_iteration)
        elif st is not None and node.map is not None and st.status is NodeStatus.RUNNING:
            self.drive_map(node, st)

    def maybe_start(self, node: Node, iteration: int) -> None:
        deps = [(self.wf.nodes[d], self.states.get((d, iteration))) for d in node.after]
        if any(st is None or not _settled(dep, st.status) for dep, st in deps):
            return
        for dep, _ in deps:
            if dep.kind is NodeKind.BRANCH and self.branch_excludes(dep, node.id, iteration):
                self.set_node(
                    node,
                    iteration,
                    NodeStatus.SKIPPED,
                    "node.skipped",
                    payload={"reason": f"branch {dep.id!r} chose another path"},
                )
                return
        if deps and all(st is not None and st.status is NodeStatus.SKIPPED for _, st in deps):
            self.set_node(
                node,
                iteration,
                NodeStatus.SKIPPED,
                "node.skipped",
                payload={"reason": "every upstream node was skipped"},
            )
            return
        self.start(node, iteration)

    def branch_excludes(self, branch: Node, node_id: str, iteration: int) -> bool:
        chosen = (self.output((branch.id, iteration)) or {}).get("path")
        return any(node_id in targets for path, targets in branch.paths.items() if path != chosen)

    def upstream(self, node: Node, iteration: int) -> dict[str, Any]:
        """Every output ``node`` may read (each node it depends on, directly or not)."""
        names = self.wf.upstream(node.id)
        keys = [(d, output_iteration(self.wf.nodes, node.id, d, iteration)) for d in names]
        found = self.outputs_of(keys)
        return {d: found[k] for d, k in zip(names, keys, strict=True)}

    def start(self, node: Node, iteration: int) -> None:
        if node.map is not None:
            self.start_map(node)
        elif node.dispatched and node.cache is not None:
            resolved = {"input": self.run.input, "upstream": self.upstream(node, iteration)}
            key = cache_key(
                node.cache, run_id=self.run.run_id, workflow=self.wf.name, node_id=node.id,
                resolved_input=resolved,
            )  # fmt: skip
            self.dispatch(node, iteration, "start", cache_key=key)
        elif node.dispatched:
            self.dispatch(node, iteration, "start")
        elif node.kind is NodeKind.APPROVAL:
            escalate = None if node.escalate_after_s is None else self.now + node.escalate_after_s
            self.set_node(
                node,
                iteration,
                NodeStatus.WAITING,
                "approval.requested",
                payload={
                    "owner": node.owner,
                    "fallback_owner": node.fallback_owner,
                    "escalate_at": escalate,
                    "description": node.approval.description if node.approval else "",
                },
            )
            spec = node.approval.to_json(self.now) if node.approval else None
            self.actions.append(
                OpenApproval(node.id, iteration, node.owner, node.fallback_owner, escalate, spec)
            )
            for due in (escalate, (spec or {}).get("timeout_at")):
                if due is not None:
                    self.wakes.append(due)
        elif node.kind is NodeKind.CHILD:
            child.start(self, node, iteration)
        elif node.kind is NodeKind.SIGNAL:
            timeout = node.signal_timeout_s
            self.signal_waits(node, iteration, None if timeout is None else self.now + timeout)
        elif node.kind is NodeKind.TIMER:
            due = self.now + node.seconds
            self.set_node(
                node,
                iteration,
                NodeStatus.WAITING,
                "timer.set",
                payload={"due_at": due},
                next_at=due,
            )
            self.wakes.append(due)
        elif node.kind is NodeKind.BRANCH:
            self.start_branch(node, iteration)
        elif node.kind is NodeKind.LOOP:
            self.set_node(
                node,
                iteration,
                NodeStatus.RUNNING,
                "loop.iteration",
                payload={"iteration": 0},
                current_iteration=0,
            )

    def start_branch(self, node: Node, iteration: int) -> None:
        assert node.choose is not None
        readable = self.upstream(node, iteration)  # plain data: every output it may read
        parents = {d: readable[d] for d in node.after}
        ctx = DecisionContext(self.run.run_id, self.run.input, parents, iteration, readable, node.id)
        try:
            path = node.choose(ctx)
        except Exception as exc:
            error = {"code": "branch_error", "message": f"{type(exc).__name__}: {exc}"}
            self.set_node(node, iteration, NodeStatus.FAILED, "node.failed", error=error)
            return
        if not isinstance(path, str) or path not in node.paths:
            error = {"code": "branch_error", "message": f"choose returned unknown path {path!r}"}
            self.set_node(node, iteration, NodeStatus.FAILED, "node.failed", error=error)
            return
        self.set_node(
            node,
            iteration,
            NodeStatus.SUCCEEDED,
            "branch.chosen",
            payload={"path": path},
            output={"path": path},
        )

    def drive_loop(self, loop: Node, k: int) -> None:
        body = [self.wf.nodes[n] for n in self.wf.order if self.wf.nodes[n].loop == loop.id]
        for member in body:
            self.visit(member, k)
        states = [(m, self.states.get((m.id, k))) for m in body]
        broken = [
            m for m, st in states if st is not None and st.status.terminal and not _settled(m, st.status)
        ]
        if broken:
            error = {"code": "loop_failed", "message": f"iteration {k} failed at node {broken[0].id!r}"}
            self.set_node(loop, 0, NodeStatus.FAILED, "node.failed", error=error)
            return
        if not all(st is not None and _settled(m, st.status) for m, st in states):
            return
        found = self.outputs_of([(m.id, k) for m, st in states if st and st.status is NodeStatus.SUCCEEDED])
        outs = {key[0]: value for key, value in found.items()}
        assert loop.until is not None
        try:
            done = bool(loop.until(DecisionContext(self.run.run_id, self.run.input, outs, k)))
        except Exception as exc:
            error = {"code": "loop_error", "message": f"{type(exc).__name__}: {exc}"}
            self.set_node(loop, 0, NodeStatus.FAILED, "node.failed", error=error)
            return
        if done or k + 1 >= loop.max_iterations:
            self.set_node(
                loop,
                0,
                NodeStatus.SUCCEEDED,
                "node.succeeded",
                payload={"iterations": k + 1, "condition_met": done},
                output={"iterations": k + 1, "condition_met": done, "outputs": outs},
            )
            return
        self.set_node(
            loop,
            0,
            NodeStatus.RUNNING,
            "loop.iteration",
            payload={"iteration": k + 1},
            current_iteration=k + 1,
        )
        self.drive_loop(loop, k + 1)

    def settle_run(self) -> None:
        top = [self.wf.nodes[n] for n in self.wf.order if self.wf.nodes[n].loop is None]
        active = False
        waiting = False
        for st in self.states.values():
            node = self.wf.nodes.get(st.node_id)
            if node is None:
                continue
            if st.status in (NodeStatus.QUEUED, NodeStatus.BACKOFF) or (
                st.status is NodeStatus.RUNNING
                and node.kind is not NodeKind.LOOP
                and not is_map(node, st.iteration)
            ):
                active = True
            elif st.status in (NodeStatus.WAITING, NodeStatus.OVER_BUDGET):
                if node.kind is NodeKind.TIMER:
                    active = True
                else:
                    waiting = True
        status = self.run.status
        if self.failure is None:
            self.failure = self.first_failure()
        if self.failure is not None:
            if not active:
                self.actions.append(SetRun(RunStatus.FAILED, error=self.failure))
                return
            new = RunStatus.RUNNING
        elif all(self.settled_at(n, 0) for n in top):
            leaves = [n for n in top if not self.wf.dependents(n.id)]
            found = self.outputs_of(
                [(n.id, 0) for n in leaves if self.states[(n.id, 0)].status is NodeStatus.SUCCEEDED]
            )
            output = {key[0]: value for key, value in found.items()}
            self.actions.append(SetRun(RunStatus.SUCCEEDED, output=output))
            return
        else:
            new = RunStatus.WAITING if waiting and not active else RunStatus.RUNNING
        if new is not status:
            self.actions.append(SetRun(new))

    def settled_at(self, node: Node, iteration: int) -> bool:
        state = self.states.get((node.id, iteration))
        return state is not None and _settled(node, state.status)

    def first_failure(self) -> Mapping[str, Any] | None:
        failed = (NodeStatus.FAILED, NodeStatus.CANCELLED)
        candidates = [(k, st) for k, st in self.states.items() if st.status in failed]
        for (node_id, iteration), st in sorted(candidates):
            node = self.wf.nodes.get(node_id)
            if node is None or node.loop is not None:
                continue
            if st.status in (NodeStatus.FAILED, NodeStatus.CANCELLED) and not _settled(node, st.status):
                return {"node_id": node_id, "iteration": iteration, **(st.error or {})}
        return None
