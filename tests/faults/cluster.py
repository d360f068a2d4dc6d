"""A cluster of real processes for the harness: a gateway, two schedulers and two step
workers (``python -m smithers gateway|scheduler|worker``, started by the integration
tests' :class:`~tests.integration.conftest.Engine`), on a SQLite file or a private
PostgreSQL, with a private Redis; one worker runs in a network namespace of its own
when the machine allows it. Plus a REST client with a bearer token minted as the
gateway tests mint one, an SSE reader, and RSS sampling from /proc."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smithers.gateway.auth import mint_with_key
from smithers.shared.grants import GrantKind, TtlPolicy
from smithers.shared.store.grants import ControlPlaneStore
from tests.conftest import free_port
from tests.faults.services import Netns, PrivatePostgres, RedisServer
from tests.integration.conftest import Engine

KEY = "fault-harness-signing-key-" + "f" * 32
WORKFLOWS = "tests.faults.workflows"
SCHEDULERS = ("s1", "s2")
WORKERS = ("w1", "w2")


@dataclass
class Settings:
    """What the engine processes run with (short lease: faults recover in seconds)."""

    lease_s: float = 3.0
    redispatch_after_s: float = 3.0
    sweep_interval_s: float = 0.5
    concurrency: int = 2

    def env(self) -> dict[str, str]:
        return {
            "SMITHERS_LEASE_SECONDS": str(self.lease_s),
            "SMITHERS_REDISPATCH_AFTER": str(self.redispatch_after_s),
            "SMITHERS_SWEEP_INTERVAL": str(self.sweep_interval_s),
            "SMITHERS_WORKFLOWS": WORKFLOWS,
            "SMITHERS_JWT_SECRET": KEY,
            "SMITHERS_LOG_LEVEL": "WARNING",
        }


@dataclass
class Cluster:
    """Starts the services and processes, restarts what dies, stops everything by PID."""

    store_kind: str  # "sqlite" or "postgres"
    workdir: Path
    settings: Settings = field(default_factory=Settings)
    use_netns: bool = True
    redis: RedisServer | None = None
    postgres: PrivatePostgres | None = None
    netns: Netns | None = None
    engine: Engine | None = None
    gateway_port: int = 0
    token: str = ""
    restarts: dict[str, int] = field(default_factory=dict)
    expected_down: set[str] = field(default_factory=set)
    closing: threading.Event = field(default_factory=threading.Event)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.use_netns:
            self.netns = Netns(0)
            self.netns.create()
        extra = (self.netns.host_addr,) if self.netns else ()
        self.redis = RedisServer(self.workdir / "redis", extra)
        self.redis.start()
        if self.store_kind == "postgres":
            self.postgres = PrivatePostgres(extra)
            self.postgres.start()
            database_url = self.postgres.url()
        else:
            database_url = f"sqlite:///{self.workdir / 'smithers.db'}"
        self.engine = Engine(database_url, self.redis.url(), self.workdir, self.settings.env())
        control = ControlPlaneStore(self.engine.store, TtlPolicy.from_env({}))
        grant = control.issue(
            subject="fault-harness",
            scopes="run:read,run:write",
            kind=GrantKind.AUTOMATION,
            ttl_s=24 * 3600,
            issuer="test",
            actor="fault-harness",
        )
        self.token = mint_with_key(KEY, "smithers", grant)
        self.gateway_port = free_port()
        self.start_gateway()
        for name in SCHEDULERS:
            self.engine.scheduler(name)
        for name in WORKERS:
            self.start_worker(name)

    def netns_env(self) -> dict[str, str]:
        """The addresses a worker in the namespace reaches Redis and the store at."""
        assert self.netns is not None and self.redis is not None
        env = {"SMITHERS_REDIS_URL": self.redis.url(self.netns.host_addr)}
        if self.postgres is not None:
            env["SMITHERS_DATABASE_URL"] = self.postgres.url(self.netns.host_addr)
        return env

    def start_worker(self, name: str) -> None:
        assert self.engine is not None
        if name == "w2" and self.netns is not None:
            self.engine.worker(
                name, concurrency=self.settings.concurrency, prefix=self.netns.prefix, env=self.netns_env()
            )
        else:
            self.engine.worker(name, concurrency=self.settings.concurrency)

    def start_gateway(self) -> float:
        """Start the gateway; returns the seconds until /healthz answered 200 (bounded)."""
        assert self.engine is not None
        began = time.monotonic()
        self.engine.start(
            "gateway", "gateway", "--host", "127.0.0.1", "--port", str(self.gateway_port), "--workers", "1"
        )
        deadline = began + 60
        while time.monotonic() < deadline:
            proc = self.engine.procs.get("gateway")
            if proc is None or proc.poll() is not None:
                break
            try:
                if self.request("GET", "/healthz", timeout=1)[0] == 200:
                    return time.monotonic() - began
            except OSError:
                pass
            time.sleep(0.05)
        return float("inf")

    def restart(self, name: str) -> float:
        """Start process ``name`` again; for the gateway, the seconds until healthy."""
        assert self.engine is not None
        self.restarts[name] = self.restarts.get(name, 0) + 1
        if name == "gateway":
            return self.start_gateway()
        if name in SCHEDULERS:
            self.engine.scheduler(name)
        else:
            self.start_worker(name)
        return 0.0

    def kill9(self, name: str) -> None:
        assert self.engine is not None
        if name in self.engine.procs:
            self.engine.kill9(name)

    def dead(self) -> list[str]:
        """Processes that exited without being killed by a fault (Celery exits when it
        gives up on a lost broker): a supervisor restarts them (:meth:`restart_dead`)."""
        assert self.engine is not None
        return [
            n for n, p in self.engine.procs.items() if p.poll() is not None and n not in self.expected_down
        ]

    def restart_dead(self, name: str) -> None:
        assert self.engine is not None
        self.engine.procs.pop(name, None)
        self.restart(name)

    def stop(self) -> None:
        """Stop everything this cluster started, by PID; safe to call twice."""
        self.closing.set()
        try:
            if self.engine is not None:
                self.engine.stop_all()
                self.engine.broker.close()
                self.engine.store.close()
        finally:
            if self.netns is not None:
                self.netns.destroy()
            if self.redis is not None:
                self.redis.stop()
            if self.postgres is not None:
                self.postgres.destroy()

    # -- REST and SSE ---------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.gateway_port, timeout=timeout)
        try:
            headers = {"Authorization": f"Bearer {self.token}"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            try:
                return response.status, json.loads(raw) if raw else None
            except ValueError:
                return response.status, raw.decode(errors="replace")
        finally:
            conn.close()

    def launch(self, run_id: str, workflow: str, run_input: dict[str, Any], give_up_s: float) -> str | None:
        """POST /v1/runs with a client-chosen id, again (same id, same input: idempotent)
        until it is accepted or ``give_up_s`` passed; returns None or why it was refused."""
        deadline = time.monotonic() + give_up_s
        last = "never answered"
        tries = 0
        while time.monotonic() < deadline and tries < 1000 and not self.closing.is_set():
            tries += 1
            try:
                status, body = self.request(
                    "POST", "/v1/runs", {"workflow": workflow, "input": run_input, "run_id": run_id}
                )
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if status in (200, 201):
                    return None
                last = f"HTTP {status}: {body}"
                if 400 <= status < 500 and status not in (408, 429):
                    return last
            time.sleep(0.25)
        return last

    def sse_events(self, run_id: str, timeout: float = 30) -> tuple[list[dict[str, Any]], str | None]:
        """The run's events as the gateway streams them, and the end frame's reason."""
        conn = http.client.HTTPConnection("127.0.0.1", self.gateway_port, timeout=timeout)
        frames: list[dict[str, Any]] = []
        reason: str | None = None
        try:
            conn.request(
                "GET", f"/v1/runs/{run_id}/events", headers={"Authorization": f"Bearer {self.token}"}
            )
            response = conn.getresponse()
            if response.status != 200:
                return frames, f"HTTP {response.status}"
            deadline = time.monotonic() + timeout
            event = "message"
            while time.monotonic() < deadline:
                line = response.readline()
                if not line:
                    break
                text = line.decode().rstrip("\n")
                if text.startswith("event: "):
                    event = text[7:]
                elif text.startswith("data: "):
                    data = json.loads(text[6:])
                    if event == "end":
                        reason = str(data.get("reason"))
                        break
                    frames.append(data)
                elif text == "":
                    event = "message"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        return frames, reason

    # -- memory ---------------------------------------------------------------------------

    def rss(self) -> dict[str, int]:
        """VmRSS (kB) of each process and its descendants, by process name."""
        assert self.engine is not None
        children = _children_map()
        out: dict[str, int] = {}
        for name, proc in self.engine.procs.items():
            if proc.poll() is None:
                out[name] = sum(_vmrss(pid) for pid in _tree(proc.pid, children))
        return out

    def pids(self) -> dict[str, int]:
        assert self.engine is not None
        return {n: p.pid for n, p in self.engine.procs.items() if p.poll() is None}


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


def _tree(pid: int, children: dict[int, list[int]]) -> list[int]:
    seen, todo = [], [pid]
    while todo and len(seen) < 1000:
        p = todo.pop()
        seen.append(p)
        todo.extend(children.get(p, []))
    return seen


def _vmrss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
