"""Runs as the API returns them (``/v1/runs``): a launch's result, a page of summaries, a
run with its nodes, attempts, outputs, revision, children and spending, and a migration."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic.config import JsonDict

from smithers.shared.api.model import Resource
from smithers.shared.status import AttemptState, NodeStatus, RunStatus

ANY: JsonDict = {"nullable": True, "description": "Any JSON value."}


class RunSummary(Resource):
    """A run without its input and output (``GET /v1/runs/{run_id}`` has them)."""

    run_id: str
    workflow: str
    workflow_version: str
    module_revision: str
    deployment_version: str
    status: RunStatus
    cancel_requested: bool
    created_at: float
    updated_at: float
    finished_at: float | None
    error: dict[str, Any] | None
    launched_by: str | None
    parent_run_id: str | None = Field(
        description="The run this one is a rerun, replay or child of (a child has parent_node_id)."
    )
    parent_node_id: str | None = Field(description="A child run: the parent's node that launched it.")
    parent_iteration: int | None = Field(description="A child run: that node execution's iteration.")
    last_seq: int = Field(description="The seq of the run's newest event.")
    status_reason: str | None = Field(
        description="Why a live run cannot move: `revision_unavailable` while no live scheduler"
        " or worker holds its module revision; null otherwise."
    )
    priority: int = Field(description="0..9, higher first (the launch's `priority`).")


class Run(RunSummary):
    """A run with its input and output."""

    input: dict[str, Any]
    output: Any = Field(json_schema_extra=ANY)


class LaunchWarning(Resource):
    """A warning of a launch: ``revision_unavailable`` when no live process holds the revision."""

    code: str
    message: str
    revision: str
    missing: tuple[str, ...]


class LaunchedRun(Run):
    """A run just launched (or the same launch repeated)."""

    warnings: tuple[LaunchWarning, ...] = Field(
        description="`revision_unavailable` when no live scheduler or worker holds the workflow's"
        " revision: the run stays queued until one starts."
    )


class RunPage(Resource):
    """One page of run summaries, newest first; ``next_cursor`` is null on the last page."""

    runs: tuple[RunSummary, ...]
    next_cursor: str | None
    feed_id: int = Field(description="Follow `/v1/events` from here to see every change after.")


class Node(Resource):
    """A node execution (run, node, iteration)."""

    node_id: str
    iteration: int
    kind: str
    status: NodeStatus
    failures: int
    lost: int
    current_attempt_id: str | None
    current_iteration: int
    next_at: float | None
    started_at: float
    finished_at: float | None
    error: dict[str, Any] | None


class Attempt(Resource):
    """One try of a node execution."""

    attempt_id: str
    run_id: str
    node_id: str
    iteration: int
    number: int
    state: AttemptState
    queue: str
    worker: str | None
    dispatched_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    lease_expires_at: float | None
    deadline_at: float | None
    error: dict[str, Any] | None
    cached: bool
    revision: str | None = Field(description="The module revision this attempt runs.")


class Output(Resource):
    """A node execution's stored output (redacted)."""

    node_id: str
    iteration: int
    value: Any = Field(json_schema_extra=ANY)


class RunRevision(Resource):
    """The run's module revision: held by a live scheduler and worker, and its stored graph."""

    revision: str
    workflow_version: str
    available: bool = Field(description="A live scheduler and a live worker hold it.")
    missing: tuple[Literal["scheduler", "worker"], ...]
    graph: dict[str, Any] | None = Field(
        description="The revision's graph as stored when first seen (nodes, kinds, edges, branch"
        " paths, loop bodies, condition names); null for a run from before revisions were stored."
    )


class ChildRun(Resource):
    """A child run a child node of the run launched."""

    run_id: str
    workflow: str
    status: RunStatus
    node_id: str
    iteration: int
    epoch: int = Field(
        description="0 for the node execution's first child; one more each time a rewind or"
        " resume ran the node again."
    )


class Ceilings(Resource):
    """A run's spending ceilings; null: no ceiling of that kind."""

    tokens: int | None
    cost: float | None


class Spent(Resource):
    """Summed over every attempt that ran: failed ones, retries and ones a rewind discarded
    included."""

    tokens_in: int
    tokens_out: int
    tokens: int = Field(description="tokens_in + tokens_out")
    cost: float
    attempts: int = Field(description="Attempts that reported spending.")
    cached_attempts: int = Field(description="Cache hits: they cost nothing.")


class NodeSpending(Resource):
    """What one node execution spent."""

    node_id: str
    iteration: int
    tokens_in: int
    tokens_out: int
    cost: float
    attempts: int


class RunSpending(Resource):
    """A run's ceilings (the workflow's, the launch's, or as an approval raised them; null:
    none), what it spent, and what each node execution spent."""

    ceilings: Ceilings | None
    spent: Spent
    by_node: tuple[NodeSpending, ...]


class RunDetail(Resource):
    """A run with its nodes, attempts, outputs and revision, read in one snapshot."""

    run: Run
    revision: RunRevision
    nodes: tuple[Node, ...]
    attempts: tuple[Attempt, ...]
    outputs: tuple[Output, ...]
    children: tuple[ChildRun, ...] = Field(
        description="The child runs its child nodes launched (every epoch)."
    )
    spending: RunSpending

    def output_of(self, node_id: str, iteration: int = 0) -> Any:
        """The output of one node execution, or None."""
        for out in self.outputs:
            if out.node_id == node_id and out.iteration == iteration:
                return out.value
        return None


class Migration(Resource):
    """A run moved to another revision of its workflow."""

    run_id: str
    from_revision: str = Field(alias="from")
    to_revision: str = Field(alias="to")
    note: str | None
    migrated_by: str
    run: Run
