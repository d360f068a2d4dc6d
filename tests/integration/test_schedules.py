"""Cron schedules on SQLite and PostgreSQL: two real scheduler processes fire a
per-second schedule and each tick launches exactly one run (its id derived from the
tick), which a real worker runs; after downtime the declared policy applies (skip, or
catch up at most N) with several schedulers looking; pause and resume over REST and the
command line (local and remote), audited with the actor, and a paused schedule fires
nothing."""

from __future__ import annotations

import argparse
import itertools
import os
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from smithers.cli import exitcodes
from smithers.cli.commands_schedules import remote_schedules
from smithers.cli.main import main as cli_main
from smithers.client import Client
from smithers.gateway.app import create_app
from smithers.gateway.store import GatewayStore
from smithers.scheduler.ticker import Ticker
from smithers.shared.registry import Registry, load_registry
from smithers.shared.schedule import run_id_for
from smithers.shared.status import RunStatus
from smithers.shared.store import Store
from smithers.shared.store import schema as s
from smithers.shared.store.audit import audit_entries
from smithers.shared.store.queries import get_run
from smithers.shared.store.schedules import states
from tests.integration import scheduled_workflows
from tests.integration.conftest import TEST_WORKFLOWS, Engine
from tests.integration.gateway.live import base_env, smithers
from tests.integration.gateway.support import ROOT, Gateway, config

pytestmark = pytest.mark.timeout(180)

SCHEDULED = "tests.integration.scheduled_workflows"
EVERY_SECOND = "t-scheduled:every-second"


def scheduled_registry() -> Registry:
    return load_registry(SCHEDULED, str(ROOT))


def runs_of(store: Store, workflow: str) -> dict[str, Any]:
    with store.read() as conn:
        rows = conn.execute(select(s.runs.c.run_id, s.runs.c.status).where(s.runs.c.workflow == workflow))
        return {r.run_id: RunStatus(r.status) for r in rows}


def fired(store: Store, schedule_id: str) -> list[tuple[str, float]]:
    """(run id, tick) of each ``schedule.fired`` audit row of the schedule, in order."""
    with store.read() as conn:
        rows = audit_entries(conn, action="schedule.fired", target_id=schedule_id, limit=10_000)
    return [(str(r.run_id), datetime.fromisoformat(r.detail["tick"]).timestamp()) for r in rows]


def live_schedulers(store: Store) -> int:
    with store.read() as conn:
        rows = conn.execute(select(s.holders.c.process_id).where(s.holders.c.role == "scheduler"))
        return len({r.process_id for r in rows})


def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_scheduler_processes_launch_one_run_per_tick(engine_factory: Any, database_url: str) -> None:
    # given a worker and two scheduler processes that both load a per-second schedule
    engine: Engine = engine_factory(database_url, SMITHERS_WORKFLOWS=f"{TEST_WORKFLOWS},{SCHEDULED}")
    engine.worker()
    engine.scheduler("scheduler-a")
    engine.scheduler("scheduler-b")
    wait_for("both schedulers to announce themselves", lambda: live_schedulers(engine.store) == 2)
    both_at = time.time()

    # when they have both been firing for a few ticks
    def succeeded_since_both() -> bool:
        done = [
            rid
            for rid, tick in fired(engine.store, EVERY_SECOND)
            if tick > both_at + 1 and runs_of(engine.store, "t-scheduled").get(rid) is RunStatus.SUCCEEDED
        ]
        return len(done) >= 3

    wait_for("runs of ticks fired while both schedulers ran", succeeded_since_both)
    engine.kill9("scheduler-a")
    engine.kill9("scheduler-b")

    # then each tick has one audit row, one run under the id derived from it, none missed
    launched = fired(engine.store, EVERY_SECOND)
    runs = runs_of(engine.store, "t-scheduled")
    ticks = [tick for _, tick in launched]
    assert len(launched) >= 4
    assert ticks == sorted(set(ticks)), "a tick fired twice"
    assert all(b - a == 1.0 for a, b in itertools.pairwise(ticks)), f"a tick was missed: {ticks}"
    assert sorted(runs) == sorted(rid for rid, _ in launched)
    assert all(rid == run_id_for("t-scheduled", "every-second", tick) for rid, tick in launched)
    with engine.store.read() as conn:
        state = states(conn)[("t-scheduled", "every-second")]
        first = get_run(conn, launched[0][0])
    assert state.fired == len(launched) and state.last_run_id == launched[-1][0]
    assert state.skipped == 0
    assert first is not None and first.launched_by == f"schedule:{EVERY_SECOND}"
    assert first.input == {"kind": "tick"} and first.status is RunStatus.SUCCEEDED


HOUR = 3600.0


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def test_after_downtime_the_policy_applies_however_many_schedulers_look(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    clock = [utc(2026, 1, 5, 0, 10)]  # a Monday
    registry = Registry()  # the report workflow's schedules only
    registry.register(scheduled_workflows.report, SCHEDULED, "rev-report")
    tickers = [Ticker(store, None, registry, clock=lambda: clock[0]) for _ in range(2)]
    hourly, weekday = "t-scheduled-report:hourly", "t-scheduled-report:weekday"
    try:
        # given the schedules seen by a scheduler (their ticks count from then)
        assert tickers[0].tick() == []
        # when every scheduler was down for five hours, then two look at once
        clock[0] += 5 * HOUR
        assert [t.tick() for t in tickers] == [[], []]
        # then the hourly schedule (skip) launched none of its missed ticks (01:00 .. 05:00)
        assert fired(store, hourly) == []
        with store.read() as conn:
            row = states(conn)[("t-scheduled-report", "hourly")]
        assert (row.skipped, row.done_until) == (5, utc(2026, 1, 5, 5, 0))
        # the next tick, on time, fires once, whichever scheduler sees it
        clock[0] = utc(2026, 1, 5, 6, 0, 20)
        launched = [rid for t in tickers for rid in t.tick()]
        assert launched == [run_id_for("t-scheduled-report", "hourly", utc(2026, 1, 5, 6, 0))]
        assert [rid for rid, _ in fired(store, hourly)] == launched

        # the weekday schedule (09:00 Paris, catch_up=2) was down across four mornings:
        # the latest two run, oldest first, the two before are skipped
        clock[0] = utc(2026, 1, 8, 10, 0)  # Thursday 11:00 in Paris
        caught = [rid for t in tickers for rid in t.tick()]
        mornings = [utc(2026, 1, d, 8, 0) for d in (7, 8)]  # 09:00 CET
        expected = [run_id_for("t-scheduled-report", "weekday", m) for m in mornings]
        assert [rid for rid, _ in fired(store, weekday)] == expected
        assert [rid for rid in caught if rid in expected] == expected
        with store.read() as conn:
            row = states(conn)[("t-scheduled-report", "weekday")]
            run = get_run(conn, expected[0])
        assert (row.skipped, row.fired, row.last_run_id) == (2, 2, expected[-1])
        assert run is not None and run.input == {"kind": "report"} and run.status is RunStatus.QUEUED
    finally:
        store.close()


def gateway(database_url: str, registry: Registry) -> Gateway:
    store = GatewayStore(database_url)
    store.migrate()
    return Gateway(create_app(config(database_url, None), store=store, registry=registry))


def schedule_args(action: str, schedule_id: str | None = None, **extra: Any) -> argparse.Namespace:
    return argparse.Namespace(action=action, schedule_id=schedule_id, workflow=None, json=False, **extra)


def test_pause_and_resume_over_rest_and_the_command_line(
    database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = scheduled_registry()
    gw = gateway(database_url, registry)
    store = Store(database_url)
    clock = [time.time()]
    ticker = Ticker(store, None, registry, clock=lambda: clock[0])
    weekday = "t-scheduled-report:weekday"
    try:
        reader, writer = gw.auth("run:read", "viewer"), gw.auth("run:read,run:write", "alice")
        listed = gw.client.get("/v1/schedules?workflow=t-scheduled-report", headers=reader)
        assert listed.status_code == 200
        got = {item["id"]: item for item in listed.get_json()["schedules"]}
        assert set(got) == {weekday, "t-scheduled-report:hourly"}
        assert got[weekday]["tz"] == "Europe/Paris" and got[weekday]["policy"] == "catch_up:2"
        assert got[weekday]["next_tick_local"].endswith(("T09:00:00+01:00", "T09:00:00+02:00"))
        assert not got[weekday]["paused"] and got[weekday]["last_run_id"] is None

        # refusals: clear JSON errors, nothing changed
        assert gw.client.get("/v1/schedules", headers=gw.auth("approval:read")).status_code == 403
        assert gw.client.post(f"/v1/schedules/{EVERY_SECOND}/pause", headers=reader).status_code == 403
        missing = gw.client.post("/v1/schedules/t-scheduled-report:nightly/pause", headers=writer)
        assert missing.status_code == 404 and "nightly" in missing.get_json()["error"]["message"]
        malformed = gw.client.post("/v1/schedules/no-colon/pause", headers=writer)
        assert malformed.status_code == 400
        assert "WORKFLOW:SCHEDULE_ID" in malformed.get_json()["error"]["message"]
        extra = gw.client.post(f"/v1/schedules/{EVERY_SECOND}/pause", json={"why": 1}, headers=writer)
        assert extra.status_code == 400
        assert gw.client.get("/v1/schedules?workflow=Bad Name", headers=reader).status_code == 400

        # given the per-second schedule seen by a scheduler
        assert ticker.tick() == []
        # when alice pauses it over REST, its ticks launch nothing
        paused = gw.client.post(f"/v1/schedules/{EVERY_SECOND}/pause", headers=writer)
        assert paused.status_code == 200, paused.get_json()
        body = paused.get_json()
        assert body["paused"] and body["paused_by"] == "alice" and body["next_tick"] is None
        clock[0] += 5
        assert ticker.tick() == [] and fired(store, EVERY_SECOND) == []

        # then the local command line (an operator, asserted with --as) lists and resumes it
        env = {**base_env(database_url, None), "SMITHERS_WORKFLOWS": SCHEDULED}
        for key in [k for k in os.environ if k.startswith("SMITHERS_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        assert cli_main(["schedules"]) == exitcodes.OK
        listing = capsys.readouterr().out.splitlines()
        line = next(x for x in listing if x.startswith(EVERY_SECOND))
        assert "paused by alice" in line and "skip" in line
        assert "catch_up:2" in next(x for x in listing if x.startswith(weekday))
        assert cli_main(["schedules", "resume"]) == exitcodes.BAD_INPUT
        assert "needs a schedule id" in capsys.readouterr().err
        assert cli_main(["schedules", "pause", "t-scheduled-report:nightly"]) == exitcodes.NOT_FOUND
        assert "'t-scheduled-report:nightly' not found" in capsys.readouterr().err
        assert cli_main(["schedules", "pause", "nightly"]) == exitcodes.BAD_INPUT
        assert "WORKFLOW:SCHEDULE_ID" in capsys.readouterr().err
        resumed = smithers(env, "schedules", "resume", EVERY_SECOND, "--as", "ops")
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.startswith(EVERY_SECOND) and "active" in resumed.stdout
        # ticks that came while paused are skipped; those after the resume fire
        with store.read() as conn:
            row = states(conn)[("t-scheduled", "every-second")]
        assert not row.paused and row.paused_by is None and row.changed_at is not None
        clock[0] = time.time() + 2.5
        after = ticker.tick()
        ticks = [tick for _, tick in fired(store, EVERY_SECOND)]
        assert len(after) >= 2 and len(ticks) == len(after)
        assert min(ticks) > row.changed_at

        # remotely, the token's subject pauses and resumes it (through the gateway's API)
        token = gw.token("run:read,run:write", "bob")
        with Client("http://gateway", token, transport=httpx.WSGITransport(app=gw.app)) as api:
            assert remote_schedules(schedule_args("pause", EVERY_SECOND), api) == exitcodes.OK
            assert "paused by bob" in capsys.readouterr().out
            assert remote_schedules(schedule_args("list"), api) == exitcodes.OK
            out = capsys.readouterr().out.splitlines()
            assert "paused by bob" in next(x for x in out if x.startswith(EVERY_SECOND))
            assert remote_schedules(schedule_args("resume", EVERY_SECOND), api) == exitcodes.OK
            assert "active" in capsys.readouterr().out

        with store.read() as conn:
            trail = [(a.action, a.actor) for a in audit_entries(conn, target_id=EVERY_SECOND)]
        assert [t for t in trail if t[0] != "schedule.fired"] == [
            ("schedule.paused", "alice"),
            ("schedule.resumed", "ops"),
            ("schedule.paused", "bob"),
            ("schedule.resumed", "bob"),
        ]
    finally:
        gw.close()
        store.close()
