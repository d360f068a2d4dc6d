"""Workflows of the fault harness. Every step body appends one line per execution (at
its start, so an execution cut short by a kill counts too) to the file named by
``input['executions']``: the harness counts re-executed step bodies from it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from smithers import StepContext, Workflow


def executed(ctx: StepContext) -> None:
    """Record this execution of the step body, then sleep ``input['sleep']`` seconds."""
    path = ctx.input.get("executions")
    if path:
        with Path(path).open("a") as fh:
            fh.write(f"{ctx.run_id} {ctx.node_id} {ctx.iteration} {ctx.attempt}\n")
    time.sleep(float(ctx.input.get("sleep", 0)))


# -- chain: a -> b -> c; c fails (no retries) when input['fail'] is set -----------------
chain = Workflow("f-chain")


@chain.task()
def a(ctx: StepContext) -> int:
    executed(ctx)
    return 1


@chain.task(after=[a])
def b(ctx: StepContext) -> int:
    executed(ctx)
    return int(ctx.outputs["a"]) + 1


@chain.task(after=[b])
def c(ctx: StepContext) -> int:
    executed(ctx)
    if ctx.input.get("fail"):
        raise RuntimeError("asked to fail")
    return int(ctx.outputs["b"]) + 1


# -- fan: root -> p0, p1, p2 -> join ---------------------------------------------------
fan = Workflow("f-fan")


@fan.task()
def root(ctx: StepContext) -> int:
    executed(ctx)
    return 10


for _k in range(3):

    @fan.task(f"p{_k}", after=[root])
    def part(ctx: StepContext) -> int:
        executed(ctx)
        return int(ctx.outputs["root"]) + int(ctx.node_id[1:])


@fan.task(after=[f"p{k}" for k in range(3)])
def join(ctx: StepContext) -> int:
    executed(ctx)
    return sum(int(v) for v in ctx.outputs.values())


# -- one slow step (the partition test) ------------------------------------------------
slow = Workflow("f-slow")


@slow.task()
def work(ctx: StepContext) -> dict[str, Any]:
    executed(ctx)
    return {"done": True}


# What each run ends as without faults: (status, output, {node: final node status}).
CHAIN_NODES = ("a", "b", "c")
FAN_NODES = ("root", "p0", "p1", "p2", "join")


def expected(workflow: str, run_input: dict[str, Any]) -> tuple[str, Any, dict[str, str]]:
    """The end state a run of the harness reaches when nothing goes wrong."""
    if workflow == "f-chain":
        if run_input.get("fail"):
            return "failed", None, {"a": "succeeded", "b": "succeeded", "c": "failed"}
        return "succeeded", {"c": 3}, dict.fromkeys(CHAIN_NODES, "succeeded")
    if workflow == "f-fan":
        return "succeeded", {"join": 33}, dict.fromkeys(FAN_NODES, "succeeded")
    if workflow == "f-slow":
        return "succeeded", {"work": {"done": True}}, {"work": "succeeded"}
    raise ValueError(workflow)
