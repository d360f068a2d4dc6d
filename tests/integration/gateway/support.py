"""A gateway under test: a real app on a real store (SQLite file or PostgreSQL) and a
private Redis, with helpers to mint every kind of bad token and to seed runs."""

from __future__ import annotations

import base64
import functools
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from werkzeug.test import TestResponse

from smithers.gateway.app import create_app
from smithers.gateway.auth import mint, mint_with_key
from smithers.gateway.config import GatewayConfig
from smithers.gateway.services import Services
from smithers.gateway.store import GatewayStore
from smithers.shared.grants import GrantKind, Scope
from smithers.shared.registry import Registry, load_registry
from smithers.shared.status import RunStatus
from smithers.shared.store import schema as s
from smithers.shared.store.audit import AuditRecord
from smithers.shared.store.feed import number_now
from tests.conftest import PG_ADMIN

ROOT = Path(__file__).resolve().parents[3]
KEY = "gateway-test-signing-key-" + "k" * 32
OTHER_KEY = "another-signing-key-" + "z" * 32
WORKFLOWS = "tests.integration.workflows"
ALL_SCOPES = tuple(s.value for s in Scope)


@functools.cache
def registry() -> Registry:
    """The integration workflows (t-chain, t-approval, ...), loaded once."""
    return load_registry(WORKFLOWS, str(ROOT))


def config(database_url: str, redis_url: str | None, **overrides: Any) -> GatewayConfig:
    """A GatewayConfig with the test key and fast streams. It decides no run (the
    tests seed a run's states by hand, with no scheduler or worker): pass
    ``decide_max_nodes`` to have it decide the runs it changes, as in production."""
    base = GatewayConfig(
        database_url=database_url,
        redis_url=redis_url,
        signing_key=KEY,
        deployment_version="test",
        sse_poll_s=0.02,
        sse_keepalive_s=0.5,
        sse_max_s=10.0,
        decide_max_nodes=0,
    )
    return replace(base, **overrides)


class ClosingClient(FlaskClient):
    """A test client that closes each response, as a WSGI server does (the access log is
    written on close); ``stream=True`` hands an open response to the caller instead."""

    def open(self, *args: Any, stream: bool = False, **kwargs: Any) -> TestResponse:
        kwargs.pop("buffered", None)
        response = super().open(*args, buffered=False, **kwargs)
        if not stream:
            response.get_data()
            response.close()
        return response


class Gateway:
    """The app, its test client, and token and seeding helpers."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        app.test_client_class = ClosingClient
        self.client: FlaskClient = app.test_client()
        self.svc: Services = app.extensions["smithers"]
        self.store = self.svc.store
        self.control = self.svc.control

    # -- tokens -------------------------------------------------------------------------

    def token(
        self,
        scopes: str | tuple[str, ...],
        subject: str = "alice",
        kind: GrantKind = GrantKind.PERSON,
        ttl_s: float | None = None,
    ) -> str:
        grant = self.control.issue(
            subject=subject,
            scopes=scopes if isinstance(scopes, str) else ",".join(scopes),
            kind=kind,
            ttl_s=ttl_s,
            issuer="test",
            actor="test",
        )
        with self.app.app_context():
            return mint(grant)

    def auth(self, scopes: str | tuple[str, ...], subject: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scopes, subject)}"}

    def expired(self, scopes: str) -> str:
        now = time.time()
        grant, _ = self.control.record_grant(
            jti=uuid.uuid4().hex,
            subject="alice",
            scopes=scopes,
            kind=GrantKind.PERSON,
            issuer="test",
            issued_at=now - 120,
            expires_at=now - 60,
            actor="test",
        )
        with self.app.app_context():
            return mint(grant)

    def revoked(self, scopes: str) -> str:
        token = self.token(scopes)
        self.control.revoke(jti_of(token), actor="test")
        return token

    def tampered(self, scopes: str) -> str:
        """A valid token whose payload was edited (scopes widened): the signature fails."""
        head, payload, sig = self.token(scopes).split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["scopes"] = list(ALL_SCOPES)
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return f"{head}.{forged}.{sig}"

    def unsigned(self, scopes: str) -> str:
        """The same claims with ``alg: none`` and no signature."""
        _, payload, _ = self.token(scopes).split(".")
        head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
        return f"{head}.{payload}."

    def bad_signature(self, scopes: str) -> str:
        head, payload, sig = self.token(scopes).split(".")
        flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
        return f"{head}.{payload}.{flipped}"

    def foreign(self, scopes: str) -> str:
        """Signed with another key, for a grant that exists."""
        grant = self.control.issue(subject="alice", scopes=scopes, issuer="test", actor="test")
        return mint_with_key(OTHER_KEY, "smithers", grant)

    def unknown_grant(self, scopes: str) -> str:
        """Signed with our key, but no grant row (say, minted by a leaked key holder)."""
        grant = self.control.issue(subject="alice", scopes=scopes, issuer="test", actor="test")
        forged = replace(grant, jti=uuid.uuid4().hex)
        with self.app.app_context():
            return mint(forged)

    # -- seeding ------------------------------------------------------------------------

    def launch(self, workflow: str = "t-chain", run_input: dict[str, Any] | None = None) -> str:
        response = self.client.post(
            "/v1/runs",
            json={"workflow": workflow, "input": run_input or {}},
            headers=self.auth("run:write", "seeder"),
        )
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["run_id"])

    def emit(self, run_id: str, type: str = "node.progress", n: int = 1, **payload: Any) -> None:
        for i in range(n):
            with self.store.write() as tx:
                tx.emit(run_id, type, payload={"i": i, **payload})

    def finish(self, run_id: str, status: RunStatus = RunStatus.SUCCEEDED) -> None:
        with self.store.write() as tx:
            tx.conn.execute(
                update(s.runs)
                .where(s.runs.c.run_id == run_id)
                .values(status=status.value, finished_at=tx.now)
            )
            tx.emit(run_id, f"run.{status.value}")

    def seed_approval(
        self,
        run_id: str,
        node_id: str = "gate",
        owner: str | None = None,
        fallback_owner: str | None = None,
        escalate_at: float | None = None,
    ) -> None:
        now = time.time()
        with self.store.write() as tx:
            tx.conn.execute(
                s.nodes.insert().values(
                    run_id=run_id,
                    node_id=node_id,
                    iteration=0,
                    kind="approval",
                    status="waiting",
                    failures=0,
                    lost=0,
                    current_iteration=0,
                    started_at=now,
                    updated_at=now,
                )
            )
            tx.conn.execute(
                s.approvals.insert().values(
                    run_id=run_id,
                    node_id=node_id,
                    iteration=0,
                    status="pending",
                    owner=owner,
                    fallback_owner=fallback_owner,
                    escalate_at=escalate_at,
                    requested_at=now,
                )
            )
            tx.conn.execute(update(s.runs).where(s.runs.c.run_id == run_id).values(status="waiting"))
            tx.emit(run_id, "approval.requested", node_id=node_id, iteration=0, payload={"owner": owner})

    # -- reading ------------------------------------------------------------------------

    def audit(self, action: str | None = None) -> list[AuditRecord]:
        return self.control.audit_log(action=action, limit=10_000)

    def denied(self, status: int) -> int:
        """How many requests were denied with ``status`` (audit rows fold like denials: their counts)."""
        return sum(d.count for d in self.audit("request.denied") if d.detail["status"] == status)

    def count(self, table: sqlalchemy.Table) -> int:
        with self.store.read() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def count_events(self, run_id: str) -> int:
        with self.store.read() as conn:
            query = select(func.count()).select_from(s.events).where(s.events.c.run_id == run_id)
            return int(conn.execute(query).scalar_one())

    def max_feed_id(self) -> int:
        number_now(self.store)
        with self.store.read() as conn:
            return int(conn.execute(select(func.coalesce(func.max(s.events.c.feed_id), 0))).scalar_one())

    def feed_ids_after(self, after: int) -> list[int]:
        number_now(self.store)
        with self.store.read() as conn:
            query = select(s.events.c.feed_id).where(s.events.c.feed_id > after).order_by(s.events.c.feed_id)
            return [int(r[0]) for r in conn.execute(query)]

    def close(self) -> None:
        self.svc.close()


def jti_of(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


@contextmanager
def make_gateway(database_url: str, redis_url: str | None, **overrides: Any) -> Iterator[Gateway]:
    """Build a Gateway on a migrated store; close it after."""
    store = GatewayStore(database_url)
    store.migrate()
    app = create_app(config(database_url, redis_url, **overrides), store=store, registry=registry())
    gw = Gateway(app)
    try:
        yield gw
    finally:
        gw.close()


@contextmanager
def module_database(kind: str, tmp_dir: Path, pg_admin: sqlalchemy.Engine | None) -> Iterator[str]:
    """A database for a whole module: a SQLite file, or a PostgreSQL database dropped after."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_dir / 'smithers.db'}"
        return
    assert pg_admin is not None
    name = f"smithers_gw_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    finally:
        with pg_admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
