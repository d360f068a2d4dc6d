"""Workflows measured by bench/engine.py."""

from __future__ import annotations

import time

from smithers.shared import StepContext, Workflow

seq40 = Workflow("b-seq40")
for i in range(40):

    @seq40.task(f"s{i:02d}", after=[f"s{i - 1:02d}"] if i else [])
    def sleep10(ctx: StepContext) -> list[float]:
        start = time.time()
        time.sleep(0.010)
        return [start, time.time()]  # the body's span: hops are measured between bodies


one = Workflow("b-one")


@one.task()
def noop(ctx: StepContext) -> int:
    return 1


wide = Workflow("b-wide")


@wide.task()
def fan(ctx: StepContext) -> int:
    return 1


for i in range(1000):

    @wide.task(f"w{i:04d}", after=[fan])
    def leaf(ctx: StepContext) -> int:
        return 1


@wide.task(after=[f"w{i:04d}" for i in range(1000)])
def gather(ctx: StepContext) -> int:
    return len(ctx.outputs)
