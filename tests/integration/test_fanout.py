"""Dynamic fan-out with a real scheduler and Celery worker, on SQLite and PostgreSQL: a
map over twenty items runs one attempt per item, never more than its concurrency at
once though the worker has more slots; a failing item retries alone; the fan-in gets the
results in index order; an item's cached output is reused by a later run whose list
holds it; a list over max_width fails the run with a clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from smithers.shared.registry import load_registry
from smithers.shared.status import AttemptState, RunStatus
from smithers.shared.store.queries import attempts_of
from tests.integration.conftest import ROOT, Engine

pytestmark = pytest.mark.timeout(180)

WORKFLOWS = "tests.integration.workflows_fanout"


def fanout_engine(engine_factory: Any, database_url: str) -> Engine:
    engine: Engine = engine_factory(database_url, SMITHERS_WORKFLOWS=WORKFLOWS)
    engine.registry = load_registry(WORKFLOWS, str(ROOT))
    engine.scheduler()
    engine.worker(concurrency=5)  # more slots than the map's concurrency of 3
    return engine


def notes(path: Path) -> list[tuple[str, int, int, float]]:
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(what, int(index), int(attempt), float(t)) for what, index, attempt, t in rows]


def most_at_once(rows: list[tuple[str, int, int, float]]) -> int:
    """The most items between their start and their end (or failure) at one time."""
    edges = sorted((t, 1 if what == "start" else -1) for what, _, _, t in rows)
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def test_a_map_runs_each_item_within_its_concurrency_and_retries_a_failing_item_alone(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given a map over 20 items, 3 at a time, whose item 7 fails its first attempt
    engine = fanout_engine(engine_factory, database_url)
    effects = tmp_path / "effects.txt"

    # when the run goes
    run_id = engine.launch("t-map", {"n": 20, "flaky": 7, "effects": str(effects)})
    run = engine.wait(run_id, timeout=120)

    # then it succeeds; the fan-in saw every result, in index order
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.output == {"total": {"indexes": list(range(20)), "squares": [i * i for i in range(20)]}}
    # one attempt per item, two for item 7 alone (the others never ran again)
    with engine.store.read() as conn:
        items = [a for a in attempts_of(conn, run_id) if a.node_id == "square"]
    per_item: dict[int, list[AttemptState]] = {}
    for a in sorted(items, key=lambda a: a.number):
        per_item.setdefault(a.iteration - 1, []).append(a.state)
    assert sorted(per_item) == list(range(20))
    assert per_item[7] == [AttemptState.FAILED, AttemptState.SUCCEEDED]
    assert all(states == [AttemptState.SUCCEEDED] for i, states in per_item.items() if i != 7)
    rows = notes(effects)
    assert [(i, n) for what, i, n, _ in rows if what == "fail"] == [(7, 1)]
    # never more than 3 items at once, though the worker had 5 slots
    assert most_at_once(rows) <= 3
    # the map announced its width
    started = [e for e in engine.events(run_id) if e.type == "map.started"]
    assert [e.payload for e in started] == [{"width": 20, "concurrency": 3}]

    # and a run whose list is over max_width fails clearly, running no item
    wide = engine.wait(engine.launch("t-map", {"n": 31}), timeout=60)
    assert wide.status is RunStatus.FAILED
    assert wide.error is not None and wide.error["code"] == "map_too_wide"
    assert wide.error["node_id"] == "square"
    assert "31 items to map over, more than max_width 30" in wide.error["message"]
    with engine.store.read() as conn:
        assert [a for a in attempts_of(conn, wide.run_id) if a.node_id == "square"] == []


def test_an_item_cached_by_an_earlier_run_is_not_run_again(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given a run that shouted two words (workflow-scoped cache per item)
    engine = fanout_engine(engine_factory, database_url)
    effects, words = tmp_path / "effects.txt", tmp_path / "words.txt"
    given = {"words": str(words), "effects": str(effects)}
    words.write_text("ab cd")
    first = engine.launch("t-map-cached", given)
    assert engine.wait(first, timeout=60).status is RunStatus.SUCCEEDED

    # when a second run's list (same input) holds them and a new one, at other places
    words.write_text("ef ab cd")
    second = engine.launch("t-map-cached", given)
    run = engine.wait(second, timeout=60)

    # then only the new word ran; the fan-in has every result in its list's order
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.output == {"shout": ["EF", "AB", "CD"]}
    ran = sorted(what for what, *_ in notes(effects) if what.startswith("shout:"))
    assert ran == ["shout:ab", "shout:cd", "shout:ef"]
    cached = [e for e in engine.events(second) if e.type == "attempt.cached"]
    assert sorted(e.iteration for e in cached) == [2, 3]
