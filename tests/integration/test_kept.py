"""A run's view kept across an in-place chain (smithers.shared.store.kept): each later
commit reads the run row and a few node executions again, and sees what a whole read
sees, including another worker's silent heartbeat and another writer's commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from smithers.shared import StepContext, Workflow, operations
from smithers.shared.actions import DecisionConfig
from smithers.shared.registry import Registry
from smithers.shared.status import AttemptState, NodeStatus, RunStatus
from smithers.shared.store import Store
from smithers.shared.store.advance import Decider, decide_loaded
from smithers.shared.store.attempts import claim, complete, heartbeat
from smithers.shared.store.inplace import Claim, InPlace
from smithers.shared.store.kept import Kept, keep, reload
from smithers.shared.store.queries import attempts_of
from smithers.shared.store.runs import request_cancel
from smithers.shared.store.state import apply_decision, load_run_view, read_run


def registry() -> Registry:
    wf = Workflow("kept")

    @wf.task()
    def a(ctx: StepContext) -> int:
        return 1

    @wf.task(after=[a])
    def b(ctx: StepContext) -> int:
        return 2

    @wf.task(after=[b])
    def c(ctx: StepContext) -> int:
        return 3

    @wf.task()
    def d(ctx: StepContext) -> int:  # a root of its own, run by another worker
        return 4

    chain = Workflow("kept-chain")
    for name in "abc":
        chain.task(name, after=[chr(ord(name) - 1)] if name != "a" else [])(lambda ctx: 0)

    reg = Registry()
    reg.register(wf, "tests", "rev1")
    reg.register(chain, "tests", "rev1")
    return reg


def started(store: Store, reg: Registry, workflow: str, run_id: str) -> dict[str, str]:
    """Launch ``run_id`` and make its first decision, as the scheduler does; the ids of
    the attempts it dispatched by node."""
    kw: dict[str, Any] = {"run_input": {}, "launched_by": "t", "deployment_version": "v"}
    operations.launch(store, None, reg, workflow=workflow, run_id=run_id, **kw)
    with store.write() as tx:
        first_view = load_run_view(tx, run_id)
        assert first_view is not None
        decision = decide_loaded(tx, reg.get(workflow).workflow, first_view[0], DecisionConfig())
        apply_decision(tx, run_id, decision, workflow, "rev1")
    with store.read() as conn:
        return {a.node_id: a.attempt_id for a in attempts_of(conn, run_id)}


def commit(
    store: Store, reg: Registry, c: Claim, kept: Kept | None, reads: list[str]
) -> tuple[Claim | None, Kept | None]:
    """Commit ``c``'s result as a worker's in-place commit does (smithers.workers.step),
    checking the view it decides from against a whole read in the same transaction."""
    in_place = InPlace("w1", c.input, lambda _m, _revision: 30.0)

    def count(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if "UNION ALL" in sql.upper():
            reads.append(sql)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        with store.write() as tx:
            loaded = reload(tx, c.run_id, kept)
            event.remove(store.engine, "before_cursor_execute", count)
            whole = read_run(tx, c.run_id)
            assert loaded is not None and whole is not None
            assert loaded.view == whole.view
            # the step's attempt is checked on what a whole read gives of it
            fence = (
                "node_id",
                "iteration",
                "number",
                "state",
                "claim_token",
                "queue",
                "cache_key",
                "timeout_s",
            )
            ours, read = loaded.current[c.attempt_id], whole.current[c.attempt_id]
            assert [getattr(ours, f) for f in fence] == [getattr(read, f) for f in fence]
            assert loaded.current.keys() <= whole.current.keys()
            token, run_id = c.claim_token, c.run_id
            if not complete(tx, c.attempt_id, token, ok=True, output=0, run_id=run_id, loaded=loaded):
                return None, None  # refused (the run's cancel was asked for)
            wf = reg.get(c.workflow).workflow
            view = (loaded.view, loaded.run)
            Decider(reg, DecisionConfig(), 500).after(tx, run_id, wf, in_place, {}, view)
    finally:
        if event.contains(store.engine, "before_cursor_execute", count):
            event.remove(store.engine, "before_cursor_execute", count)
    return in_place.claim, keep(tx, c.run_id, loaded, in_place, (c.node_id, c.iteration))


def test_a_kept_view_reads_again_what_moved_and_the_whole_run_after_another_writer(
    database_url: str,
) -> None:
    # given a run whose chain a -> b -> c one worker runs in place, and whose root d
    # another worker has claimed
    store = Store(database_url)
    store.migrate()
    reg = registry()
    ids = started(store, reg, "kept", "kept-1")
    with store.write() as tx:
        first = claim(tx, ids["a"], "w1", 30)
        other = claim(tx, ids["d"], "w2", 30)
    assert first is not None and other is not None and other.claim_token is not None
    reads: list[str] = []

    # when a commits (a whole read), d's worker heartbeats (no event), b commits (the
    # kept view and a few rows read again), d commits on its worker, and c commits
    b, kept = commit(store, reg, first, None, reads)
    assert b is not None and b.node_id == "b" and kept is not None
    with store.write() as tx:
        assert heartbeat(tx, other.attempt_id, other.claim_token, 300)
    c, kept = commit(store, reg, b, kept, reads)
    assert c is not None and c.node_id == "c" and kept is not None
    with store.write() as tx:
        assert complete(tx, other.attempt_id, other.claim_token, ok=True, output=4, run_id="kept-1")
    last, kept = commit(store, reg, c, kept, reads)

    # then each commit decided from what a whole read gives (checked in commit()): the
    # heartbeat's lease was read again with d, which was live; d's commit moved the run's
    # seq, so c's commit read the run whole after its partial read; the run is done
    assert last is None
    assert ["IN (" in sql.upper() for sql in reads] == [False, True, True, False]
    with store.read() as conn:
        states = {a.node_id: a.state for a in attempts_of(conn, "kept-1")}
    assert states == dict.fromkeys("abcd", AttemptState.SUCCEEDED)
    with store.write() as tx:
        done = read_run(tx, "kept-1")
    assert done is not None and done.view.status is RunStatus.SUCCEEDED
    assert {k: n.status for k, n in done.view.nodes.items()} == {(n, 0): NodeStatus.SUCCEEDED for n in "abcd"}
    store.close()


def test_a_chain_alone_is_known_as_its_commit_left_it_and_read_whole_after_a_cancel(
    database_url: str,
) -> None:
    # given a run that is one chain a -> b -> c, run in place by one worker
    store = Store(database_url)
    store.migrate()
    reg = registry()
    ids = started(store, reg, "kept-chain", "kept-2")
    with store.write() as tx:
        first = claim(tx, ids["a"], "w1", 30)
    assert first is not None
    reads: list[str] = []

    # when a and b commit, and the run's cancel is asked for before c commits
    b, kept = commit(store, reg, first, None, reads)
    assert b is not None and kept is not None and kept.whole
    c, kept = commit(store, reg, b, kept, reads)
    assert c is not None and kept is not None and kept.whole
    with store.write() as tx:
        request_cancel(tx, "kept-2", "t")
    last, kept = commit(store, reg, c, kept, reads)

    # then b's commit decided from the run as a's left it (checked against a whole read
    # in commit()), reading only the run's row; c's read the run whole (the cancel moved
    # its seq) and was refused
    assert last is None and kept is None
    assert len(reads) == 2  # a's whole read and c's: none for b
    with store.read() as conn:
        states = {a.node_id: a.state for a in attempts_of(conn, "kept-2")}
    assert states["a"] == states["b"] == AttemptState.SUCCEEDED
    assert states["c"] is not AttemptState.SUCCEEDED
    store.close()
