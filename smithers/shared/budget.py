"""Budgets: what a run may spend (ceilings) and what it spent (pure; no I/O).

A step reports what it spent through its context (``ctx.spend(tokens_in=...,
tokens_out=..., cost=...)``); the worker stores it with the attempt, so a run's spending
is the sum over every attempt that ran, failed ones and ones a rewind later discarded
included (that money is gone). A cached attempt costs nothing and is counted apart.

A workflow declares ceilings (``Workflow(..., budget=Budget(tokens=..., cost=...))``) and
a launch may override them (``"budget": {"tokens": ...}`` in the launch body; a key set
to null removes that ceiling). Before the decision dispatches a step (its first attempt,
a retry, or a re-dispatch after a lost worker) it checks the ceilings against the run's
spending: once one is reached the step is not dispatched; it is parked (node status
``over_budget``) with a pending approval that asks to raise the ceiling. Approving it
with a payload ``{"tokens": ..., "cost": ...}`` (the new ceilings) resumes the step;
denying it fails the step with ``budget_exceeded`` (and so the run, unless the node
continues on failure).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smithers.shared.errors import InvalidInput, InvalidWorkflow

MAX_TOKENS = 10**15  # a bound on one report and on a ceiling, so sums stay exact integers
MAX_COST = 1e12
BUDGET_DENIED = "budget_exceeded"  # the error code of a step whose raise was denied

# The payload of an approval that raises a parked run's ceilings: the new ceilings.
RAISE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "New ceilings",
    "properties": {
        "tokens": {"type": "integer", "minimum": 0, "description": "tokens in + out for the whole run"},
        "cost": {"type": "number", "minimum": 0, "description": "cost for the whole run"},
    },
    "additionalProperties": False,
}


def _tokens(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        raise InvalidInput(f"{what} must be an integer from 0 to {MAX_TOKENS}")
    return int(value)


def _cost(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number from 0 to {MAX_COST:g}")
    if not 0 <= value <= MAX_COST:
        raise InvalidInput(f"{what} must be a finite number from 0 to {MAX_COST:g}")
    return float(value)


@dataclass(frozen=True)
class Budget:
    """Ceilings on a run's spending: ``tokens`` (in + out) and ``cost``; None: no ceiling."""

    tokens: int | None = None
    cost: float | None = None

    def __post_init__(self) -> None:
        try:
            if self.tokens is not None:
                _tokens(self.tokens, "budget tokens")
            if self.cost is not None:
                object.__setattr__(self, "cost", _cost(self.cost, "budget cost"))
        except InvalidInput as exc:
            raise InvalidWorkflow(exc.message) from None

    @property
    def empty(self) -> bool:
        """True when it sets no ceiling at all."""
        return self.tokens is None and self.cost is None

    def to_json(self) -> dict[str, Any]:
        """``{"tokens": ..., "cost": ...}`` (None where there is no ceiling)."""
        return {"tokens": self.tokens, "cost": self.cost}

    def merged(self, changes: Mapping[str, Any]) -> Budget:
        """These ceilings with those ``changes`` names replaced (checked; a None value
        removes that ceiling); raises InvalidInput naming a bad key or value."""
        if not isinstance(changes, Mapping):
            raise InvalidInput("budget must be an object with tokens and/or cost")
        unknown = sorted(set(changes) - {"tokens", "cost"})
        if unknown:
            raise InvalidInput(f"budget.{unknown[0]} is not a ceiling (tokens, cost)")
        tokens, cost = self.tokens, self.cost
        if "tokens" in changes:
            raw = changes["tokens"]
            tokens = None if raw is None else _tokens(raw, "budget.tokens")
        if "cost" in changes:
            raw = changes["cost"]
            cost = None if raw is None else _cost(raw, "budget.cost")
        return Budget(tokens, cost)

    @classmethod
    def from_json(cls, value: Any) -> Budget | None:
        """The stored ceilings (``runs.budget``), None when the run has none."""
        if not isinstance(value, Mapping):
            return None
        found = cls(value.get("tokens"), value.get("cost"))
        return None if found.empty else found


@dataclass(frozen=True)
class Spent:
    """What a run spent: the sums over its attempts that reported spending
    (``attempts``), and how many of its attempts were cache hits (``cached``: they
    cost nothing and are counted apart)."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    attempts: int = 0
    cached: int = 0

    @property
    def tokens(self) -> int:
        """Tokens in and out together (what a ``tokens`` ceiling bounds)."""
        return self.tokens_in + self.tokens_out

    def to_json(self) -> dict[str, Any]:
        """The run's spending as the gateway and the CLI show it."""
        return {
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "tokens": self.tokens,
            "cost": self.cost,
            "attempts": self.attempts,
            "cached_attempts": self.cached,
        }


def exceeded(budget: Budget | None, spent: Spent) -> tuple[str, ...]:
    """The ceilings ``spent`` has reached (``"tokens"``, ``"cost"``): a step is covered,
    and may be dispatched, only while this is empty."""
    if budget is None:
        return ()
    over = []
    if budget.tokens is not None and spent.tokens >= budget.tokens:
        over.append("tokens")
    if budget.cost is not None and spent.cost >= budget.cost:
        over.append("cost")
    return tuple(over)


def raise_spec(
    node_id: str, budget: Budget, spent: Spent, over: tuple[str, ...], reason: str
) -> dict[str, Any]:
    """The declaration stored with the approval that asks to raise the ceilings (the
    shape of :meth:`smithers.shared.approval.ApprovalSpec.to_json`, plus what the approver
    needs to decide and the parked dispatch's ``reason``)."""
    used = {"tokens": f"{spent.tokens} tokens", "cost": f"cost {spent.cost:g}"}
    ceiling = {"tokens": f"{budget.tokens} tokens", "cost": f"cost {budget.cost}"}
    reached = ", ".join(f"{used[k]} of {ceiling[k]}" for k in over)
    return {
        "description": f"The run's budget is spent ({reached}): raise it to run {node_id!r}?",
        "show": [],
        "schema": RAISE_SCHEMA,
        "options": [],
        "default": None,
        "timeout_at": None,
        "budget": {"ceilings": budget.to_json(), "spent": spent.to_json(), "exceeded": list(over)},
        "reason": reason,
    }


class SpendMeter:
    """What one attempt reported spending (``ctx.spend``); a step may report many times,
    the reports add up. Not thread-safe: a step reports from its own thread."""

    def __init__(self) -> None:
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost = 0.0
        self.reported = False

    def add(self, tokens_in: int = 0, tokens_out: int = 0, cost: float = 0.0) -> None:
        """Add one report; raises InvalidInput for a negative or non-numeric amount."""
        self.tokens_in = _tokens(self.tokens_in + _tokens(tokens_in, "tokens_in"), "tokens_in in total")
        self.tokens_out = _tokens(self.tokens_out + _tokens(tokens_out, "tokens_out"), "tokens_out in total")
        self.cost = _cost(self.cost + _cost(cost, "cost"), "cost in total")
        self.reported = True
