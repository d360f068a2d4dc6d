"""Workflows of the dynamic fan-out tests (tests/integration/test_fanout.py). Side
effects go to the file named by input['effects']: one line per item's start and end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from smithers import CachePolicy, StepContext, Workflow


def _note(ctx: StepContext, what: str) -> None:
    path = ctx.input.get("effects")
    if path:
        with Path(path).open("a") as fh:
            fh.write(f"{what} {ctx.index} {ctx.attempt} {time.time():.6f}\n")


mapped = Workflow("t-map")


@mapped.task()
def fetch(ctx: StepContext) -> dict[str, Any]:
    return {"items": list(range(int(ctx.input["n"])))}


@mapped.map(over=fetch, key="items", max_width=30, concurrency=3, retries=2, retry_delay_s=0.1)
def square(ctx: StepContext) -> dict[str, Any]:
    _note(ctx, "start")
    time.sleep(float(ctx.input.get("sleep", 0.05)))
    if ctx.index == ctx.input.get("flaky") and ctx.attempt == 1:
        _note(ctx, "fail")
        raise RuntimeError(f"item {ctx.index} fails its first attempt")
    _note(ctx, "end")
    return {"index": ctx.index, "square": ctx.item * ctx.item}


@mapped.task(after=[square])
def total(ctx: StepContext) -> dict[str, Any]:
    results = ctx.outputs["square"]
    return {"indexes": [r["index"] for r in results], "squares": [r["square"] for r in results]}


cached = Workflow("t-map-cached")


@cached.task("fetch")
def fetch_given(ctx: StepContext) -> list[str]:
    # read from a file, not the input: an item's cache key covers the run's input
    return Path(ctx.input["words"]).read_text().split()


@cached.map(over=fetch_given, cache=CachePolicy(scope="workflow"))
def shout(ctx: StepContext) -> str:
    _note(ctx, f"shout:{ctx.item}")
    return str(ctx.item).upper()
