"""Workflows of the routing and flow-control tests (tests/integration/test_flow.py):
each step appends ``<label> <run id> <worker> <start> <end>`` to input['log']."""

from __future__ import annotations

import os
import time
from pathlib import Path

from smithers import StepContext, Workflow


def record(ctx: StepContext, label: str, sleep: float) -> dict[str, str]:
    """Sleep ``sleep`` seconds and log the step's span and the worker (T_WORKER) it ran on."""
    start = time.time()
    time.sleep(sleep)
    worker = os.environ.get("T_WORKER", "?")
    path = ctx.input.get("log")
    if path:
        with Path(path).open("a") as fh:
            fh.write(f"{label} {ctx.run_id} {worker} {start:.4f} {time.time():.4f}\n")
    return {"worker": worker}


# -- a node on its own queue: prep (steps) -> render (gpu) -> publish (steps) -------------
gpu = Workflow("t-gpu")


@gpu.task()
def prep(ctx: StepContext) -> dict[str, str]:
    return record(ctx, "prep", 0)


@gpu.task(after=[prep], queue="gpu")
def render(ctx: StepContext) -> dict[str, str]:
    return record(ctx, "render", 0)


@gpu.task(after=[render])
def publish(ctx: StepContext) -> dict[str, str]:
    return record(ctx, "publish", 0)


# -- one run per customer at a time ------------------------------------------------------
per_customer = Workflow("t-per-customer", concurrency=1, concurrency_key="customer")


@per_customer.task()
def serve(ctx: StepContext) -> dict[str, str]:
    """With input['first'], the run's first try of the step sleeps that long (a worker
    is killed meanwhile) and a later one, on whichever worker, returns at once."""
    sleep = float(ctx.input.get("sleep", 0))
    first = ctx.input.get("first")
    if first is not None:
        marker = Path(f"{ctx.input['log']}.{ctx.run_id}.began")
        if not marker.exists():
            marker.touch()
            record(ctx, "began", 0)
            sleep = float(first)
    return record(ctx, "serve", sleep)


# -- at most 2 starts a second per customer ----------------------------------------------
rated = Workflow("t-rated", rate_limit="2/s", rate_key="customer")


@rated.task()
def call_api(ctx: StepContext) -> dict[str, str]:
    return record(ctx, "call", 0)


# -- run priority: one quick step --------------------------------------------------------
ranked = Workflow("t-ranked")


@ranked.task()
def rank_step(ctx: StepContext) -> dict[str, str]:
    return record(ctx, "rank", 0)
