"""Dynamic fan-out with a real scheduler and Celery worker, on SQLite and PostgreSQL: a
map over twenty items runs one attempt per item, never more than its concurrency at
once though the worker has more slots; a failing item retries alone; the fan-in gets the
results in index order; one item is rewound alone; a list over max_width fails the run
with a clear error; an item's cached output is reused by a later run whose list holds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from smithers.gateway.app import create_app
from smithers.gateway.store import GatewayStore
from smithers.shared.registry import load_registry
from smithers.shared.status import AttemptState, RunStatus
from smithers.shared.store.queries import attempts_of
from tests.integration.conftest import ROOT, Engine
from tests.integration.gateway.support import Gateway, config

pytestmark = pytest.mark.timeout(180)

WORKFLOWS = "tests.integration.workflows_fanout"


def fanout_engine(engine_factory: Any, database_url: str) -> Engine:
    engine: Engine = engine_factory(database_url, SMITHERS_WORKFLOWS=WORKFLOWS)
    engine.registry = load_registry(WORKFLOWS, str(ROOT))
    engine.scheduler()
    engine.worker(concurrency=5)  # more slots than the map's concurrency of 3
    return engine


@contextmanager
def gateway(engine: Engine) -> Iterator[Gateway]:
    """An in-process gateway holding the fan-out workflows."""
    store = GatewayStore(engine.database_url)
    gw = Gateway(
        create_app(config(engine.database_url, engine.redis_url), store=store, registry=engine.registry)
    )
    try:
        yield gw
    finally:
        gw.close()


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


def test_a_map_runs_each_item_alone_within_its_concurrency_in_order_and_per_item(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    """One engine per store for every case: its start dominates the test's time."""
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

    # when item 4 alone is rewound over REST (time travel per item)
    ran_before = len(rows)
    with gateway(engine) as gw:
        url, launcher = f"/v1/runs/{run_id}/rewind", gw.auth("run:write", "test")
        # bad items are refused with a clear JSON error, before anything changes
        for body, message in (
            ({"node_id": "total", "item": 0}, "'total' is not a map"),
            ({"node_id": "square", "item": 20}, "has no item 20 (width 20)"),
            ({"node_id": "square", "item": -1}, "'item' must be >= 0"),
            ({"node_id": "square", "item": "4"}, "'item'"),
        ):
            bad = gw.client.post(url, json={**body, "confirm": True}, headers=launcher)
            assert bad.status_code == 400 and message in bad.get_json()["error"]["message"], bad.get_json()
        done = gw.client.post(url, json={"node_id": "square", "item": 4, "confirm": True}, headers=launcher)
        assert done.status_code == 200, done.get_json()
        assert done.get_json()["item"] == 4 and done.get_json()["reopened"] == ["square", "total"]
    again = engine.wait(run_id, timeout=60)

    # then only item 4 and the fan-in ran again, and the results are the same, in order
    assert again.status is RunStatus.SUCCEEDED, again.error
    assert again.output == run.output
    assert {(what, i) for what, i, _, _ in notes(effects)[ran_before:]} == {("start", 4), ("end", 4)}
    with engine.store.read() as conn:
        after = [a for a in attempts_of(conn, run_id) if a.node_id == "square"]
    assert len(after) == len(items) + 1
    assert sorted(a.number for a in after if a.iteration == 5) == [1, 2]

    # and a run whose list is over max_width fails clearly, running no item
    wide = engine.wait(engine.launch("t-map", {"n": 31}), timeout=60)
    assert wide.status is RunStatus.FAILED
    assert wide.error is not None and wide.error["code"] == "map_too_wide"
    assert wide.error["node_id"] == "square"
    assert "31 items to map over, more than max_width 30" in wide.error["message"]
    with engine.store.read() as conn:
        assert [a for a in attempts_of(conn, wide.run_id) if a.node_id == "square"] == []

    # given a run of another map that shouted two words (workflow-scoped cache per item)
    shouts, words = tmp_path / "shouts.txt", tmp_path / "words.txt"
    given = {"words": str(words), "effects": str(shouts)}
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
    ran = sorted(what for what, *_ in notes(shouts) if what.startswith("shout:"))
    assert ran == ["shout:ab", "shout:cd", "shout:ef"]
    cached = [e for e in engine.events(second) if e.type == "attempt.cached"]
    assert sorted(e.iteration for e in cached) == [2, 3]
