"""approval-demo: draft a release note, wait for a person, then publish it.

Launch it, then decide with ``smithers approve RUN review --note "ship it"`` (or
``--deny``); over REST, ``POST /v1/runs/RUN/approvals/review``.
"""

from __future__ import annotations

from typing import Any

from smithers import StepContext, Workflow

wf = Workflow("approval-demo", version="1", description="draft, human approval, publish")


@wf.task()
def draft(ctx: StepContext) -> dict[str, Any]:
    return {"note": f"Release {ctx.input.get('version', '0.1.0')}: fixes and improvements."}


wf.approval("review", after=[draft], description="Publish this release note?", show=[draft])


@wf.task(after=["review"])
def publish(ctx: StepContext) -> dict[str, Any]:
    decision = ctx.outputs["review"]
    return {"published": True, "approved_by": decision["decided_by"]}
