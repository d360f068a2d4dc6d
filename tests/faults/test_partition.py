"""A step worker on its own host (a network namespace joined by a veth pair, reaching a
private Redis and PostgreSQL across it) is cut off for longer than its lease while its
step runs, finishes the step, and comes back: its late result is refused and recorded,
the re-dispatched attempt commits once, and the worker goes on consuming.

PostgreSQL only: a SQLite store is a file on this host, which a worker reaches through
the filesystem, so a network cut does not separate it from the store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smithers.shared.registry import load_registry
from smithers.shared.status import RunStatus
from smithers.shared.store.queries import attempts_of
from tests.conftest import missing, redis_binary
from tests.faults.cluster import WORKFLOWS, Settings
from tests.faults.services import Netns, PrivatePostgres, RedisServer, netns_unavailable, postgres_available
from tests.integration.conftest import ROOT, Engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
LEASE_S = 3.0
STEP_S = 7.0  # longer than the lease, shorter than the cut
CUT_S = 10.0


class Site:
    """The namespace, the services and the engine of one test; ``close()`` stops all."""

    def __init__(self, workdir: Path) -> None:
        self.netns = Netns(1)
        self.redis: RedisServer | None = None
        self.postgres: PrivatePostgres | None = None
        self.engine: Engine | None = None
        self.workdir = workdir

    def start(self) -> Engine:
        self.netns.create()
        self.redis = RedisServer(self.workdir / "redis", (self.netns.host_addr,))
        self.redis.start()
        self.postgres = PrivatePostgres((self.netns.host_addr,))
        self.postgres.start()
        settings = Settings(lease_s=LEASE_S, redispatch_after_s=3.0)
        self.engine = Engine(self.postgres.url(), self.redis.url(), self.workdir, settings.env())
        self.engine.registry = load_registry(WORKFLOWS, str(ROOT))
        return self.engine

    def remote_worker(self, name: str) -> None:
        assert self.engine is not None and self.redis is not None and self.postgres is not None
        env = {
            "SMITHERS_REDIS_URL": self.redis.url(self.netns.host_addr),
            "SMITHERS_DATABASE_URL": self.postgres.url(self.netns.host_addr),
        }
        self.engine.worker(name, concurrency=1, prefix=self.netns.prefix, env=env)

    def close(self) -> None:
        try:
            if self.engine is not None:
                self.engine.stop_all()
                self.engine.broker.close()
                self.engine.store.close()
        finally:
            self.netns.destroy()
            if self.redis is not None:
                self.redis.stop()
            if self.postgres is not None:
                self.postgres.destroy()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    if redis_binary() is None:
        missing("redis-server")
    if why := postgres_available():
        missing(f"a private PostgreSQL ({why})")
    if why := netns_unavailable():
        missing(f"network namespaces ({why})")
    made = Site(tmp_path)
    try:
        yield made
    finally:
        made.close()


def of(event_type: str, node: str = "work") -> Any:
    return lambda ev: ev.type == event_type and ev.node_id == node


def test_a_worker_cut_off_past_its_lease_is_fenced_then_goes_on_consuming(site: Site, tmp_path: Path) -> None:
    # given a scheduler on this host and a step worker in its own network namespace
    eng = site.start()
    eng.scheduler()
    site.remote_worker("remote")
    executions = tmp_path / "executions.log"
    run_id = eng.launch("f-slow", {"sleep": STEP_S, "executions": str(executions)}, run_id="cut-1")
    started = eng.wait_event(run_id, of("attempt.started"), timeout=60)

    # when its link goes down while the step runs, for longer than the lease
    site.netns.cut()
    cut_at = time.monotonic()
    try:
        # the lease runs out, and a worker on this host takes the re-dispatched attempt
        eng.worker("local", concurrency=1)
        lost = eng.wait_event(run_id, of("attempt.lost"), timeout=30)
        assert lost.attempt_id == started.attempt_id
        time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
    finally:
        # then the link comes back: the remote worker's step finished meanwhile
        site.netns.heal()

    # then its late result is refused and recorded, never applied
    refused = eng.wait_event(run_id, of("attempt.refused"), timeout=60)
    assert refused.attempt_id == started.attempt_id
    run = eng.wait(run_id, timeout=60)
    assert run.status is RunStatus.SUCCEEDED and run.output == {"work": {"done": True}}
    with eng.store.read() as conn:
        attempts = attempts_of(conn, run_id)
    assert [(a.state.value, (a.worker or "").split("@")[0]) for a in attempts] == [
        ("lost", "remote"),
        ("succeeded", "local"),
    ]
    # the re-dispatched attempt committed once: one node end, one output, two executions
    events = eng.events(run_id)
    assert [e.type for e in events].count("node.succeeded") == 1
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len(executions.read_text().splitlines()) == 2

    # and the remote worker goes on consuming: with the local one gone, a later run runs on it
    eng.kill9("local")
    later = eng.launch("f-slow", {"sleep": 0.5, "executions": str(executions)}, run_id="cut-2")
    run = eng.wait(later, timeout=90)
    assert run.status is RunStatus.SUCCEEDED
    with eng.store.read() as conn:
        (attempt,) = attempts_of(conn, later)
    assert (attempt.worker or "").startswith("remote")
    assert eng.procs["remote"].poll() is None  # the same process, not a restart
