"""Fan-outs of 100 to 10,000 leaves, measured by bench/fanout.py (a module of their own:
the 10,000-wide graph would add to every process's memory and start-up in the other
benchmarks)."""

from __future__ import annotations

from smithers.shared import StepContext, Workflow


def fan_out_in(name: str, width: int) -> Workflow:
    """A run of ``width`` one-step leaves between a first step and a fan-in (width + 2 steps)."""
    wf = Workflow(name)

    @wf.task()
    def fan(ctx: StepContext) -> int:
        return 1

    for i in range(width):

        @wf.task(f"w{i:05d}", after=[fan])
        def leaf(ctx: StepContext) -> int:
            return 1

    @wf.task(after=[f"w{i:05d}" for i in range(width)])
    def gather(ctx: StepContext) -> int:
        return len(ctx.outputs)

    return wf


# bench/fanout.py's widths (the registry finds module-level workflows only)
wide100 = fan_out_in("b-wide100", 100)
wide500 = fan_out_in("b-wide500", 500)
wide2000 = fan_out_in("b-wide2000", 2000)
wide10000 = fan_out_in("b-wide10000", 10000)
