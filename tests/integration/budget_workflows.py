"""Workflows of the budget tests (tests/integration/test_budgets.py): steps that report
what they spend, a ceiling the chain runs past, and a cached step that costs nothing."""

from __future__ import annotations

from typing import Any

from smithers import Budget, CachePolicy, StepContext, Workflow

spender = Workflow("t-budget", budget=Budget(tokens=250))


@spender.task(retries=1, retry_delay_s=0)
def plan(ctx: StepContext) -> dict[str, Any]:
    ctx.spend(tokens_in=60, tokens_out=40, cost=0.01)  # spent before it fails: it counts
    if ctx.attempt == 1:
        raise RuntimeError("the model timed out")
    return {"plan": "three parts"}


@spender.task(after=[plan])
def draft(ctx: StepContext) -> str:
    ctx.spend(tokens_in=100, tokens_out=50, cost=0.02)
    return "draft"


@spender.task(after=[draft])
def polish(ctx: StepContext) -> str:
    ctx.spend(tokens_in=10)
    ctx.spend(tokens_out=10, cost=0.005)  # reports add up
    return "polished"


cached = Workflow("t-budget-cache", budget=Budget(tokens=1000, cost=1.0))


@cached.task(cache=CachePolicy(scope="workflow", version="1"))
def think(ctx: StepContext) -> dict[str, int]:
    ctx.spend(tokens_in=5, tokens_out=5, cost=0.6)
    return {"answer": 42}


@cached.task(after=[think])
def report(ctx: StepContext) -> str:
    ctx.spend(cost=0.1)
    return f"the answer is {ctx.outputs['think']['answer']}"


fan = Workflow("t-budget-fan", budget=Budget(tokens=100))


@fan.task()
def gather(ctx: StepContext) -> str:
    ctx.spend(tokens_in=100)
    return "sources"


@fan.task(after=[gather])
def left(ctx: StepContext) -> str:
    return "left"


@fan.task(after=[gather])
def right(ctx: StepContext) -> str:
    return "right"
