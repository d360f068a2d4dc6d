"""Retry, backoff and cache policies: plain data and pure functions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from smithers.shared.errors import InvalidWorkflow

Backoff = Literal["fixed", "exponential"]
CacheScope = Literal["run", "workflow", "global"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failed attempt is retried and how long to wait in between.

    ``retries`` counts retries after the first attempt. The delay before retry ``n``
    (1-based) is ``delay_s`` for fixed backoff and ``delay_s * 2**(n-1)`` for
    exponential backoff, capped at ``max_delay_s`` either way.
    """

    retries: int = 0
    backoff: Backoff = "exponential"
    delay_s: float = 1.0
    max_delay_s: float = 60.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise InvalidWorkflow("retries must be >= 0")
        if self.backoff not in ("fixed", "exponential"):
            raise InvalidWorkflow(f"backoff must be fixed or exponential, not {self.backoff!r}")
        if self.delay_s < 0 or self.max_delay_s < 0:
            raise InvalidWorkflow("retry delays must be >= 0")


def retry_delay(policy: RetryPolicy, failures: int) -> float | None:
    """Seconds to wait before the next attempt after ``failures`` failed ones.

    Returns None when the retry budget is spent and the node must fail.
    """
    if failures > policy.retries:
        return None
    exponent = 0 if policy.backoff == "fixed" else max(failures - 1, 0)
    delay = policy.delay_s * (2**exponent)
    return float(min(delay, policy.max_delay_s))


@dataclass(frozen=True)
class CachePolicy:
    """Reuse a node's output: within a run, across runs of a workflow, or globally.

    ``ttl_ms`` bounds staleness (None: no expiry); ``version`` must change whenever
    prompt, model, tool behaviour or output semantics change.
    """

    scope: CacheScope = "run"
    ttl_ms: int | None = None
    version: str = "1"

    def __post_init__(self) -> None:
        if self.scope not in ("run", "workflow", "global"):
            raise InvalidWorkflow(f"cache scope must be run, workflow or global: {self.scope!r}")
        if self.ttl_ms is not None and self.ttl_ms <= 0:
            raise InvalidWorkflow("cache ttl_ms must be > 0")


def cache_key(policy: CachePolicy, *, run_id: str, workflow: str, node_id: str, resolved_input: Any) -> str:
    """SHA-256 of the scope's identity, the node, its resolved input and the version.

    The identity is the run id for ``run`` scope, the workflow name for ``workflow``
    scope and nothing for ``global`` scope (so two workflows with a node of the same id
    and input share rows). Bumping ``version`` changes every key of the node.
    """
    identity = {"run": run_id, "workflow": workflow, "global": ""}[policy.scope]
    material = json.dumps(
        [policy.scope, identity, node_id, policy.version, resolved_input],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(material.encode()).hexdigest()
