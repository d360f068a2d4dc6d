"""Sandbox records and diff reviews in the store (SQLite and PostgreSQL), without Docker.

The scheduler's step (load, decide, apply) and the worker's commit are called
directly, so each test reads as the sequence of transactions the engine makes.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from smithers.shared.actions import DecisionConfig
from smithers.shared.errors import Conflict, NotFound
from smithers.shared.registry import Registry
from smithers.shared.sandbox import SandboxSpec
from smithers.shared.status import NodeStatus, RunStatus
from smithers.shared.store import Store
from smithers.shared.store import sandboxes as sb
from smithers.shared.store import schema as s
from smithers.shared.store.advance import decide_loaded
from smithers.shared.store.attempts import claim, complete
from smithers.shared.store.inplace import Claim
from smithers.shared.store.queries import events_after, get_run, nodes_of, outputs_of
from smithers.shared.store.runs import launch
from smithers.shared.store.state import apply_decision, load_run_view
from smithers.shared.workflow import Workflow

pytestmark = pytest.mark.timeout(60)

PATCH = {"path": "fix.diff", "sha256": "0" * 64, "size": 10, "diff": "--- a/x\n+++ b/x\n"}


def make_registry(on_reject: str = "fail") -> Registry:
    wf = Workflow("t-sbx-store")
    wf.sandbox("propose", SandboxSpec(command=("true",)), on_reject=on_reject)  # type: ignore[arg-type]

    @wf.task(after=["propose"])
    def use(ctx: Any) -> None:
        return None

    registry = Registry()
    registry.register(wf, "tests", "rev")
    return registry


@pytest.fixture
def store(database_url: str) -> Store:
    st = Store(database_url)
    st.migrate()
    return st


def step(store: Store, registry: Registry, run_id: str) -> list[str]:
    """One scheduler step; returns the ids of the attempts it dispatched."""
    with store.write() as tx:
        loaded = load_run_view(tx, run_id)
        assert loaded is not None
        view, run = loaded
        wf = registry.get(run.workflow).workflow
        messages = apply_decision(tx, run_id, decide_loaded(tx, wf, view, DecisionConfig()))
    return [m.attempt_id for m in messages]


def start(store: Store, registry: Registry, run_id: str) -> Claim:
    """Launch the run and claim its sandbox attempt, as a worker would."""
    with store.write() as tx:
        launch(
            tx,
            run_id=run_id,
            workflow="t-sbx-store",
            workflow_version="1",
            module_revision="rev",
            deployment_version="test",
            run_input={},
            launched_by="test",
        )
    (attempt_id,) = step(store, registry, run_id)
    with store.write() as tx:
        c = claim(tx, attempt_id, "w1", 30.0)
    assert c is not None
    return c


def run_sandbox(store: Store, c: Claim, patches: list[dict[str, Any]], auto: bool = False) -> str:
    """The worker's three transactions for a sandbox that produced ``patches``."""
    sandbox_id = "sbx-" + c.attempt_id.replace("-", "")
    with store.write() as tx:
        sb.create(
            tx,
            sandbox_id=sandbox_id,
            run_id=c.run_id,
            node_id=c.node_id,
            iteration=c.iteration,
            attempt_id=c.attempt_id,
            runtime="docker",
            image="smithers-sandbox:latest",
            limits={"memory_mb": 256},
            bundle_path="/tmp/x",
        )
    with store.write() as tx:
        sb.started(tx, sandbox_id, container_id="c" * 64, image_digest="sha256:abc", request_bytes=100)
    manifest = {"status": "succeeded", "outputs": {"api_token": "sk-" + "a" * 30}, "patches": patches}
    with store.write() as tx:
        sb.finished(
            tx, sandbox_id, manifest=manifest, result_bytes=42, patches=len(patches), auto_accept=auto
        )
    return sandbox_id


def events(store: Store, run_id: str) -> list[str]:
    with store.read() as conn:
        return [e.type for e in events_after(conn, run_id, 0, 10_000)]


def node_status(store: Store, run_id: str, node_id: str) -> NodeStatus:
    with store.read() as conn:
        return next(n.status for n in nodes_of(conn, run_id) if n.node_id == node_id)


def test_patches_hold_the_node_until_accepted_then_downstream_starts(store: Store) -> None:
    registry = make_registry()
    # given a sandbox attempt that produced a patch and committed its result
    c = start(store, registry, "run-accept")
    sandbox_id = run_sandbox(store, c, [PATCH])
    with store.write() as tx:
        assert complete(tx, c.attempt_id, c.claim_token, ok=True, output={"workspace": {"files": {"x": "y"}}})
    step(store, registry, "run-accept")

    # then the node waits for review, its output is stored, the run waits for a person
    assert node_status(store, "run-accept", "propose") is NodeStatus.WAITING
    with store.read() as conn:
        assert get_run(conn, "run-accept").status is RunStatus.WAITING  # type: ignore[union-attr]
        assert outputs_of(conn, "run-accept")[("propose", 0)] == {"workspace": {"files": {"x": "y"}}}
        record = sb.get_sandbox(conn, "run-accept", sandbox_id)
    assert record.review_status is sb.ReviewStatus.PENDING
    assert record.status is sb.SandboxStatus.SUCCEEDED
    assert (record.container_id, record.image_digest, record.request_bytes, record.result_bytes) == (
        "c" * 64,
        "sha256:abc",
        100,
        42,
    )
    assert record.manifest is not None and record.manifest["outputs"] == {"api_token": "[redacted]"}
    kinds = events(store, "run-accept")
    assert kinds.index("sandbox.created") < kinds.index("sandbox.started") < kinds.index("sandbox.finished")
    assert "review.requested" in kinds and "node.succeeded" not in kinds

    # when a reviewer accepts
    with store.write() as tx:
        reviewed = sb.review(tx, "run-accept", sandbox_id, accept=True, note="looks right", actor="carol")
        assert "run-accept" in tx.woken
    dispatched = step(store, registry, "run-accept")

    # then the decision is stored with actor, note and time, audited, and the node succeeds
    assert reviewed.review_status is sb.ReviewStatus.ACCEPTED
    assert [(r.accept, r.actor, r.note) for r in reviewed.reviews] == [(True, "carol", "looks right")]
    assert node_status(store, "run-accept", "propose") is NodeStatus.SUCCEEDED
    assert len(dispatched) == 1  # the downstream task
    with store.read() as conn:
        audit = conn.execute(select(s.audit_log).where(s.audit_log.c.action == "sandbox.reviewed")).all()
        last = events_after(conn, "run-accept", 0, 10_000)
    assert [(a.actor, a.target_id) for a in audit] == [("carol", f"run-accept/{sandbox_id}")]
    succeeded = next(e for e in last if e.type == "node.succeeded" and e.node_id == "propose")
    assert succeeded.payload["review"]["decided_by"] == "carol"

    # and a second decision is refused
    with pytest.raises(Conflict, match="already accepted"), store.write() as tx:
        sb.review(tx, "run-accept", sandbox_id, accept=False, note=None, actor="dave")


@pytest.mark.parametrize(("on_reject", "status"), [("fail", NodeStatus.FAILED), ("skip", NodeStatus.SKIPPED)])
def test_rejection_fails_or_skips_per_policy(store: Store, on_reject: str, status: NodeStatus) -> None:
    registry = make_registry(on_reject)
    c = start(store, registry, "run-reject")
    sandbox_id = run_sandbox(store, c, [PATCH])
    with store.write() as tx:
        complete(tx, c.attempt_id, c.claim_token, ok=True, output={"workspace": {}})
    step(store, registry, "run-reject")
    with store.write() as tx:
        sb.review(tx, "run-reject", sandbox_id, accept=False, note="wrong file", actor="carol")
    step(store, registry, "run-reject")

    assert node_status(store, "run-reject", "propose") is status
    with store.read() as conn:
        run = get_run(conn, "run-reject")
        assert outputs_of(conn, "run-reject")[("propose", 0)] is None  # nothing handed downstream
    assert run is not None
    assert run.status is (RunStatus.FAILED if on_reject == "fail" else RunStatus.SUCCEEDED)


def test_no_patches_or_auto_accept_succeed_at_once(store: Store) -> None:
    registry = make_registry()
    c = start(store, registry, "run-auto")
    sandbox_id = run_sandbox(store, c, [PATCH], auto=True)
    with store.write() as tx:
        complete(tx, c.attempt_id, c.claim_token, ok=True, output={})
    assert node_status(store, "run-auto", "propose") is NodeStatus.SUCCEEDED
    with store.read() as conn:
        record = sb.get_sandbox(conn, "run-auto", sandbox_id)
    assert record.review_status is sb.ReviewStatus.ACCEPTED
    assert [(r.accept, r.actor) for r in record.reviews] == [(True, sb.AUTO_ACCEPT_ACTOR)]
    assert "review.requested" not in events(store, "run-auto")

    c2 = start(store, registry, "run-none")
    none_id = run_sandbox(store, c2, [])
    with store.write() as tx:
        complete(tx, c2.attempt_id, c2.claim_token, ok=True, output={})
    assert node_status(store, "run-none", "propose") is NodeStatus.SUCCEEDED
    with pytest.raises(Conflict, match="produced no patches"), store.write() as tx:
        sb.review(tx, "run-none", none_id, accept=True, note=None, actor="carol")


def test_a_fenced_or_lost_attempt_never_becomes_reviewable(store: Store) -> None:
    registry = make_registry()
    c = start(store, registry, "run-lost")
    first = run_sandbox(store, c, [PATCH])
    # the worker is fenced out before its commit: the result is refused
    with store.write() as tx:
        assert not complete(tx, c.attempt_id, "not-the-token", ok=True, output={})
    with pytest.raises(Conflict, match="no committed result"), store.write() as tx:
        sb.review(tx, "run-lost", first, accept=True, note=None, actor="carol")
    # a later attempt of the node supersedes it; an unfinished one is marked lost
    with store.write() as tx:
        sb.create(
            tx,
            sandbox_id="sbx-second",
            run_id="run-lost",
            node_id="propose",
            iteration=0,
            attempt_id=c.attempt_id,
            runtime="docker",
            image="img",
            limits={},
            bundle_path="/tmp/y",
        )
    with store.read() as conn:
        records = {r.sandbox_id: r for r in sb.sandboxes_of(conn, "run-lost")}
    assert records[first].review_status is sb.ReviewStatus.SUPERSEDED
    assert records["sbx-second"].status is sb.SandboxStatus.CREATED
    with store.write() as tx:
        sb.create(
            tx,
            sandbox_id="sbx-third",
            run_id="run-lost",
            node_id="propose",
            iteration=0,
            attempt_id=c.attempt_id,
            runtime="docker",
            image="img",
            limits={},
            bundle_path="/tmp/z",
        )
    with store.read() as conn:
        assert sb.get_sandbox(conn, "run-lost", "sbx-second").status is sb.SandboxStatus.LOST


def test_unknown_run_or_sandbox_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound), store.write() as tx:
        sb.review(tx, "run-nope", "sbx-nope", accept=True, note=None, actor="carol")
    registry = make_registry()
    start(store, registry, "run-known")
    with pytest.raises(NotFound), store.write() as tx:
        sb.review(tx, "run-known", "sbx-nope", accept=True, note=None, actor="carol")
    with store.read() as conn, pytest.raises(NotFound):
        sb.resolve_sandbox(conn, "run-known", "propose")
