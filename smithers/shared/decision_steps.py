"""The attempt half of the scheduler's pure decision: dispatching a node execution
(with its attempt number), and watching its attempt: re-sending a lost message, the
deadline, the lease, and retries with backoff. :class:`smithers.shared.decision._Decider`
builds on it; like the rest of the decision it performs no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from smithers.shared.actions import (
    UNSET,
    Action,
    DecisionConfig,
    Dispatch,
    EndAttempt,
    Key,
    NodeView,
    Redispatch,
    RunView,
    SetNode,
)
from smithers.shared.decision_budget import parks
from smithers.shared.policy import retry_delay
from smithers.shared.status import AttemptState, NodeStatus
from smithers.shared.workflow import Node


class Steps:
    """The decision's state and what it does with node executions and their attempts."""

    def __init__(self, run: RunView, now: float, config: DecisionConfig) -> None:
        self.run = run
        self.now = now
        self.config = config
        self.new_outputs: dict[Key, Any] = {}
        self.states: dict[Key, NodeView] = dict(run.nodes)
        self.actions: list[Action] = []
        self.wakes: list[float] = []
        self.failure: Mapping[str, Any] | None = None
        self.budget = run.budget  # the run's ceilings; an approval may raise them in this decision

    def set_node(self, node: Node, iteration: int, status: NodeStatus, event: str, **kw: Any) -> None:
        action = SetNode(node.id, iteration, node.kind, status, event, **kw)
        self.actions.append(action)
        key = (node.id, iteration)
        old = self.states.get(key) or NodeView(node.id, iteration, status)
        changes: dict[str, Any] = {"status": status}
        for name in ("next_at", "error"):
            changes[name] = kw.get(name)
        for name in ("current_iteration", "failures", "lost"):
            if kw.get(name) is not None:
                changes[name] = kw[name]
        self.states[key] = replace(old, **changes)
        if action.output is not UNSET:
            self.new_outputs[key] = action.output
        if status is NodeStatus.FAILED and not node.continue_on_fail and self.failure is None:
            self.failure = {"node_id": node.id, "iteration": iteration, **(kw.get("error") or {})}

    def _number(self, key: Key) -> int | None:
        """The next attempt's number for a node execution, from its loaded row: every
        attempt was made current on the row when it was created, so the current one is
        the latest. Without a current attempt it is the first, unless a rewind or
        resume removed node rows of this run (None: the store counts)."""
        loaded = self.run.nodes.get(key)
        if loaded is not None and loaded.attempt is not None:
            return loaded.attempt.number + 1
        return None if self.run.reopened else 1

    def dispatch(
        self,
        node: Node,
        iteration: int,
        reason: str,
        *,
        failures: int | None = None,
        lost: int | None = None,
        cache_key: str | None = None,
    ) -> None:
        if self.budget is not None and parks(self, node, iteration, reason, failures, lost):
            return
        scope = node.cache.scope if cache_key is not None and node.cache is not None else None
        key = (node.id, iteration)
        self.actions.append(
            Dispatch(
                node.id,
                iteration,
                node.kind,
                node.timeout_s,
                reason,
                failures,
                lost,
                cache_key,
                scope,
                number=self._number(key),
                queue=node.queue,
            )
        )
        old = self.states.get(key) or NodeView(node.id, iteration, NodeStatus.QUEUED)
        self.states[key] = replace(
            old,
            status=NodeStatus.QUEUED,
            next_at=None,
            failures=old.failures if failures is None else failures,
            lost=old.lost if lost is None else lost,
        )
        self.wakes.append(self.now + self.config.redispatch_after_s)

    def watch_attempt(self, node: Node, st: NodeView) -> None:
        a = st.attempt
        if a is None:
            self.dispatch(node, st.iteration, "start")
            return
        if a.state is AttemptState.QUEUED:
            due = a.dispatched_at + self.config.redispatch_after_s
            if self.now >= due or a.dispatched_at < self.config.intact_since:
                self.actions.append(Redispatch(a.attempt_id, node.id, st.iteration))
                due = self.now + self.config.redispatch_after_s
            self.wakes.append(due)
            if a.deadline_at is not None:
                self.wakes.append(a.deadline_at)
        elif a.state is AttemptState.RUNNING:
            if a.deadline_at is not None and self.now >= a.deadline_at:
                error = {"code": "timeout", "message": f"step ran past its timeout of {node.timeout_s}s"}
                self.actions.append(EndAttempt(a.attempt_id, AttemptState.TIMED_OUT, error))
                self.attempt_failed(node, st, error)
            elif a.lease_expires_at is not None and self.now >= a.lease_expires_at:
                error = {"code": "lost", "message": "the worker stopped heartbeating (lease expired)"}
                self.actions.append(EndAttempt(a.attempt_id, AttemptState.LOST, error))
                if st.lost + 1 > self.config.max_lost:
                    self.set_node(
                        node,
                        st.iteration,
                        NodeStatus.FAILED,
                        "node.failed",
                        error={**error, "message": f"lost {st.lost + 1} workers in a row"},
                        lost=st.lost + 1,
                    )
                else:
                    self.dispatch(node, st.iteration, "lost", lost=st.lost + 1)
            else:
                for t in (a.deadline_at, a.lease_expires_at):
                    if t is not None:
                        self.wakes.append(t)
        elif a.state in (AttemptState.FAILED, AttemptState.TIMED_OUT):
            self.attempt_failed(node, st, a.error or {"message": "step failed"})
        elif a.state in (AttemptState.LOST, AttemptState.CANCELLED):
            self.dispatch(node, st.iteration, "retry")

    def attempt_failed(self, node: Node, st: NodeView, error: Mapping[str, Any]) -> None:
        failures = st.failures + 1
        delay = retry_delay(node.retry, failures)
        if delay is None:
            self.set_node(
                node,
                st.iteration,
                NodeStatus.FAILED,
                "node.failed",
                error=dict(error),
                failures=failures,
            )
        elif delay <= 0:
            self.dispatch(node, st.iteration, "retry", failures=failures)
        else:
            self.set_node(
                node,
                st.iteration,
                NodeStatus.BACKOFF,
                "node.retry_scheduled",
                payload={"delay_s": delay, "failures": failures},
                next_at=self.now + delay,
                failures=failures,
                error=dict(error),
            )
            self.wakes.append(self.now + delay)
