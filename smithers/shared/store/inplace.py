"""A claim, and a step claimed where it is dispatched: a chain a worker runs in place.

When a worker's step commit makes exactly one step ready that the worker may run
itself (its queue, its kind, the chain's bound: :mod:`smithers.workers.step`), the
decision's dispatch writes that attempt already claimed by the worker: ``running``,
with a fresh claim token, its lease and deadline, its ``attempt.started`` event after
``attempt.queued``, and its node ``running``. That is one insert where a queued attempt
claimed afterwards was an insert, a read and two updates. The run's wake time is
lowered to the lease's end (or the step's deadline, if sooner), as a claim lowers it.

Fencing is a claim's: the run is locked, the attempt is created current in this
transaction (no other worker can hold it), and its result commits only under its token.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from smithers.shared.actions import Key, SetRun
from smithers.shared.status import AttemptState
from smithers.shared.store.tx import Tx

if TYPE_CHECKING:
    from smithers.shared.store.state import Message


@dataclass(frozen=True)
class Claim:
    """What a worker needs to run an attempt; ``claim_token`` is None until it is claimed."""

    attempt_id: str
    claim_token: str | None
    run_id: str
    workflow: str
    module_revision: str
    node_id: str
    iteration: int
    number: int
    input: dict[str, Any]
    deadline_at: float | None
    cache_key: str | None = None
    started_at: float | None = None

    def starting(self, now: float) -> Claim:
        """This attempt as started at ``now``, its deadline moved with it, if it is not
        claimed yet (a lazy claim): it starts when its step function is called, after
        the reads that come before (a claimed attempt's start is on record already)."""
        if self.claim_token is not None or self.started_at is None:
            return self
        deadline = None if self.deadline_at is None else self.deadline_at + (now - self.started_at)
        return replace(self, started_at=now, deadline_at=deadline)


def start_columns(
    tx: Tx, timeout_s: float | None, worker: str | None, started_at: float | None
) -> dict[str, Any]:
    """The attempt columns a start sets: a fresh claim token, the worker, the start time
    (``started_at``, else now) and the deadline counted from it."""
    start = tx.now if started_at is None else started_at
    return {
        "claim_token": str(uuid.uuid4()),
        "worker": worker,
        "started_at": start,
        "heartbeat_at": tx.now,
        "deadline_at": None if timeout_s is None else start + timeout_s,
    }


def emit_started(
    tx: Tx,
    run_id: str,
    node_id: str,
    iteration: int,
    attempt_id: str,
    number: int,
    worker: str | None,
    started_at: float,
    takeover: bool = False,
) -> None:
    """Queue the ``attempt.started`` event of a start (:func:`start_columns`)."""
    tx.emit(
        run_id,
        "attempt.started",
        node_id=node_id,
        iteration=iteration,
        attempt_id=attempt_id,
        payload={"number": number, "worker": worker, "takeover": takeover, "started_at": started_at},
    )


@dataclass
class InPlace:
    """A worker ready to run, in the transaction that commits its step, the one step its
    decision makes ready (see the module docstring). ``takes`` says, given that step's
    message and the run's module revision, the lease it takes it with, or None if it
    does not (it is then queued and sent as usual); ``run_input`` is the run's input
    (the worker's step is of the same run). :attr:`claim` is the attempt taken, once it is."""

    worker: str
    run_input: dict[str, Any]
    takes: Callable[[Message, str], float | None]
    claim: Claim | None = None
    due: float | None = None  # when the run is looked at again: the lease's end, or the deadline if sooner
    # the node executions the decisions of this commit wrote (None: one it cannot name)
    touched: set[Key] | None = field(default_factory=set)
    actions: list[Any] = field(default_factory=list)  # every action of those decisions
    row: dict[str, Any] | None = None  # the taken attempt's row as inserted

    def note(self, actions: Iterable[Any]) -> None:
        """Record the node executions a decision's ``actions`` write (see :attr:`touched`;
        the run row's own changes are read again anyway: :mod:`smithers.shared.store.kept`)."""
        for action in actions:
            self.actions.append(action)
            if self.touched is None:
                continue
            if isinstance(action, SetRun):
                continue
            node_id, iteration = getattr(action, "node_id", None), getattr(action, "iteration", None)
            if node_id is None or iteration is None:  # an attempt's end: named by its id alone
                self.touched = None
            else:
                self.touched.add((node_id, iteration))

    def offer(
        self, tx: Tx, message: Message, revision: str, cache_key: str | None, timeout_s: float | None
    ) -> dict[str, Any] | None:
        """The claimed columns of ``message``'s new attempt if the worker takes it (and
        :attr:`claim` set), else None. Its ``attempt.started`` event is queued by
        :meth:`started`, after the dispatch's ``attempt.queued``."""
        if self.claim is not None:
            return None
        lease = self.takes(message, revision)
        if lease is None:
            return None
        values = start_columns(tx, timeout_s, self.worker, None)
        values.update(state=AttemptState.RUNNING.value, lease_expires_at=tx.now + lease)
        self.claim = Claim(
            attempt_id=message.attempt_id,
            claim_token=values["claim_token"],
            run_id=message.run_id,
            workflow=message.workflow,
            module_revision=revision,
            node_id=message.node_id,
            iteration=message.iteration,
            number=message.number,
            input=self.run_input,
            deadline_at=values["deadline_at"],
            cache_key=cache_key,
            started_at=values["started_at"],
        )
        self.due = values["lease_expires_at"]
        if values["deadline_at"] is not None:
            self.due = min(self.due, values["deadline_at"])
        return values

    def started(self, tx: Tx) -> None:
        """Queue the taken attempt's ``attempt.started`` event."""
        c = self.claim
        assert c is not None and c.started_at is not None
        emit_started(tx, c.run_id, c.node_id, c.iteration, c.attempt_id, c.number, self.worker, c.started_at)
