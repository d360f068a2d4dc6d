"""An engine made of real processes: scheduler and Celery workers as subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smithers.shared import operations
from smithers.shared.actions import DecisionConfig
from smithers.shared.broker import Broker
from smithers.shared.keys import EPOCH_KEY
from smithers.shared.registry import Registry, load_registry
from smithers.shared.status import RunStatus
from smithers.shared.store import EventRecord, RunRecord, Store
from smithers.shared.store.advance import Decider
from smithers.shared.store.queries import events_after, get_run

ROOT = Path(__file__).resolve().parents[2]
TEST_WORKFLOWS = "tests.integration.workflows"


class Engine:
    """Starts, kills and restarts engine processes; launches and waits for runs."""

    def __init__(self, database_url: str, redis_url: str, workdir: Path, env: dict[str, str]) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.workdir = workdir
        self.env = {
            **os.environ,
            "SMITHERS_DATABASE_URL": database_url,
            "SMITHERS_REDIS_URL": redis_url,
            "SMITHERS_WORKFLOWS": TEST_WORKFLOWS,
            "SMITHERS_SWEEP_INTERVAL": "0.5",
            # a backstop in tests: the broker epoch re-sends lost messages (test_lost_messages
            # proves it with 60 s); a short delay also covers stalls a loaded machine shows
            "SMITHERS_REDISPATCH_AFTER": "5",
            "SMITHERS_LEASE_SECONDS": "3",
            "SMITHERS_SANDBOX_ROOT": str(workdir / "sandbox"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            **env,
        }
        self.store = Store(database_url)
        self.store.migrate()
        self.broker = Broker(redis_url)
        self.registry: Registry = load_registry(TEST_WORKFLOWS, str(ROOT))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(
        self, name: str, *args: str, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``smithers <args>`` in its own process group, logging to logs/<name>.log;
        ``prefix`` runs it under another command (``ip netns exec NS``), ``env`` overrides
        some of the engine's variables for this process only."""
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "smithers", *args],
            env={**self.env, **(env or {})},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def scheduler(self, name: str = "scheduler", wait: bool = True) -> subprocess.Popen[bytes]:
        """Start a scheduler; with ``wait``, until its first sweep wrote the broker's
        epoch (a fresh Redis has none: a step sent before it would be taken as lost
        with an earlier broker and sent twice, docs/architecture.md "Lost messages")."""
        proc = self.start(name, "scheduler")
        wait = wait and not self.env.get("SMITHERS_BROKER_URL")  # another broker: no epoch
        deadline = time.time() + 60
        while wait and self.broker.redis.get(EPOCH_KEY) is None:
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"scheduler {name} did not start; logs in {self.logs}")
            time.sleep(0.05)
        return proc

    def worker(
        self,
        name: str = "worker",
        queues: str = "steps",
        concurrency: int = 2,
        prefix: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        return self.start(
            name,
            "worker",
            "--queues",
            queues,
            "--concurrency",
            str(concurrency),
            "--name",
            name,
            prefix=prefix,
            env=env,
        )

    def kill9(self, name: str) -> None:
        """SIGKILL the whole process group (the worker's pool children too)."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()

    def launch(
        self,
        workflow: str,
        run_input: dict[str, Any] | None = None,
        run_id: str | None = None,
        decide: bool = False,
        priority: int = 0,
    ) -> str:
        """Launch a run; with ``decide``, as the gateway does: the launch makes the first
        decision and sends the first steps (else a scheduler is woken for it)."""
        decider = Decider(self.registry, DecisionConfig(), 500) if decide else None
        run, _ = operations.launch(
            self.store,
            self.broker,
            self.registry,
            workflow=workflow,
            run_input=run_input or {},
            run_id=run_id,
            launched_by="test",
            deployment_version="test",
            decider=decider,
            priority=priority,
        )
        return run.run_id

    def run(self, run_id: str) -> RunRecord:
        with self.store.read() as conn:
            run = get_run(conn, run_id)
        assert run is not None
        return run

    def events(self, run_id: str) -> list[EventRecord]:
        with self.store.read() as conn:
            return events_after(conn, run_id, 0, 100_000)

    def wait(self, run_id: str, timeout: float = 60, until: set[RunStatus] | None = None) -> RunRecord:
        """Poll until the run reaches one of ``until`` (default: terminal)."""
        wanted = until or {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
        deadline = time.time() + timeout
        while time.time() < deadline:
            run = self.run(run_id)
            if run.status in wanted:
                return run
            time.sleep(0.1)
        raise AssertionError(
            f"run {run_id} still {self.run(run_id).status} after {timeout}s; logs in {self.logs}"
        )

    def wait_event(self, run_id: str, predicate: Any, timeout: float = 30) -> EventRecord:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for ev in self.events(run_id):
                if predicate(ev):
                    return ev
            time.sleep(0.05)
        raise AssertionError(f"no matching event on {run_id} after {timeout}s")


@pytest.fixture
def engine_factory(redis_url: str, tmp_path: Path) -> Iterator[Any]:
    made: list[Engine] = []

    def make(database_url: str, **env: str) -> Engine:
        eng = Engine(database_url, redis_url, tmp_path, env)
        made.append(eng)
        return eng

    yield make
    for eng in made:
        eng.stop_all()
        eng.broker.close()
        eng.store.close()


@pytest.fixture
def engine(engine_factory: Any, database_url: str) -> Engine:
    """A scheduler and a step worker on ``database_url`` (both backends)."""
    eng: Engine = engine_factory(database_url)
    eng.scheduler()
    eng.worker()
    return eng
