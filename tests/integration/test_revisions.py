"""Workflow revisions with real processes, on SQLite and PostgreSQL: a run executes the
revision it started with through a rolling deploy, a run whose revision no live process
holds says so, and an operator migrates it (CLI and store), audited."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from smithers.shared import operations
from smithers.shared.errors import Conflict, InvalidInput
from smithers.shared.registry import Registry, module_revision
from smithers.shared.status import RunStatus
from smithers.shared.store import Store, revisions
from smithers.shared.store import schema as s
from smithers.shared.store.queries import attempts_of, outputs_of
from tests.integration.conftest import ROOT, Engine

pytestmark = pytest.mark.timeout(240)

# Revision 1: first -> gate (approval) -> second. Revision 2 changes both tasks' code and
# adds `third` after `second`. Revision 3 renames `first`: incompatible with a run past it.
REV1 = """
from smithers import Workflow

wf = Workflow("rev-flow", version="1")


@wf.task()
def first(ctx):
    return {"rev": 1}


wf.approval("gate", after=[first])


@wf.task(after=["gate"])
def second(ctx):
    return {"rev": 1, "node": "second"}
"""
REV2 = (
    REV1.replace('version="1"', 'version="2"').replace('"rev": 1', '"rev": 2')
    + """

@wf.task(after=[second])
def third(ctx):
    return {"rev": 2, "node": "third"}
"""
)
REV3 = REV2.replace("def first", "def start").replace("after=[first]", "after=[start]")
FAST = {"SMITHERS_HOLDER_HEARTBEAT": "0.5", "SMITHERS_HOLDER_TTL": "3", "SMITHERS_WORKFLOWS": "revflow"}


def deploy(tmp_path: Path, name: str, source: str) -> Path:
    """A deployment's copy of the workflow module ``revflow`` (its own directory)."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "revflow.py").write_text(source)
    return folder


def registry_of(folder: Path) -> Registry:
    """What a process deployed from ``folder`` registers (imported under a name of its
    own: this test process holds several revisions of one module)."""
    path = folder / "revflow.py"
    spec = importlib.util.spec_from_file_location(f"revflow_{folder.name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    registry = Registry()
    registry.register(module.wf, "revflow", module_revision(module))
    return registry


def engine_on(factory: Any, database_url: str, folder: Path) -> Engine:
    pythonpath = os.pathsep.join([str(folder), str(ROOT)])
    eng: Engine = factory(database_url, PYTHONPATH=pythonpath, **FAST)
    eng.registry = registry_of(folder)
    return eng


def wait_for(predicate: Any, timeout: float = 30, what: str = "") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def held_by(store: Store, revision: str) -> set[str]:
    with store.read() as conn:
        return {h.role for h in revisions.live_holders(conn, time.time(), 3.0) if h.revision == revision}


def approve(eng: Engine, run_id: str) -> None:
    operations.approve(eng.store, eng.broker, run_id, "gate", approved=True, note=None, actor="ops")


def test_a_run_finishes_on_its_revision_through_a_rolling_deploy_then_migrates(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given: revision 1 deployed (a scheduler and a worker), two runs waiting for approval
    old = engine_on(engine_factory, database_url, deploy(tmp_path, "v1", REV1))
    rev1 = old.registry.get("rev-flow").revision
    old.scheduler("scheduler-v1")
    old.worker("worker-v1")
    wait_for(lambda: held_by(old.store, rev1) == {"scheduler", "worker"}, what="rev 1 holders")
    drained = old.launch("rev-flow", run_id="drained")
    stranded = old.launch("rev-flow", run_id="stranded")
    for run_id in (drained, stranded):
        old.wait(run_id, until={RunStatus.WAITING})

    # when: revision 2 is deployed beside it (new scheduler and worker), and new runs start on it
    new = engine_on(engine_factory, database_url, deploy(tmp_path, "v2", REV2))
    rev2 = new.registry.get("rev-flow").revision
    assert rev2 != rev1
    new.scheduler("scheduler-v2")
    new.worker("worker-v2")
    wait_for(lambda: held_by(new.store, rev2) == {"scheduler", "worker"}, what="rev 2 holders")
    fresh = new.launch("rev-flow", run_id="fresh")
    new.wait(fresh, until={RunStatus.WAITING})
    approve(new, fresh)
    approve(old, drained)

    # then: the old run ran revision 1's code only (no `third`), the new one revision 2's
    done_old = old.wait(drained)
    done_new = new.wait(fresh)
    assert done_old.status is RunStatus.SUCCEEDED and done_old.module_revision == rev1
    assert done_old.output == {"second": {"rev": 1, "node": "second"}}
    assert done_new.status is RunStatus.SUCCEEDED and done_new.module_revision == rev2
    assert done_new.output == {"third": {"rev": 2, "node": "third"}}
    with old.store.read() as conn:
        old_attempts = attempts_of(conn, drained)
        new_attempts = attempts_of(conn, fresh)
    assert {a.node_id for a in old_attempts} == {"first", "second"}
    assert {a.revision for a in old_attempts} == {rev1}
    assert {a.worker for a in old_attempts} == {"worker-v1"}
    assert {a.revision for a in new_attempts} == {rev2}
    assert {a.worker for a in new_attempts} == {"worker-v2"}

    # when: revision 1's processes go away with a run still on it
    old.kill9("worker-v1")
    old.kill9("scheduler-v1")

    # then: that run says why it cannot move (reason, event), instead of silently waiting
    wait_for(lambda: old.run(stranded).status_reason == "revision_unavailable", what="the reason")
    event = old.wait_event(stranded, lambda e: e.type == "run.revision_unavailable")
    # (the first check may see one of the two still within its TTL)
    assert event.payload["revision"] == rev1 and set(event.payload["missing"]) <= {"scheduler", "worker"}
    assert event.payload["missing"]
    approve(new, stranded)  # nobody holds revision 1: the approval is recorded, nothing runs
    time.sleep(2)
    assert old.run(stranded).status is RunStatus.WAITING
    with old.store.read() as conn:
        assert "second" not in {a.node_id for a in attempts_of(conn, stranded)}

    # when: an operator migrates it to revision 2 (its finished part is compatible)
    result = operations.migrate(new.store, new.broker, stranded, to=rev2[:12], actor="ops", note="v1 retired")

    # then: it finishes on revision 2, audited, the earlier attempt still saying revision 1
    assert result["from"] == rev1 and result["to"] == rev2
    done = new.wait(stranded)
    assert done.status is RunStatus.SUCCEEDED and done.module_revision == rev2 and done.status_reason is None
    assert done.output == {"third": {"rev": 2, "node": "third"}}
    with new.store.read() as conn:
        by_node = {a.node_id: a.revision for a in attempts_of(conn, stranded)}
        outputs = outputs_of(conn, stranded)
        audit = conn.execute(select(s.audit_log).where(s.audit_log.c.action == "run.migrated")).all()
    assert by_node == {"first": rev1, "second": rev2, "third": rev2}
    assert outputs[("first", 0)] == {"rev": 1}
    assert [(a.actor, a.run_id, a.detail["from"], a.detail["to"], a.detail["note"]) for a in audit] == [
        ("ops", stranded, rev1, rev2, "v1 retired")
    ]
    types = [e.type for e in new.events(stranded)]
    assert types.index("run.revision_unavailable") < types.index("run.migrated")


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smithers", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_launch_warns_without_holders_and_migrate_is_checked(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    v1, v3 = deploy(tmp_path, "v1", REV1), deploy(tmp_path, "v3", REV3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    env.update(
        SMITHERS_DATABASE_URL=database_url,
        SMITHERS_REDIS_URL=redis_url,
        SMITHERS_WORKFLOWS="revflow",
        PYTHONPATH=os.pathsep.join([str(v1), str(ROOT)]),
        SMITHERS_DECIDE_MAX_NODES="0",  # the launch decides nothing: the test sets the run's nodes
    )
    store = Store(database_url)
    store.migrate()
    # given: no scheduler or worker running; when: a run is launched
    launched = cli(env, "run", "rev-flow", "--run-id", "lonely", "--detach")
    # then: it is created, and the command says at once that nothing holds its revision
    assert launched.returncode == 9, launched.stderr
    assert "run lonely launched" in launched.stdout
    assert "no live scheduler or worker holds revision" in launched.stderr

    status = cli(env, "status", "lonely")
    assert status.returncode == 0 and "revision_unavailable" in status.stdout
    assert "graph of" in status.stdout and "gate:approval" in status.stdout

    # given: a run past `first`, and revision 3 (which renamed `first`) known to the store
    rev1 = registry_of(v1).get("rev-flow").revision
    rev3_registry = registry_of(v3)
    rev3 = rev3_registry.get("rev-flow").revision
    with store.write() as tx:
        revisions.record(tx, [rev3_registry.get("rev-flow")])
        tx.insert(
            s.nodes,
            {
                "run_id": "lonely", "node_id": "first", "iteration": 0, "kind": "task", "status": "succeeded",
                "failures": 0, "lost": 0, "current_attempt_id": None, "current_iteration": 0, "next_at": None,
                "started_at": tx.now, "updated_at": tx.now, "finished_at": tx.now, "error": None,
            },
        )  # fmt: skip
    # when / then: migrating to it is refused, naming the node, and nothing changes
    refused = cli(env, "runs", "migrate", "lonely", "--to", rev3[:12])
    assert refused.returncode == 7, refused.stderr
    assert "'first'" in refused.stderr or "(first)" in refused.stderr
    bad = cli(env, "runs", "migrate", "lonely", "--to", "not-hex")
    assert bad.returncode == 2 and "hex" in bad.stderr
    unknown = cli(env, "runs", "migrate", "lonely", "--to", "0123456789ab")
    assert unknown.returncode == 6
    with store.read() as conn:
        row = conn.execute(select(s.runs.c.module_revision).where(s.runs.c.run_id == "lonely")).one()
        audited = conn.execute(select(s.audit_log).where(s.audit_log.c.action == "run.migrated")).all()
    assert row[0] == rev1 and audited == []

    # when: the bulk form moves every run of revision 3 back (none) and of revision 1 to 3
    bulk = cli(env, "runs", "migrate", "--workflow", "rev-flow", "--from", rev1[:12], "--to", rev3[:12])
    # then: the incompatible run is listed as refused (exit 7)
    assert bulk.returncode == 7 and "0 migrated, 1 refused" in bulk.stdout
    store.close()


def test_a_launch_writes_its_revision_once_per_process_and_store(database_url: str, tmp_path: Path) -> None:
    registry = registry_of(deploy(tmp_path, "v1", REV1))
    stores = [Store(database_url), Store(database_url)]  # two processes' stores
    stores[0].migrate()
    written: list[int] = []

    def watch(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "INSERT INTO revisions" in statement:
            written.append(1)

    def launch(store: Store, run_id: str, run_input: Any) -> None:
        operations.launch(
            store, None, registry, workflow="rev-flow", run_input=run_input, run_id=run_id,
            launched_by="t", deployment_version="t",
        )  # fmt: skip

    for store in stores:
        event.listen(store.engine, "before_cursor_execute", watch)
    try:
        # when: one store launches twice; then: the graph's upsert is written once
        launch(stores[0], "r1", {})
        launch(stores[0], "r2", {})
        assert len(written) == 1
        # when: the other store's launch fails (the id's input differs) and rolls back;
        # then: it writes the graph again at its next launch, which commits
        with pytest.raises(Conflict):
            launch(stores[1], "r1", {"other": 1})
        launch(stores[1], "r3", {})
        assert len(written) == 3
        launch(stores[1], "r4", {})
        assert len(written) == 3
    finally:
        for store in stores:
            event.remove(store.engine, "before_cursor_execute", watch)
            store.close()
    store = Store(database_url)
    with store.read() as conn:
        listed = revisions.list_revisions(conn, "rev-flow")
    store.close()
    assert [(r["revision"], r["live_runs"]) for r in listed] == [(registry.get("rev-flow").revision, 4)]


def test_the_holder_check_marks_and_clears_once_per_change(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url)
    store.migrate()
    registry = registry_of(deploy(tmp_path, "v1", REV1))
    entry = registry.get("rev-flow")
    for run_id in ("r1", "r2"):
        operations.launch(
            store, None, registry, workflow="rev-flow", run_input={}, run_id=run_id,
            launched_by="t", deployment_version="t",
        )  # fmt: skip
    # given: only a scheduler holds the revision
    with store.write() as tx:
        revisions.hold(tx, "sched-1", "scheduler", [entry], tx.now)
    # when: the check runs with a settling time longer than the runs' age; then: no mark yet
    with store.write() as tx:
        assert revisions.check_unheld(tx, 30.0, settle_s=30.0) == ([], [])
    # when: the check runs twice
    with store.write() as tx:
        first = revisions.check_unheld(tx, 30.0)
    with store.write() as tx:
        second = revisions.check_unheld(tx, 30.0)
    # then: both runs are marked once, naming the missing role
    assert sorted(first[0]) == ["r1", "r2"] and first[1] == [] and second == ([], [])
    with store.read() as conn:
        assert revisions.unavailable_count(conn) == 2
        events = conn.execute(
            select(s.events.c.payload).where(s.events.c.type == "run.revision_unavailable")
        ).all()
    assert [e[0]["missing"] for e in events] == [["worker"], ["worker"]]
    # when: a worker announces the revision; then: the marks are cleared, once
    with store.write() as tx:
        revisions.hold(tx, "worker-1", "worker", [entry], tx.now)
    with store.write() as tx:
        assert sorted(revisions.check_unheld(tx, 30.0)[1]) == ["r1", "r2"]
    with store.write() as tx:
        assert revisions.check_unheld(tx, 30.0) == ([], [])
    # when: the worker leaves (a clean stop); then: marked again at the next check
    with store.write() as tx:
        revisions.leave(tx, "worker-1")
    with store.write() as tx:
        assert sorted(revisions.check_unheld(tx, 30.0)[0]) == ["r1", "r2"]
    with store.read() as conn:
        listed = revisions.list_revisions(conn, "rev-flow")
    assert [(r["revision"], r["live_runs"]) for r in listed] == [(entry.revision, 2)]
    store.close()


def test_rest_launch_warns_and_migrate_lists_conflicts(database_url: str, redis_url: str) -> None:
    from tests.integration.gateway.support import make_gateway

    with make_gateway(database_url, redis_url) as gw:
        writer, admin = gw.auth("run:write"), gw.auth("admin")
        # given: no process holds t-chain; when: it is launched over REST
        created = gw.client.post("/v1/runs", json={"workflow": "t-chain", "run_id": "rest-1"}, headers=writer)
        # then: 201, the run, and a warning naming the missing roles
        assert created.status_code == 201
        [warning] = created.get_json()["warnings"]
        assert warning["code"] == "revision_unavailable" and warning["missing"] == ["scheduler", "worker"]
        revision = warning["revision"]
        # and the run's JSON shows its revision, unavailable, with its stored graph
        shown = gw.client.get("/v1/runs/rest-1", headers=gw.auth("run:read")).get_json()
        assert shown["revision"]["revision"] == revision and shown["revision"]["available"] is False
        assert [n["id"] for n in shown["revision"]["graph"]["nodes"]] == ["a", "b", "c", "d", "e"]

        # given: a revision where node `a` is an approval, and the run past `a`
        graph = dict(shown["revision"]["graph"])
        graph["nodes"] = [{**n, "kind": "approval"} if n["id"] == "a" else n for n in graph["nodes"]]
        other = "f" * 64
        with gw.store.write() as tx:
            tx.insert(
                s.revisions,
                {"workflow": "t-chain", "revision": other, "version": "9", "module": "x", "graph": graph,
                 "first_seen": tx.now},
            )  # fmt: skip
            tx.insert(
                s.nodes,
                {
                    "run_id": "rest-1", "node_id": "a", "iteration": 0, "kind": "task", "status": "succeeded",
                    "failures": 0, "lost": 0, "current_attempt_id": None, "current_iteration": 0,
                    "next_at": None, "started_at": tx.now, "updated_at": tx.now, "finished_at": tx.now,
                    "error": None,
                },
            )  # fmt: skip
        # when: migrating needs admin, and is refused with the conflict list
        assert (
            gw.client.post("/v1/runs/rest-1/migrate", json={"to": other}, headers=writer).status_code == 403
        )
        refused = gw.client.post(
            "/v1/runs/rest-1/migrate", json={"to": "ffffffff", "note": "x"}, headers=admin
        )
        assert refused.status_code == 409
        error = refused.get_json()["error"]
        assert error["code"] == "revision_conflict"
        assert error["details"]["conflicts"] == [
            {"node_id": "a", "kind": "task", "problem": "is an approval in the target revision"}
        ]
        too_long = gw.client.post(
            "/v1/runs/rest-1/migrate", json={"to": other, "note": "n" * 1001}, headers=admin
        )
        assert too_long.status_code == 400


def test_time_travel_walks_the_stored_graph_and_names_the_revision(database_url: str, tmp_path: Path) -> None:
    # given: a run of revision 1 past `first`, then the module gone from the deployment
    store = Store(database_url)
    store.migrate()
    registry = registry_of(deploy(tmp_path, "v1", REV1))
    rev1 = registry.get("rev-flow").revision
    operations.launch(
        store, None, registry, workflow="rev-flow", run_input={}, run_id="old",
        launched_by="alice", deployment_version="t",
    )  # fmt: skip
    gone = Registry()
    # when: it is rewound at `gate` and forked at `second` by a process without the module
    rewound = operations.time_travel(
        store, None, gone, action="rewind", run_id="old", node_id="gate", caller="alice", confirm=True
    )
    forked = operations.time_travel(
        store, None, gone, action="fork", run_id="old", node_id="second", caller="alice", confirm=True,
        new_run_id="old-fork", new_input={},
    )  # fmt: skip
    # then: both say the new attempts run revision 1, and the fork records it
    assert rewound["revision"] == rev1 and forked["revision"] == rev1
    with store.read() as conn:
        fork = conn.execute(select(s.runs.c.module_revision).where(s.runs.c.run_id == "old-fork")).one()
    assert fork[0] == rev1
    # and an unknown node of the stored graph is refused
    with pytest.raises(InvalidInput):
        operations.time_travel(
            store, None, gone, action="rewind", run_id="old", node_id="third", caller="alice", confirm=True
        )
    store.close()
