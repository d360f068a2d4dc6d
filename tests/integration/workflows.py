"""Workflows used by the integration tests. Side effects go to files named in input."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from smithers import CachePolicy, DecisionContext, StepContext, Workflow
from smithers.shared.errors import InvalidInput


def effect(ctx: StepContext, label: str | None = None) -> None:
    """Append one line per finished step to the file named by input['effects']."""
    path = ctx.input.get("effects")
    if path:
        with Path(path).open("a") as fh:
            fh.write(f"{label or ctx.node_id}:{ctx.iteration}\n")


# -- chain: a -> b -> c -> d -> e, each sleeping input['sleep'] seconds ------------------
chain = Workflow("t-chain")


def _chain_step(name: str, after: list[str]) -> None:
    @chain.task(name, after=after)
    def step(ctx: StepContext) -> dict[str, Any]:
        time.sleep(float(ctx.input.get("sleep", 0)))
        prev = [ctx.outputs[a]["value"] for a in after]
        effect(ctx)
        return {"value": (prev[0] if prev else 0) + 1}


for i, n in enumerate("abcde"):
    _chain_step(n, ["abcde"[i - 1]] if i else [])

# -- fan: root -> 6 parallel -> join -----------------------------------------------------
fan = Workflow("t-fan")


@fan.task()
def root(ctx: StepContext) -> int:
    effect(ctx)
    return 1


for k in range(6):

    @fan.task(f"p{k}", after=[root])
    def par(ctx: StepContext) -> int:
        time.sleep(0.05)
        effect(ctx)
        return int(ctx.node_id[1:]) + int(ctx.outputs["root"])


@fan.task(after=[f"p{k}" for k in range(6)])
def join(ctx: StepContext) -> int:
    effect(ctx)
    return sum(int(v) for v in ctx.outputs.values())


# -- retry: fails the first input['fail_times'] attempts ---------------------------------
retry = Workflow("t-retry")


@retry.task(retries=3, backoff="fixed", retry_delay_s=0.2)
def flaky(ctx: StepContext) -> dict[str, int]:
    if ctx.attempt <= int(ctx.input.get("fail_times", 0)):
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


# -- timeout: sleeps past its timeout; one retry, then the node fails --------------------
timeout = Workflow("t-timeout")


@timeout.task(timeout_s=1.0, retries=1, backoff="fixed", retry_delay_s=0.2)
def sleepy(ctx: StepContext) -> str:
    effect(ctx, f"start{ctx.attempt}")
    time.sleep(float(ctx.input.get("sleep", 5)))
    return "woke"


# -- approval with owners --------------------------------------------------------------
approval = Workflow("t-approval")


@approval.task()
def prepare(ctx: StepContext) -> str:
    return "ready"


approval.approval("gate", after=[prepare], owner="alice", fallback_owner="bob", escalate_after_s=1.0)


@approval.task(after=["gate"])
def ship(ctx: StepContext) -> dict[str, Any]:
    return {"by": ctx.outputs["gate"]["decided_by"]}


signalled = Workflow("t-signal")
CI_RESULT = {
    "type": "object",
    "properties": {"status": {"enum": ["green", "red"]}, "url": {"type": "string"}},
    "required": ["status"],
}


@signalled.task()
def before_ci(ctx: StepContext) -> str:
    time.sleep(float(ctx.input.get("sleep", 0)))
    return "ready"


signalled.signal("ci", name="ci.done", after=[before_ci], schema=CI_RESULT)


@signalled.task(after=["ci"])
def after_ci(ctx: StepContext) -> dict[str, Any]:
    got = ctx.outputs["ci"]
    return {"status": got["payload"]["status"], "sender": got["sender"], "signal_id": got["signal_id"]}


signal_timeout = Workflow("t-signal-timeout")
signal_timeout.signal("wait", name="never", timeout_s=1.0)


# -- branch, loop, timer ---------------------------------------------------------------
control = Workflow("t-control")


@control.task()
def classify(ctx: StepContext) -> dict[str, Any]:
    return {"size": int(ctx.input.get("size", 1))}


def _choose(ctx: DecisionContext) -> str:
    return "big" if ctx.outputs["classify"]["size"] > 10 else "small"


control.branch("route", after=[classify], choose=_choose, paths={"big": ["big"], "small": ["small"]})


@control.task()
def big(ctx: StepContext) -> str:
    return "big path"


@control.task()
def small(ctx: StepContext) -> str:
    return "small path"


@control.task()
def draft(ctx: StepContext) -> int:
    prev = ctx.previous.get("draft", 0)
    effect(ctx)
    return int(prev) + 1


def _good_enough(ctx: DecisionContext) -> bool:
    return int(ctx.outputs["draft"]) >= 3


control.loop("refine", after=["big", "small"], body=["draft"], until=_good_enough, max_iterations=5)
control.timer("pause", after=["refine"], seconds=0.5)


@control.task(after=["pause", "refine"])
def finish(ctx: StepContext) -> dict[str, Any]:
    return {"iterations": ctx.outputs["refine"]["iterations"], "fired": "fired_at" in ctx.outputs["pause"]}


# -- secret: a step that uses a secret by name ------------------------------------------
secret = Workflow("t-secret")


@secret.task(secrets=["SMITHERS_SECRET_TEST"])
def use_secret(ctx: StepContext) -> dict[str, Any]:
    value = ctx.secret("SMITHERS_SECRET_TEST")
    return {"length": len(value), "echo": f"value was {value}"}


# -- leaks: a step that logs its secret every way logging allows, and uses it as a key ---
leaks = Workflow("t-secret-leaks")


@leaks.task(secrets=["SMITHERS_SECRET_TEST"])
def leak_everywhere(ctx: StepContext) -> dict[str, Any]:
    import logging

    from celery.utils.log import get_task_logger

    value = ctx.secret("SMITHERS_SECRET_TEST")
    log = logging.getLogger("tests.leaks")
    log.warning("message %s", value)
    log.warning("message " + value)
    log.warning("mapping %(v)s", {"v": value})
    log.warning("extra", extra={"fields": {"token": value, "note": f"was {value}", value: 1}})
    log.warning("stack of %s", "the step", stack_info=True, extra={"fields": {"nested": [{"x": value}]}})
    try:
        raise RuntimeError(f"failed with {value}")
    except RuntimeError:
        log.exception("exception")
        log.error("exc_info", exc_info=True)
    get_task_logger("tests.leaks.task").warning("task logger %s", value)
    print(f"printed {value}")
    return {value: "the secret as a key", "nested": {f"k-{value}": 1}}


# -- outputs strict JSON cannot hold: the step fails, naming the field ------------------
bad_output = Workflow("t-bad-output")


@bad_output.task()
def unstorable(ctx: StepContext) -> dict[str, Any]:
    kinds = {"nan": float("nan"), "inf": float("inf"), "nul": "a\x00b", "surrogate": "\ud800",
             "big": 10**30, "nul_key": {"a\x00": 1}}  # fmt: skip
    return {"value": kinds[str(ctx.input["kind"])]}


# -- public inputs: keys that look like credentials but hold none, declared --------------
public = Workflow("t-public-inputs", public_inputs=["github_token_ref", "auth"])


@public.task()
def echo_input(ctx: StepContext) -> dict[str, Any]:
    return dict(ctx.input)


# -- cache policies ----------------------------------------------------------------------
def _cached_workflow(name: str, scope: str, version: str = "1", ttl_ms: int | None = None) -> Workflow:
    wf = Workflow(name)

    @wf.task("expensive", cache=CachePolicy(scope=scope, ttl_ms=ttl_ms, version=version))  # type: ignore[arg-type]
    def expensive(ctx: StepContext) -> dict[str, Any]:
        effect(ctx, f"{name}:expensive")
        return {"value": int(ctx.input.get("n", 0)) * 2}

    return wf


cache_run = Workflow("t-cache-run")


@cache_run.task(cache=CachePolicy(scope="run"))
def same_each_time(ctx: StepContext) -> int:
    effect(ctx)
    return int(ctx.input.get("n", 0)) + 100


cache_run.loop("again", body=["same_each_time"], until=lambda ctx: False, max_iterations=3)

cache_wf_a = _cached_workflow("t-cache-wf-a", "workflow")
cache_wf_b = _cached_workflow("t-cache-wf-b", "workflow")
cache_global_a = _cached_workflow("t-cache-global-a", "global")
cache_global_b = _cached_workflow("t-cache-global-b", "global")
cache_global_v2 = _cached_workflow("t-cache-global-v2", "global", version="2")
cache_ttl = _cached_workflow("t-cache-ttl", "workflow", ttl_ms=500)

# -- wide: 8 independent steps, each sleeping input['sleep'] seconds (I/O-bound) ---------
wide = Workflow("t-wide")

for k in range(8):

    @wide.task(f"w{k}")
    def waits(ctx: StepContext) -> int:
        time.sleep(float(ctx.input.get("sleep", 0)))
        return int(ctx.node_id[1:])


# -- sized: one step whose output is input['size'] characters ----------------------------
sized = Workflow("t-sized")


@sized.task()
def text(ctx: StepContext) -> str:
    return "x" * int(ctx.input.get("size", 0))


# -- lineage: steps and a branch read outputs of nodes they depend on indirectly --------
lineage = Workflow("t-lineage")


@lineage.task()
def origin(ctx: StepContext) -> dict[str, int]:
    return {"seed": int(ctx.input.get("seed", 1))}


@lineage.task(after=[origin])
def middle(ctx: StepContext) -> int:
    return int(ctx.outputs["origin"]["seed"]) * 10


def _by_origin(ctx: DecisionContext) -> str:
    return "odd" if ctx.output("origin")["seed"] % 2 else "even"  # a grandparent


lineage.branch("parity", after=[middle], choose=_by_origin, paths={"odd": ["odd"], "even": ["even"]})


@lineage.task()
def odd(ctx: StepContext) -> str:
    return "odd"


@lineage.task()
def even(ctx: StepContext) -> str:
    return "even"


@lineage.task(after=["odd", "even"])
def report(ctx: StepContext) -> dict[str, Any]:
    return {
        "origin": ctx.output("origin"),
        "middle": ctx.output("middle"),
        "even": ctx.output("even"),  # skipped: None
        "parents": sorted(ctx.outputs),
    }


@lineage.task()
def accumulate_step(ctx: StepContext) -> int:
    return int(ctx.previous.get("accumulate_step", 0)) + int(ctx.output("origin")["seed"])


def _accumulated(ctx: DecisionContext) -> bool:
    return int(ctx.outputs["accumulate_step"]) >= 3


lineage.loop("accumulate", after=["report"], body=["accumulate_step"], until=_accumulated, max_iterations=5)


@lineage.task(after=["accumulate"])
def done(ctx: StepContext) -> dict[str, Any]:
    try:
        ctx.output("accumulate_step")  # a loop body node: not upstream of a node after the loop
        body = "readable"
    except InvalidInput as exc:
        body = exc.message
    loop, origin = ctx.outputs["accumulate"], ctx.output("origin")
    return {"iterations": loop["iterations"], "seed": origin["seed"], "body": body}


# -- long chain: s0 -> ... -> s9; input['slow'] names a step whose first attempt sleeps slow_s
long_chain = Workflow("t-long-chain")


def _long_step(k: int) -> None:
    @long_chain.task(f"s{k}", after=[f"s{k - 1}"] if k else [])
    def step(ctx: StepContext) -> int:
        effect(ctx, f"start:{ctx.node_id}")
        if ctx.input.get("slow") == ctx.node_id and ctx.attempt == 1:
            time.sleep(float(ctx.input.get("slow_s", 0)))
        effect(ctx, f"end:{ctx.node_id}")
        return int(ctx.outputs[f"s{k - 1}"]) + 1 if k else 0


for _k in range(10):
    _long_step(_k)

# -- time kept (docs/workflows.md, "Timeouts, heartbeats and cancel") ---------------------
quick = Workflow("t-quick")


@quick.task()
def quick_step(ctx: StepContext) -> str:
    effect(ctx)
    return "done"


silent = Workflow("t-silent")


@silent.task(heartbeat_timeout_s=2.0)
def silent_step(ctx: StepContext) -> int:
    """Attempt 1 sleeps input['sleep'] seconds, heartbeating every input['beat'] seconds
    if given (else silent); later attempts return at once."""
    effect(ctx, f"start{ctx.attempt}")
    if ctx.attempt == 1:
        beat = ctx.input.get("beat")
        ends = time.monotonic() + float(ctx.input.get("sleep", 8))
        while time.monotonic() < ends:
            time.sleep(min(float(beat or 60), max(ends - time.monotonic(), 0)))
            if beat:
                ctx.heartbeat()
    effect(ctx, f"end{ctx.attempt}")
    return ctx.attempt


long = Workflow("t-long")


@long.task()
def long_step(ctx: StepContext) -> str:
    effect(ctx, "start")
    time.sleep(float(ctx.input.get("sleep", 60)))
    effect(ctx, "end")
    return "slept"


deaf = Workflow("t-deaf")


@deaf.task(timeout_s=1.0)
def deaf_step(ctx: StepContext) -> str:
    """Blocks the worker's interrupt signal, then sleeps: only a hard kill ends it."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    effect(ctx, "start")
    time.sleep(float(ctx.input.get("sleep", 30)))
    effect(ctx, "end")
    return "slept"


# -- child workflows: t-child-parent runs t-child-double as its node "sub" --------------
child_double = Workflow("t-child-double")


@child_double.task()
def double(ctx: StepContext) -> dict[str, Any]:
    time.sleep(float(ctx.input.get("sleep", 0)))
    if ctx.input.get("fail"):
        raise RuntimeError("the child's step failed")
    return {"doubled": ctx.input["n"] * 2}


child_parent = Workflow("t-child-parent")


@child_parent.task()
def prepare(ctx: StepContext) -> dict[str, Any]:
    return {"n": int(ctx.input.get("n", 1))}


def _sub_input(ctx: DecisionContext) -> dict[str, Any]:
    keep = {k: ctx.input[k] for k in ("sleep", "fail") if k in ctx.input}
    return {"n": ctx.outputs["prepare"]["n"], **keep}


child_parent.child("sub", workflow="t-child-double", input=_sub_input, after=[prepare])


@child_parent.task("report", after=["sub"])
def child_report(ctx: StepContext) -> dict[str, Any]:
    return {"got": ctx.outputs["sub"]["double"]["doubled"]}


child_orphan = Workflow("t-child-orphan")
child_orphan.child("lost", workflow="t-no-such-workflow")
# -- routing and flow control (docs/workflows.md, "Routing and flow control") -------------
from tests.integration.flow_workflows import gpu, per_customer, ranked, rated  # noqa: E402, F401
