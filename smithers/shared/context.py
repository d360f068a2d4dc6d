"""What a step function and a branch/loop predicate see when they run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from smithers.shared.errors import InvalidInput


@dataclass(frozen=True)
class StepContext:
    """Passed to a task function on a worker.

    ``outputs`` holds the outputs of the node's upstream nodes by node id (for a body
    node of a loop: its upstream body nodes in the same iteration, plus the loop's own
    upstream nodes); ``previous`` holds the body outputs of the previous iteration.
    """

    run_id: str
    node_id: str
    iteration: int
    attempt: int
    input: Mapping[str, Any]
    outputs: Mapping[str, Any]
    previous: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    heartbeat: Callable[[], bool] = field(default=lambda: True, repr=False)

    def secret(self, name: str) -> str:
        """The value of a secret the node declared; injected by the worker, never stored."""
        try:
            return self.secrets[name]
        except KeyError:
            raise InvalidInput(f"secret {name!r} is not declared by node {self.node_id!r}") from None


@dataclass(frozen=True)
class DecisionContext:
    """Passed to a branch's ``choose`` and a loop's ``until`` in the scheduler.

    For ``until``, ``outputs`` holds the body outputs of the iteration just finished.
    """

    run_id: str
    input: Mapping[str, Any]
    outputs: Mapping[str, Any]
    iteration: int = 0
