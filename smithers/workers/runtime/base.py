"""The shape every sandbox runtime has, so the worker does not care which one it drives."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from smithers.shared.sandbox import SandboxSpec

__all__ = ["ContainerOutcome", "LiveAttempts", "OnStarted", "SandboxRuntime"]

OnStarted = Callable[[str, str], None]
"""Called once the container runs, with its id and its image digest."""

LiveAttempts = Callable[[Collection[str]], set[str]]
"""Given attempt ids, those that are still running under a live lease (the store says)."""


@dataclass(frozen=True)
class ContainerOutcome:
    """What happened to one sandbox container.

    ``exit_code`` is the step's (the exec'd command's); ``duration_s`` runs from the
    step's start to its exit; ``log_bytes`` counts everything the step wrote to stdout
    and stderr, of which at most the runtime's ``max_log_bytes`` are kept in
    ``result/logs.txt``.
    """

    container_id: str
    image_digest: str
    exit_code: int
    oom_killed: bool
    duration_s: float
    log_bytes: int


class SandboxRuntime(Protocol):
    """Runs one sandbox step to completion and removes what it created."""

    name: str
    worker_id: str

    def ping(self) -> None:
        """Raise :class:`smithers.shared.errors.SandboxError` unless the engine answers."""

    def remove_orphans(self, scope: str, live: LiveAttempts, worker_id: str | None = None) -> int:
        """Remove the sandboxes of deployment ``scope`` whose attempt is not ``live``,
        and those ``worker_id`` started."""

    def run(
        self,
        spec: SandboxSpec,
        sandbox_dir: Path,
        labels: Mapping[str, str],
        secret_values: Mapping[str, str],
        on_started: OnStarted | None = None,
    ) -> ContainerOutcome:
        """Run ``spec`` on ``sandbox_dir/request``; fill ``sandbox_dir/result``."""

    def close(self) -> None:
        """Release the connection to the engine."""
