"""Workflows of ``async def`` steps for tests/integration/test_async_steps.py.
Side effects go to the file named by input['effects']."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

from smithers import StepContext, Workflow

WIDTH = 20


def effect(ctx: StepContext, label: str) -> None:
    path = ctx.input.get("effects")
    if path:
        with Path(path).open("a") as fh:
            fh.write(f"{label}:{ctx.attempt}\n")


# -- a-fan: start -> 20 async steps, each awaiting input['sleep'] s -> join ---------------
fan = Workflow("a-fan")


@fan.task()
def start(ctx: StepContext) -> int:
    return WIDTH


def _waiter(k: int) -> None:
    @fan.task(f"w{k:02d}", after=[start])
    async def wait(ctx: StepContext) -> dict[str, Any]:
        began = time.time()
        await asyncio.sleep(float(ctx.input.get("sleep", 1.0)))
        return {
            "start": began,
            "end": time.time(),
            "pid": os.getpid(),
            "thread": threading.current_thread().name,
        }


for k in range(WIDTH):
    _waiter(k)


@fan.task(after=[f"w{k:02d}" for k in range(WIDTH)])
async def join(ctx: StepContext) -> list[Any]:
    return [ctx.outputs[f"w{k:02d}"] for k in range(WIDTH)]


# -- a-chain: one -> two -> three, async, each adding one ----------------------------------
chain = Workflow("a-chain")


@chain.task()
async def one(ctx: StepContext) -> int:
    await asyncio.sleep(0)
    return 1


@chain.task(after=[one])
async def two(ctx: StepContext) -> int:
    await asyncio.sleep(0)
    return int(ctx.outputs["one"]) + 1


@chain.task(after=[two])
async def three(ctx: StepContext) -> int:
    await asyncio.sleep(0)
    return int(ctx.output("one")) + int(ctx.outputs["two"])


# -- a-slow: awaits input['sleep'] s (timeout_s=1, one retry), recording its cancel ------
slow = Workflow("a-slow")


async def _sleep_noting_cancel(ctx: StepContext) -> str:
    effect(ctx, "start")
    try:
        await asyncio.sleep(float(ctx.input.get("sleep", 60)))
    except asyncio.CancelledError:
        effect(ctx, "cancelled")
        raise
    effect(ctx, "end")
    return "slept"


slow.task("slow_step", timeout_s=1.0, retries=1, retry_delay_s=0.1)(_sleep_noting_cancel)

long = Workflow("a-long")
long.task("long_step")(_sleep_noting_cancel)


# -- a-beating: heartbeat_timeout_s=2; attempt 1 awaits input['sleep'] s, beating every --
# 0.5 s unless input['beat'] is false; later attempts return at once ---------------------
beating = Workflow("a-beating")


@beating.task(heartbeat_timeout_s=2.0)
async def beating_step(ctx: StepContext) -> int:
    effect(ctx, "start")
    ends = time.monotonic() + float(ctx.input.get("sleep", 4))
    while ctx.attempt == 1 and time.monotonic() < ends:
        await asyncio.sleep(0.5)
        if ctx.input.get("beat", True):
            assert ctx.heartbeat()
    effect(ctx, "end")
    return ctx.attempt


# -- a-fails: raises from inside the coroutine --------------------------------------------
fails = Workflow("a-fails")


async def _ask_the_model(prompt: str) -> str:
    await asyncio.sleep(0)
    raise ValueError(f"the model refused {prompt!r}")


@fails.task()
async def failing_step(ctx: StepContext) -> str:
    return await _ask_the_model("plan")
