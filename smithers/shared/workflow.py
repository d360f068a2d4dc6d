"""The workflow model: a named, versioned graph of nodes declared in a Python module.

A module builds a :class:`Workflow` at import time::

    wf = Workflow("hello", version="1")

    @wf.task()
    def greet(ctx: StepContext) -> dict[str, str]:
        return {"greeting": f"hello {ctx.input['name']}"}

    wf.approval("ship", after=[greet], owner="alice", fallback_owner="bob")

Registration (:mod:`smithers.shared.registry`) validates it: duplicate ids are refused when
declared, unknown dependencies and cycles when the module is registered, each with an
error naming the node.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from smithers.shared.budget import Budget
from smithers.shared.errors import InvalidInput, InvalidWorkflow
from smithers.shared.flow import FlowPolicy, make_policy
from smithers.shared.policy import Backoff, CachePolicy, RetryPolicy

if TYPE_CHECKING:
    from smithers.shared.approval import ApprovalSpec
    from smithers.shared.context import DecisionContext, StepContext
    from smithers.shared.fanout import MapSpec, PickFn
    from smithers.shared.sandbox import SandboxSpec
    from smithers.shared.schedule import Schedule

NODE_ID = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
SIGNAL_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
WORKFLOW_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,127}$")
QUEUE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")  # a node's own queue (smithers.shared.flow)

StepFn = Callable[["StepContext"], Any]
ChooseFn = Callable[["DecisionContext"], str]
UntilFn = Callable[["DecisionContext"], bool]
ChildInputFn = Callable[["DecisionContext"], Any]
NodeRef = "str | Callable[..., Any]"
OnReject = Literal["fail", "skip"]


class NodeKind(StrEnum):
    """What a node does when it becomes ready."""

    TASK = "task"
    SANDBOX = "sandbox"
    APPROVAL = "approval"
    BRANCH = "branch"
    LOOP = "loop"
    TIMER = "timer"
    SIGNAL = "signal"
    CHILD = "child"


@dataclass(frozen=True)
class Node:
    """One node of a workflow graph; only the fields of its kind are used."""

    id: str
    kind: NodeKind
    after: tuple[str, ...] = ()
    fn: StepFn | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float | None = None
    heartbeat_timeout_s: float | None = None
    continue_on_fail: bool = False
    cache: CachePolicy | None = None
    secrets: tuple[str, ...] = ()
    loop: str | None = None  # the enclosing loop of a body node
    owner: str | None = None
    fallback_owner: str | None = None
    escalate_after_s: float | None = None
    choose: ChooseFn | None = None
    paths: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    body: tuple[str, ...] = ()
    until: UntilFn | None = None
    max_iterations: int = 1
    seconds: float = 0.0
    sandbox: SandboxSpec | None = None
    on_reject: OnReject = "fail"  # a sandbox node whose patches are rejected: fail or skip
    approval: ApprovalSpec | None = None  # what an approval shows and accepts
    signal: str | None = None  # the name a signal node waits for
    signal_schema: Mapping[str, Any] | None = None  # its payload's schema (smithers.shared.approval)
    signal_timeout_s: float | None = None  # fails with signal_timeout past it
    map: MapSpec | None = None  # a task run once per item of a list (smithers.shared.fanout)
    child_workflow: str | None = None  # the workflow a child node launches (smithers.shared.child)
    child_input: ChildInputFn | None = None  # its input from the parent's; None: the parent's input
    queue: str | None = None  # a task's own Celery queue (None: its kind's, smithers.shared.keys)

    @property
    def dispatched(self) -> bool:
        """True for nodes run by a worker (tasks and sandbox steps)."""
        return self.kind in (NodeKind.TASK, NodeKind.SANDBOX)


def _ref(ref: object) -> str:
    if isinstance(ref, str):
        return ref
    name = getattr(ref, "__smithers_node__", None) or getattr(ref, "__name__", None)
    if not isinstance(name, str):
        raise InvalidWorkflow(f"cannot name a dependency from {ref!r}")
    return name


def _refs(refs: Iterable[object] | None) -> tuple[str, ...]:
    return tuple(_ref(r) for r in (refs or ()))


def _decided_in_place(what: str, name: str, fn: Callable[..., Any]) -> None:
    """A branch's ``choose`` and a loop's ``until`` run inside a decision (no event
    loop, no waiting): an ``async def`` is refused here rather than read as truthy."""
    if inspect.iscoroutinefunction(fn):
        raise InvalidWorkflow(
            f"{what}: {name} must be a plain function (it runs in the decision);"
            " do the awaiting in an async task before it and read its output"
        )


class Workflow:
    """A named, versioned graph of nodes, built by a module at import time."""

    def __init__(
        self,
        name: str,
        version: str = "1",
        description: str = "",
        public_inputs: Iterable[str] = (),
        *,
        concurrency: int | None = None,
        concurrency_key: str | None = None,
        rate_limit: str | None = None,
        rate_key: str | None = None,
        budget: Budget | None = None,
    ) -> None:
        if not WORKFLOW_NAME.match(name):
            raise InvalidWorkflow(f"workflow name {name!r} must match {WORKFLOW_NAME.pattern}")
        # runs at once and starts per period, per input key (smithers.shared.flow)
        self.flow: FlowPolicy | None = make_policy(name, concurrency, concurrency_key, rate_limit, rate_key)
        self.name = name
        self.version = version
        self.description = description
        # input keys that look like credentials but hold none (``secret_ref``): accepted
        self.public_inputs: frozenset[str] = frozenset(public_inputs)
        # ceilings on what a run may spend (smithers.shared.budget); a launch may override them
        if budget is not None and not isinstance(budget, Budget):
            raise InvalidWorkflow(f"workflow {name!r}: budget must be a smithers.Budget")
        self.budget = budget
        self.nodes: dict[str, Node] = {}
        self.order: tuple[str, ...] = ()  # topological order, set by validate()
        self._upstream: dict[str, tuple[str, ...]] = {}  # node -> its ancestors, computed once
        self._executions: int | None = None  # executions(), computed once
        self._dependents: dict[str, tuple[str, ...]] | None = None  # dependents(), computed once
        self.schedules: list[Schedule] = []  # cron schedules (smithers.shared.schedule)

    def add(self, node: Node) -> Node:
        """Add a node; a duplicate or malformed id is refused here."""
        if not NODE_ID.match(node.id):
            raise InvalidWorkflow(f"workflow {self.name!r}: node id {node.id!r} must match {NODE_ID.pattern}")
        if node.id in self.nodes:
            raise InvalidWorkflow(f"workflow {self.name!r}: duplicate node id {node.id!r}")
        if node.timeout_s is not None and node.timeout_s <= 0:
            raise InvalidWorkflow(f"workflow {self.name!r}: node {node.id!r}: timeout_s must be > 0")
        self.nodes[node.id] = node
        return node

    def task(
        self,
        id: str | None = None,
        *,
        after: Iterable[object] | None = None,
        retries: int = 0,
        backoff: Backoff = "exponential",
        retry_delay_s: float = 1.0,
        max_retry_delay_s: float = 60.0,
        timeout_s: float | None = None,
        heartbeat_timeout_s: float | None = None,
        continue_on_fail: bool = False,
        cache: CachePolicy | None = None,
        secrets: Iterable[str] = (),
        queue: str | None = None,
    ) -> Callable[[StepFn], StepFn]:
        """Decorator: declare a Python function as a task node (id defaults to its name).

        ``queue``: the Celery queue its steps go to (default ``steps``), for workers
        started with ``--queues`` naming it (GPU hosts, credentialed hosts)."""
        if queue is not None and (not isinstance(queue, str) or not QUEUE_NAME.match(queue)):
            raise InvalidWorkflow(f"task {id!r}: queue must match {QUEUE_NAME.pattern}")
        if queue == "sandbox":
            raise InvalidWorkflow(f"task {id!r}: the sandbox queue is for sandbox nodes")

        def register(fn: StepFn) -> StepFn:
            node_id = id or str(getattr(fn, "__name__", ""))
            self.add(
                Node(
                    id=node_id,
                    kind=NodeKind.TASK,
                    after=_refs(after),
                    fn=fn,
                    retry=RetryPolicy(retries, backoff, retry_delay_s, max_retry_delay_s),
                    timeout_s=timeout_s,
                    heartbeat_timeout_s=heartbeat_timeout_s,
                    continue_on_fail=continue_on_fail,
                    cache=cache,
                    secrets=tuple(secrets),
                    queue=queue,
                )
            )
            fn.__smithers_node__ = node_id  # type: ignore[attr-defined]
            return fn

        return register

    def map(
        self,
        id: str | None = None,
        *,
        over: object,
        key: str | None = None,
        pick: PickFn | None = None,
        max_width: int = 1_000,
        concurrency: int | None = None,
        after: Iterable[object] | None = None,
        retries: int = 0,
        backoff: Backoff = "exponential",
        retry_delay_s: float = 1.0,
        max_retry_delay_s: float = 60.0,
        timeout_s: float | None = None,
        heartbeat_timeout_s: float | None = None,
        continue_on_fail: bool = False,
        cache: CachePolicy | None = None,
        secrets: Iterable[str] = (),
    ) -> Callable[[StepFn], StepFn]:
        """Decorator: a task run once per item of the list in ``over``'s output
        (``output[key]``, or ``pick(output)``), each item reading ``ctx.item`` and
        ``ctx.index``; the node's output is the list of the items' outputs in index order.

        More than ``max_width`` items fails the node (``map_too_wide``); at most
        ``concurrency`` items are in flight at once. Retries, timeouts and the cache key
        apply to each item alone. See :mod:`smithers.shared.fanout`.
        """
        from smithers.shared.fanout import make_spec  # noqa: PLC0415 (fanout imports errors only)

        source = _ref(over)
        declared = self.task(
            id,
            after=(source, *(r for r in _refs(after) if r != source)),
            retries=retries,
            backoff=backoff,
            retry_delay_s=retry_delay_s,
            max_retry_delay_s=max_retry_delay_s,
            timeout_s=timeout_s,
            heartbeat_timeout_s=heartbeat_timeout_s,
            continue_on_fail=continue_on_fail,
            cache=cache,
            secrets=secrets,
        )

        def register(fn: StepFn) -> StepFn:
            node_id = id or str(getattr(fn, "__name__", ""))
            spec = make_spec(
                node_id, source, key=key, pick=pick, max_width=max_width, concurrency=concurrency
            )
            declared(fn)
            self.nodes[node_id] = replace(self.nodes[node_id], map=spec)
            return fn

        return register

    def sandbox(
        self,
        id: str,
        spec: SandboxSpec,
        *,
        after: Iterable[object] | None = None,
        retries: int = 0,
        continue_on_fail: bool = False,
        cache: CachePolicy | None = None,
        on_reject: OnReject = "fail",
    ) -> Node:
        """Declare a sandbox node: a command run in a container by a sandbox worker.

        Patches it produces wait for review unless ``spec.auto_accept_diffs``; a
        rejection fails the node, or skips it with ``on_reject="skip"``.
        """
        if on_reject not in ("fail", "skip"):
            raise InvalidWorkflow(f"sandbox {id!r}: on_reject must be 'fail' or 'skip'")
        return self.add(
            Node(
                id=id,
                kind=NodeKind.SANDBOX,
                after=_refs(after),
                retry=RetryPolicy(retries),
                timeout_s=spec.timeout_s + 60.0,
                continue_on_fail=continue_on_fail,
                cache=cache,
                secrets=tuple(spec.secrets),
                sandbox=spec,
                on_reject=on_reject,
            )
        )

    def approval(
        self,
        id: str,
        *,
        after: Iterable[object] | None = None,
        owner: str | None = None,
        fallback_owner: str | None = None,
        escalate_after_s: float | None = None,
        continue_on_fail: bool = False,
        description: str = "",
        show: Iterable[object] | None = None,
        schema: Mapping[str, Any] | None = None,
        options: Iterable[str] = (),
        timeout_s: float | None = None,
        default: str | None = None,
    ) -> Node:
        """Declare an approval: waits for a person's approve or deny, with a note.

        ``description`` and the outputs of the upstream nodes in ``show`` are what the
        approver sees; ``schema`` (a JSON Schema subset) or ``options`` (strings) declare
        the decision's payload, checked by the console and the gateway; after
        ``timeout_s`` nobody answered and the approval is decided ``default``
        ("approve" or "deny"). See :mod:`smithers.shared.approval`.
        """
        from smithers.shared.approval import make_spec  # noqa: PLC0415 (approval imports errors only)

        if fallback_owner and not owner:
            raise InvalidWorkflow(f"approval {id!r}: a fallback_owner needs an owner")
        if escalate_after_s is not None and escalate_after_s <= 0:
            raise InvalidWorkflow(f"approval {id!r}: escalate_after_s must be > 0")
        spec = make_spec(
            id,
            description=description,
            show=_refs(show),
            schema=schema,
            options=options,
            timeout_s=timeout_s,
            default=default,
        )
        return self.add(
            Node(
                id=id,
                kind=NodeKind.APPROVAL,
                after=_refs(after),
                owner=owner,
                fallback_owner=fallback_owner,
                escalate_after_s=escalate_after_s,
                continue_on_fail=continue_on_fail,
                approval=spec,
            )
        )

    def branch(
        self,
        id: str,
        *,
        choose: ChooseFn,
        paths: Mapping[str, Iterable[object]],
        after: Iterable[object] | None = None,
    ) -> Node:
        """Declare a branch: ``choose(ctx)`` names one path; the other paths are skipped.

        Each path lists the first nodes of its sub-graph; they are made to depend on the
        branch. Nodes reachable only through skipped nodes are skipped too.
        """
        if not paths:
            raise InvalidWorkflow(f"branch {id!r} needs at least one path")
        _decided_in_place(f"branch {id!r}", "choose", choose)
        return self.add(
            Node(
                id=id,
                kind=NodeKind.BRANCH,
                after=_refs(after),
                choose=choose,
                paths={name: _refs(p) for name, p in paths.items()},
            )
        )

    def loop(
        self,
        id: str,
        *,
        body: Iterable[object],
        until: UntilFn,
        max_iterations: int,
        after: Iterable[object] | None = None,
    ) -> Node:
        """Declare a loop: runs ``body`` as iteration 0, 1, ... until ``until(ctx)`` holds.

        Body nodes depend only on each other; they see the loop's upstream outputs. The
        loop's output is ``{"iterations": n, "outputs": {body node: last output}}``.
        """
        if max_iterations < 1:
            raise InvalidWorkflow(f"loop {id!r}: max_iterations must be >= 1")
        _decided_in_place(f"loop {id!r}", "until", until)
        return self.add(
            Node(
                id=id,
                kind=NodeKind.LOOP,
                after=_refs(after),
                body=_refs(body),
                until=until,
                max_iterations=max_iterations,
            )
        )

    def timer(self, id: str, *, seconds: float, after: Iterable[object] | None = None) -> Node:
        """Declare a durable timer: succeeds ``seconds`` after it becomes ready."""
        if seconds < 0:
            raise InvalidWorkflow(f"timer {id!r}: seconds must be >= 0")
        return self.add(Node(id=id, kind=NodeKind.TIMER, after=_refs(after), seconds=seconds))

    def signal(
        self,
        id: str,
        *,
        name: str,
        after: Iterable[object] | None = None,
        schema: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        continue_on_fail: bool = False,
    ) -> Node:
        """Declare a node that waits for the signal ``name`` sent to the run
        (``POST /v1/runs/{run_id}/signals/{name}``, ``smithers signal``).

        A signal sent before the run reaches the node is kept: the node takes the first
        one not yet taken, in arrival order. Its output is ``{"signal_id", "payload",
        "sender", "received_at"}``; ``schema`` (the JSON Schema subset of
        :mod:`smithers.shared.approval`) checks the payload when it is sent. With
        ``timeout_s`` the node fails with ``signal_timeout`` if no signal came (no retry).
        """
        from smithers.shared.approval import MAX_SCHEMA_BYTES, check_schema  # noqa: PLC0415

        where = f"signal {id!r}"
        if not isinstance(name, str) or not SIGNAL_NAME.match(name):
            raise InvalidWorkflow(f"{where}: name must match {SIGNAL_NAME.pattern}")
        if timeout_s is not None and timeout_s <= 0:
            raise InvalidWorkflow(f"{where}: timeout_s must be > 0")
        if schema is not None:
            if len(repr(schema)) > MAX_SCHEMA_BYTES:
                raise InvalidWorkflow(f"{where}: schema is over {MAX_SCHEMA_BYTES} bytes")
            try:
                check_schema(schema)
            except InvalidInput as exc:
                raise InvalidWorkflow(f"{where}: {exc.message}") from None
        return self.add(
            Node(
                id=id,
                kind=NodeKind.SIGNAL,
                after=_refs(after),
                continue_on_fail=continue_on_fail,
                signal=name,
                signal_schema=dict(schema) if schema is not None else None,
                signal_timeout_s=timeout_s,
            )
        )

    def schedule(
        self,
        cron: str,
        *,
        tz: str = "UTC",
        input: Mapping[str, Any] | None = None,
        catch_up: int = 0,
        id: str | None = None,
    ) -> Schedule:
        """Declare a cron schedule: each tick of ``cron`` (read in ``tz``, an IANA time
        zone) launches one run with ``input``, however many schedulers run; ticks missed
        while every scheduler was down are skipped, or the latest ``catch_up`` of them
        fire. ``id`` names it in ``smithers schedules`` (default: derived from the cron,
        the time zone and the input). See :mod:`smithers.shared.schedule`."""
        from smithers.shared.schedule import Schedule  # noqa: PLC0415 (schedule imports errors only)

        made = Schedule(cron, tz=tz, input=dict(input or {}), catch_up=catch_up, id=id or "")
        if any(s.id == made.id for s in self.schedules):
            raise InvalidWorkflow(f"workflow {self.name!r}: duplicate schedule id {made.id!r}")
        self.schedules.append(made)
        return made

    def child(
        self,
        id: str,
        *,
        workflow: str,
        input: ChildInputFn | None = None,
        after: Iterable[object] | None = None,
        continue_on_fail: bool = False,
    ) -> Node:
        """Declare a child workflow node: it launches a run of the registered workflow
        ``workflow`` and waits for it to end (see :mod:`smithers.shared.child`).

        ``input(ctx)`` (a :class:`DecisionContext` with the node's upstream outputs)
        returns the child's input, a JSON object; without it the child gets the parent's
        input. The node's output is the child run's output; a child that fails or is
        cancelled fails the node (``child_failed``). The child's run id is derived from
        the parent's (run, node, iteration), so deciding the node again finds the same child.
        """
        if not isinstance(workflow, str) or not WORKFLOW_NAME.match(workflow):
            raise InvalidWorkflow(f"child {id!r}: workflow must match {WORKFLOW_NAME.pattern}")
        if input is not None and not callable(input):
            raise InvalidWorkflow(f"child {id!r}: input must be a function of the context or None")
        return self.add(
            Node(
                id=id,
                kind=NodeKind.CHILD,
                after=_refs(after),
                continue_on_fail=continue_on_fail,
                child_workflow=workflow,
                child_input=input,
            )
        )

    def launches_children(self) -> bool:
        """True when a node of this workflow is a child workflow node (its decisions read
        the children's states)."""
        return any(node.kind is NodeKind.CHILD for node in self.nodes.values())

    def waits_for_signals(self) -> bool:
        """True when a node of this workflow waits for a signal (its decisions read them)."""
        return any(node.kind is NodeKind.SIGNAL for node in self.nodes.values())

    def signal_node(self, name: str) -> Node | None:
        """The first node that waits for the signal ``name`` (its schema checks the
        payload), or None when no node of this workflow does."""
        for node_id in self.order or tuple(self.nodes):
            node = self.nodes[node_id]
            if node.kind is NodeKind.SIGNAL and node.signal == name:
                return node
        return None

    def validate(self) -> None:
        """Check the graph and compute its topological order; raise naming the node."""
        from smithers.shared.graph import validate_graph  # noqa: PLC0415 (graph imports this module)

        self.nodes, self.order = validate_graph(self.name, self.nodes)
        self._upstream, self._executions, self._dependents = {}, None, None
        for node in self.nodes.values():
            unknown = [n for n in (node.approval.show if node.approval else ()) if n not in self.nodes]
            if unknown:
                raise InvalidWorkflow(
                    f"workflow {self.name!r}: approval {node.id!r} shows unknown {unknown[0]!r}"
                )
            if node.map is not None and node.loop is not None:
                raise InvalidWorkflow(
                    f"workflow {self.name!r}: map {node.id!r} is in the body of loop {node.loop!r};"
                    " a map does not run inside a loop"
                )
            first = self.signal_node(node.signal) if node.signal is not None else None
            if first is not None and first.signal_schema != node.signal_schema:
                raise InvalidWorkflow(
                    f"workflow {self.name!r}: signal nodes {first.id!r} and {node.id!r} wait for"
                    f" {node.signal!r} with different schemas"
                )

    def upstream(self, node_id: str) -> tuple[str, ...]:
        """Every node ``node_id`` depends on, directly or not (its outputs are readable)."""
        found = self._upstream.get(node_id)
        if found is None:
            from smithers.shared.graph import ancestors  # noqa: PLC0415 (graph imports this module)

            found = self._upstream[node_id] = ancestors(self.nodes, node_id)
        return found

    def executions(self) -> int:
        """The most node executions a run of this workflow can have: one per node, a
        loop's body nodes once per iteration, a map once plus once per item up to its
        ``max_width`` (what a decision's cost grows with)."""
        if self._executions is None:
            total = 0
            for node in self.nodes.values():
                loop = self.nodes.get(node.loop) if node.loop is not None else None
                total += loop.max_iterations if loop is not None else 1
                total += node.map.max_width if node.map is not None else 0
            self._executions = total
        return self._executions

    def dependents(self, node_id: str) -> tuple[str, ...]:
        """Nodes that list ``node_id`` in ``after`` (in topological order)."""
        if self._dependents is None:  # one pass for every node: a fan-in asks for each of its leaves
            found: dict[str, list[str]] = {}
            for n in self.order:
                for dep in self.nodes[n].after:
                    found.setdefault(dep, []).append(n)
            self._dependents = {k: tuple(v) for k, v in found.items()}
        return self._dependents.get(node_id, ())
