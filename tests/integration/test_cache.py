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
