"""Sandboxes of a run and their diff reviews as the API returns them
(``/v1/runs/{run_id}/sandboxes``, a review's result)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from smithers.shared.api.model import Resource

ReviewStatus = Literal["required", "pending", "accepted", "rejected", "superseded", "reverted"]


class SandboxReview(Resource):
    """One review decision on a sandbox's patches."""

    accept: bool
    actor: str
    note: str | None
    decided_at: float


class Sandbox(Resource):
    """A sandbox step's record: status, review, manifest (patches with diffs) and reviews."""

    sandbox_id: str
    run_id: str
    node_id: str
    iteration: int
    attempt_id: str
    runtime: str
    image: str
    image_digest: str | None
    container_id: str | None
    limits: dict[str, Any]
    status: Literal["created", "running", "succeeded", "failed", "lost"]
    review_status: ReviewStatus | None
    bundle_path: str
    request_bytes: int | None
    result_bytes: int | None
    manifest: dict[str, Any] | None = Field(description="What the sandbox changed: patches with diffs.")
    error: dict[str, Any] | None
    created_at: float
    finished_at: float | None
    reviews: tuple[SandboxReview, ...]


class SandboxList(Resource):
    """A run's sandboxes in creation order."""

    sandboxes: tuple[Sandbox, ...]
