"""One small error hierarchy: every error carries a stable code and an HTTP status.

The gateway turns any :class:`SmithersError` into ``{"error": {"code", "message"}}``;
the CLI prints ``error: <message>`` and exits non-zero. Nothing else is ever shown to a
client, so messages must never contain SQL, secrets or stack traces.
"""

from __future__ import annotations

from typing import Any


class SmithersError(Exception):
    """Base class: ``code`` is stable (clients match on it), ``http_status`` maps it."""

    code = "error"
    http_status = 500
    details: dict[str, Any] | None = None  # more for the client (the gateway's "details")

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(SmithersError):
    """A run, node, workflow, grant or other resource does not exist."""

    code = "not_found"
    http_status = 404


class Conflict(SmithersError):
    """The request contradicts the current state (reused run id, wrong status, ...)."""

    code = "conflict"
    http_status = 409


class RevisionConflict(Conflict):
    """A run cannot move to another workflow revision: nodes that already ran are missing
    from it or changed kind; ``details["conflicts"]`` lists them."""

    code = "revision_conflict"

    def __init__(self, message: str, conflicts: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.details = {"conflicts": conflicts}


class InvalidInput(SmithersError):
    """Bad input from a caller: not JSON, wrong type, unknown field, bad id."""

    code = "invalid_input"
    http_status = 400


class PayloadTooLarge(InvalidInput):
    """A request body over the configured size."""

    code = "payload_too_large"
    http_status = 413


class Unauthorized(SmithersError):
    """No credential, or a credential that is expired, revoked or tampered with."""

    code = "unauthorized"
    http_status = 401


class Forbidden(SmithersError):
    """A valid credential without the scope (or ownership) the action needs."""

    code = "forbidden"
    http_status = 403


class RateLimited(SmithersError):
    """Too many requests of one kind from one caller."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after_s: int = 60) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # the Retry-After header of the 429


class InvalidWorkflow(SmithersError):
    """A workflow definition that cannot be registered (cycle, unknown dependency, ...)."""

    code = "invalid_workflow"
    http_status = 400


class UnknownWorkflow(NotFound):
    """A workflow name that is not registered in this deployment."""

    code = "unknown_workflow"


class StoreUnavailable(SmithersError):
    """The database cannot be reached or refused the operation."""

    code = "store_unavailable"
    http_status = 503


class MetricsUnavailable(SmithersError):
    """The gateway's metrics cannot be written or read (its multiprocess directory)."""

    code = "metrics_unavailable"
    http_status = 503


class BrokerUnavailable(SmithersError):
    """Redis (the broker and wake-up channel) cannot be reached."""

    code = "broker_unavailable"
    http_status = 503


class SandboxError(SmithersError):
    """A sandbox step could not run or its result could not be accepted."""

    code = "sandbox_error"
    http_status = 500


class BundleRejected(SandboxError):
    """A request or result bundle broke a bound or a path rule; the message names it."""

    code = "bundle_rejected"
    http_status = 422


class SandboxTimeout(SandboxError):
    """The container ran past its timeout and was killed."""

    code = "sandbox_timeout"


class SandboxOutOfMemory(SandboxError):
    """The container was killed by the kernel for exceeding its memory limit."""

    code = "sandbox_oom"
