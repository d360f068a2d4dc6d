"""Workflows the console's browser tests drive (tests/ui/test_console.py)."""

from __future__ import annotations

from typing import Any

from smithers import SandboxSpec, StepContext, Workflow

# -- a release gated by an approval with a declared payload ----------------------------
release = Workflow("t-release", description="Build, approve with a channel, release.")


@release.task()
def build(ctx: StepContext) -> dict[str, Any]:
    return {"artifact": f"app-{ctx.input.get('version', '1.0.0')}.tar.gz", "tests_passed": 128}


release.approval(
    "ship",
    after=[build],
    owner="carol",
    fallback_owner="dave",
    escalate_after_s=3600,
    description="Ship this build to production?",
    show=[build],
    schema={
        "type": "object",
        "additionalProperties": False,
        "required": ["channel", "percent"],
        "properties": {
            "channel": {"type": "string", "enum": ["beta", "stable"], "title": "Channel"},
            "percent": {
                "type": "integer",
                "minimum": 1,
                "maximum": 100,
                "title": "Rollout percent",
                "description": "Share of users who get the build first.",
            },
        },
    },
)


@release.task(after=["ship"])
def publish(ctx: StepContext) -> dict[str, Any]:
    decision = ctx.outputs["ship"]
    return {"channel": decision["payload"]["channel"], "percent": decision["payload"]["percent"]}


# -- a sandbox step whose patch waits for review ----------------------------------------
# The browser test plays the sandbox worker's part through the store (claim, sandbox
# record, result), so it needs no Docker engine; the review and everything after it
# run through the gateway, the scheduler and a real step worker.
review = Workflow("t-review", description="Propose a patch in a sandbox, apply it once accepted.")
review.sandbox("propose", SandboxSpec(command=("true",)))


@review.task(after=["propose"])
def apply(ctx: StepContext) -> dict[str, Any]:
    return {"applied": True}


# -- an approval nobody answers: it escalates, then its declared default decides --------
expiring = Workflow("t-expiring")


@expiring.task()
def ask(ctx: StepContext) -> str:
    return "asked"


expiring.approval(
    "gate",
    after=[ask],
    owner="carol",
    fallback_owner="dave",
    escalate_after_s=1.0,
    options=("retry", "give-up"),
    timeout_s=2.5,
    default="deny",
)


# -- a wide fan-out and a loop, for the run page's graph --------------------------------
shape = Workflow("t-shape")


def _leaf(ctx: StepContext) -> int:
    return int(ctx.node_id[4:])


for k in range(12):
    shape.task(f"leaf{k}")(_leaf)


@shape.task(after=[f"leaf{k}" for k in range(12)])
def gather(ctx: StepContext) -> int:
    return len(ctx.outputs)


@shape.task()
def polish(ctx: StepContext) -> int:
    return ctx.iteration


shape.loop("refine", after=["gather"], body=["polish"], until=lambda ctx: False, max_iterations=3)


# -- a parent run whose node "sub" runs t-kid as a child run ---------------------------
kid = Workflow("t-kid", description="Counts one up: a child run of t-family.")


@kid.task()
def count(ctx: StepContext) -> dict[str, Any]:
    return {"n": int(ctx.input.get("n", 0)) + 1}


family = Workflow("t-family", description="Runs t-kid as its node sub, then reports.")
family.child("sub", workflow="t-kid", input=lambda ctx: {"n": 41})


@family.task(after=["sub"])
def report(ctx: StepContext) -> dict[str, Any]:
    return {"answer": ctx.outputs["sub"]["count"]["n"]}  # the child run output: {leaf: output}
