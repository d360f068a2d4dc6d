"""Cache policy end to end: scopes, expiry, version, and a hit after a scheduler restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from smithers.shared.status import RunStatus
from smithers.shared.store.queries import attempts_of
from tests.integration.conftest import Engine


def runs_of(effects: Path, label: str) -> int:
    return effects.read_text().splitlines().count(label) if effects.exists() else 0


def finish(eng: Engine, workflow: str, effects: Path, n: int = 1) -> Any:
    run = eng.wait(eng.launch(workflow, {"n": n, "effects": str(effects)}))
    assert run.status is RunStatus.SUCCEEDED, run.error
    return run


def test_run_scope_reuses_inside_a_run_only(engine: Engine, tmp_path: Path) -> None:
    effects = tmp_path / "effects.txt"
    run = finish(engine, "t-cache-run", effects)
    with engine.store.read() as conn:
        states = [(a.iteration, a.state.value, a.cached) for a in attempts_of(conn, run.run_id)]
    assert states == [(0, "succeeded", False), (1, "cached", True), (2, "cached", True)]
    assert [e.type for e in engine.events(run.run_id)].count("attempt.cached") == 2
    finish(engine, "t-cache-run", effects)  # another run: its own scope, a miss
    assert runs_of(effects, "same_each_time:0") == 2


def test_workflow_scope_reuses_across_runs_of_one_workflow_not_across_workflows(
    engine: Engine, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.txt"
    first = finish(engine, "t-cache-wf-a", effects)
    second = finish(engine, "t-cache-wf-a", effects)
    finish(engine, "t-cache-wf-b", effects)
    finish(engine, "t-cache-wf-a", effects, n=2)  # other input: a miss
    assert runs_of(effects, "t-cache-wf-a:expensive:0") == 2
    assert runs_of(effects, "t-cache-wf-b:expensive:0") == 1
    assert second.output == first.output == {"expensive": {"value": 2}}


def test_global_scope_reuses_across_workflows_and_a_version_bump_misses(
    engine: Engine, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.txt"
    finish(engine, "t-cache-global-a", effects)
    finish(engine, "t-cache-global-b", effects)  # same node, input, version: a hit
    finish(engine, "t-cache-global-v2", effects)  # version 2: a miss
    assert runs_of(effects, "t-cache-global-a:expensive:0") == 1
    assert runs_of(effects, "t-cache-global-b:expensive:0") == 0
    assert runs_of(effects, "t-cache-global-v2:expensive:0") == 1


def test_an_expired_row_is_a_miss_and_is_refreshed(engine: Engine, tmp_path: Path) -> None:
    effects = tmp_path / "effects.txt"
    finish(engine, "t-cache-ttl", effects)
    finish(engine, "t-cache-ttl", effects)  # within 500 ms: a hit
    time.sleep(0.6)
    finish(engine, "t-cache-ttl", effects)  # expired: runs again, refreshes the row
    finish(engine, "t-cache-ttl", effects)  # the refreshed row: a hit
    assert runs_of(effects, "t-cache-ttl:expensive:0") == 2


def test_a_hit_survives_a_scheduler_restart(engine: Engine, tmp_path: Path) -> None:
    effects = tmp_path / "effects.txt"
    finish(engine, "t-cache-wf-a", effects)
    engine.kill9("scheduler")
    engine.scheduler()
    finish(engine, "t-cache-wf-a", effects)
    assert runs_of(effects, "t-cache-wf-a:expensive:0") == 1


def test_concurrent_writers_of_one_global_key_both_commit_into_one_row(database_url: str) -> None:
    """Two transactions write the same global-scope key at once: the second one's
    write reaches the server while the first's insert is still uncommitted. An UPDATE
    then INSERT hits a unique violation here on PostgreSQL; the upsert waits for the
    first commit and then updates, so both commit and one row (the last) remains."""
    import threading

    from sqlalchemy import select

    from smithers.shared.store import Store
    from smithers.shared.store import schema as s
    from smithers.shared.store.attempts import CacheWrite, _write_cache

    store = Store(database_url)
    store.migrate()
    cache = CacheWrite(scope="global", version="1", ttl_ms=None, workflow="w")
    written = threading.Event()
    errors: list[BaseException] = []
    key = "k" * 64
    row = select(s.cache_entries.c.key).where(s.cache_entries.c.key == key)

    def first() -> None:
        try:
            with store.write() as tx:
                _write_cache(tx, key, cache, "run-a", "expensive", {"v": "a"}, "att-a")
                tx.execute(row)  # the deferred upsert goes to the server before this read
                written.set()
                time.sleep(0.5)  # hold the uncommitted row while the second writer arrives
        except BaseException as exc:
            errors.append(exc)
            written.set()

    def second() -> None:
        written.wait(10)
        try:
            with store.write() as tx:
                _write_cache(tx, key, cache, "run-b", "expensive", {"v": "b"}, "att-b")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert errors == []
        with store.read() as conn:
            rows = conn.execute(select(s.cache_entries.c.run_id, s.cache_entries.c.value)).all()
        assert [tuple(r) for r in rows] == [("run-b", {"v": "b"})]
    finally:
        store.close()
