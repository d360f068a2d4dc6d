"""hello: a few tasks with a fan-out and a fan-in.

greet ──┬── shout ──┐
        ├── count ──┼── summary
        └── reverse ┘
"""

from __future__ import annotations

import time
from typing import Any

from smithers import StepContext, Workflow

wf = Workflow("hello", version="1", description="fan-out and fan-in over a greeting")


@wf.task()
def greet(ctx: StepContext) -> dict[str, Any]:
    name = str(ctx.input.get("name", "world"))
    return {"greeting": f"hello, {name}"}


@wf.task(after=[greet])
def shout(ctx: StepContext) -> str:
    time.sleep(0.2)
    return str(ctx.outputs["greet"]["greeting"]).upper() + "!"


@wf.task(after=[greet])
def count(ctx: StepContext) -> int:
    time.sleep(0.2)
    return len(str(ctx.outputs["greet"]["greeting"]))


@wf.task(after=[greet])
def reverse(ctx: StepContext) -> str:
    time.sleep(0.2)
    return str(ctx.outputs["greet"]["greeting"])[::-1]


@wf.task(after=[shout, count, reverse], retries=2, retry_delay_s=0.5)
def summary(ctx: StepContext) -> dict[str, Any]:
    return {
        "shout": ctx.outputs["shout"],
        "length": ctx.outputs["count"],
        "reversed": ctx.outputs["reverse"],
    }
