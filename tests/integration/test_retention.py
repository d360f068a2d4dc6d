"""Retention: old finished runs are deleted with everything they own (bundles on disk
included) through the admin delete path; live runs are never touched, not even while a
prune races them; the scheduler prunes by itself; ``smithers db prune``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from smithers.shared import retention
from smithers.shared.metrics import collect
from smithers.shared.status import RunStatus
from smithers.shared.store import Store
from smithers.shared.store import sandboxes as sandboxes_store
from smithers.shared.store import schema as s
from tests.integration.conftest import Engine

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
DAY = 86400.0
OWNED = (s.nodes, s.attempts, s.outputs, s.events, s.approvals, s.sandboxes)


def backdate(store: Store, run_id: str, days: float) -> None:
    at = time.time() - days * DAY
    with store.write() as tx:
        tx.conn.execute(update(s.runs).where(s.runs.c.run_id == run_id).values(finished_at=at, updated_at=at))


def rows_of(store: Store, run_id: str) -> int:
    with store.read() as conn:
        return sum(
            int(conn.execute(select(func.count()).select_from(t).where(t.c.run_id == run_id)).scalar() or 0)
            for t in (s.runs, *OWNED)
        )


def audit_of(store: Store, run_id: str) -> list[str]:
    a = s.audit_log
    with store.read() as conn:
        return [str(x) for x in conn.execute(select(a.c.action).where(a.c.run_id == run_id)).scalars()]


def orphans(store: Store) -> int:
    with store.read() as conn:
        return sum(
            int(
                conn.execute(
                    select(func.count()).select_from(t).where(~t.c.run_id.in_(select(s.runs.c.run_id)))
                ).scalar()
                or 0
            )
            for t in OWNED
        )


def test_prune_deletes_old_finished_runs_and_what_they_own_but_never_a_live_run(
    engine: Engine, tmp_path: Path
) -> None:
    old = [engine.launch("t-chain") for _ in range(2)]
    recent = engine.launch("t-chain")
    waiting = engine.launch("t-approval")
    for run_id in (*old, recent):
        assert engine.wait(run_id).status == RunStatus.SUCCEEDED
    engine.wait(waiting, until={RunStatus.WAITING})
    for run_id in (*old, waiting):
        backdate(engine.store, run_id, 40)  # the waiting run too: old, but not finished
    bundle = tmp_path / "sandbox" / old[0] / "sb-1"
    (bundle / "work").mkdir(parents=True)
    (bundle / "work" / "file.txt").write_text("x")
    with engine.store.write() as tx:
        sandboxes_store.create(
            tx,
            sandbox_id="sb-1",
            run_id=old[0],
            node_id="a",
            iteration=0,
            attempt_id="att-sb-1",
            runtime="docker",
            image="img",
            limits={},
            bundle_path=str(bundle),
        )
    before = {run_id: rows_of(engine.store, run_id) for run_id in old}

    dry = retention.prune(engine.store, 30 * DAY, dry_run=True)
    assert sorted(dry.run_ids) == sorted(old) and dry.runs == 2
    assert all(rows_of(engine.store, r) == before[r] for r in old)  # a dry run deletes nothing

    pruned = retention.prune(engine.store, 30 * DAY, batch=1)  # batches of one: the paging is exercised
    assert sorted(pruned.run_ids) == sorted(old)
    assert pruned.rows == sum(before.values())
    for run_id in old:
        assert rows_of(engine.store, run_id) == 0
        assert audit_of(engine.store, run_id) == ["run.deleted"]  # the audit entry stays
    assert not bundle.exists() and not bundle.parent.exists()
    assert rows_of(engine.store, recent) > 0 and rows_of(engine.store, waiting) > 0
    assert engine.run(waiting).status == RunStatus.WAITING
    assert orphans(engine.store) == 0
    assert retention.pruned_totals(engine.store) == {"pruned_runs": 2, "pruned_rows": pruned.rows}
    text = {
        m.name: m.samples[0].value
        for m in collect(engine.store, None)
        if m.name.startswith("smithers_retention")
    }
    assert text == {"smithers_retention_pruned_runs": 2, "smithers_retention_pruned_rows": pruned.rows}
    assert retention.prune(engine.store, 30 * DAY).runs == 0  # nothing left to prune


def test_a_prune_racing_live_runs_deletes_only_finished_runs(engine: Engine) -> None:
    launched: list[str] = []
    done = threading.Event()

    def launcher() -> None:
        while not done.is_set() and len(launched) < 60:
            launched.append(engine.launch("t-fan"))
            time.sleep(0.02)

    thread = threading.Thread(target=launcher)
    thread.start()
    pruned: set[str] = set()
    try:
        deadline = time.time() + 60
        while (thread.is_alive() or len(pruned) < len(launched)) and time.time() < deadline:
            # everything finished up to now is old enough: the prune races the live runs
            pruned.update(retention.prune(engine.store, 0.0, batch=5).run_ids)
            time.sleep(0.02)
    finally:
        done.set()
        thread.join()
    assert pruned, "nothing was pruned"
    a = s.audit_log
    with engine.store.read() as conn:
        deleted = conn.execute(select(a.c.target_id, a.c.detail).where(a.c.action == "run.deleted")).all()
        left = {str(r[0]): str(r[1]) for r in conn.execute(select(s.runs.c.run_id, s.runs.c.status))}
    assert {str(r[0]) for r in deleted} == pruned
    assert all(r[1]["status"] in ("succeeded", "failed", "cancelled") for r in deleted)
    for run_id in launched:  # every run is either pruned after it finished or still there
        assert (run_id in pruned) != (run_id in left), run_id
    assert orphans(engine.store) == 0
    # and the engine still works: a new run finishes
    assert engine.wait(engine.launch("t-chain")).status == RunStatus.SUCCEEDED
    for name in ("scheduler", "worker"):
        assert engine.procs[name].poll() is None, f"{name} died; logs in {engine.logs}"


def test_the_scheduler_prunes_by_itself(engine_factory: Any, database_url: str) -> None:
    eng = engine_factory(database_url, SMITHERS_RETENTION_DAYS="1")
    eng.worker()
    eng.scheduler()
    old, kept = eng.launch("t-chain"), eng.launch("t-chain")
    assert eng.wait(old).status == RunStatus.SUCCEEDED and eng.wait(kept).status == RunStatus.SUCCEEDED
    backdate(eng.store, old, 2)
    eng.kill9("scheduler")  # a new scheduler makes a retention pass as it starts
    eng.scheduler()
    deadline = time.time() + 30
    while rows_of(eng.store, old) and time.time() < deadline:
        time.sleep(0.2)
    assert rows_of(eng.store, old) == 0
    assert rows_of(eng.store, kept) > 0


def test_db_prune_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}

    def smithers(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "smithers", "db", "prune", *args, "--data-dir", str(data)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    missing = smithers("--older-than", "30d")
    assert missing.returncode != 0 and "no smithers store" in missing.stderr
    assert not data.exists()  # a read of nothing creates nothing

    store = Store(f"sqlite:///{data / 'smithers.db'}")
    store.migrate()
    now = time.time()
    with store.write() as tx:
        for run_id, status, age in (
            ("r-old", "succeeded", 40),
            ("r-new", "failed", 1),
            ("r-live", "running", 40),
        ):
            at = now - age * DAY
            tx.conn.execute(
                s.runs.insert().values(
                    run_id=run_id, workflow="w", workflow_version="1", module_revision="m",
                    deployment_version="d", input={}, input_hash="h", status=status,
                    cancel_requested=False, created_at=at, updated_at=at,
                    finished_at=None if status == "running" else at, next_seq=1,
                )
            )  # fmt: skip
    store.close()

    bad = smithers("--older-than", "soon")
    assert bad.returncode == 2 and "not a duration" in bad.stderr and "Traceback" not in bad.stderr
    dry = smithers("--older-than", "30d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == ["r-old", "would delete 1 finished run(s) older than 30d (dry run)"]
    done = smithers("--older-than", "30d")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("deleted 1 finished run(s) older than 30d")
    store = Store(f"sqlite:///{data / 'smithers.db'}")
    try:
        with store.read() as conn:
            assert sorted(conn.execute(select(s.runs.c.run_id)).scalars()) == ["r-live", "r-new"]
    finally:
        store.close()
