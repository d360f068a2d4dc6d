"""The sandbox endpoints of the gateway: scopes, listing with diffs, review decisions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from smithers.gateway.app import create_app, required_scope
from smithers.gateway.auth import mint
from smithers.gateway.config import GatewayConfig
from smithers.gateway.services import services
from smithers.shared.status import NodeStatus
from smithers.shared.store import Store
from smithers.shared.store import schema as s
from smithers.shared.store.queries import nodes_of
from tests.integration.test_sandbox_store import PATCH, make_registry, run_sandbox, start, step

pytestmark = pytest.mark.timeout(60)

KEY = "k" * 64


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    store = Store(database_url)
    store.migrate()
    config = GatewayConfig(database_url=database_url, redis_url=None, signing_key=KEY)
    flask_app = create_app(config, store=store, registry=make_registry())
    yield flask_app
    with flask_app.app_context():
        services().close()


def token(app: Flask, subject: str, scopes: str) -> dict[str, str]:
    with app.app_context():
        grant = services().control.issue(subject=subject, scopes=scopes, issuer="smithers", actor="test")
        return {"Authorization": f"Bearer {mint(grant)}"}


def waiting_for_review(app: Flask, run_id: str) -> tuple[Store, str]:
    """A run whose sandbox node committed a patch and waits for review."""
    with app.app_context():
        store = services().store
    registry = make_registry()
    c = start(store, registry, run_id)
    sandbox_id = run_sandbox(store, c, [PATCH])
    from smithers.shared.store.attempts import complete

    with store.write() as tx:
        complete(tx, c.attempt_id, c.claim_token, ok=True, output={"workspace": {"files": {}}})
    step(store, registry, run_id)
    return store, sandbox_id


def test_routes_demand_the_review_scopes(app: Flask) -> None:
    assert required_scope(app, "sandboxes.index") == "approval:read"
    assert required_scope(app, "sandboxes.review") == "approval:submit"


def test_list_and_accept_over_rest(app: Flask) -> None:
    # given a sandbox waiting for review, and a launcher who may not review
    store, sandbox_id = waiting_for_review(app, "run-rest")
    client: FlaskClient = app.test_client()
    launcher = token(app, "ci-bot", "run:read,run:write")
    reviewer = token(app, "carol", "approval:read,approval:submit")
    url = f"/v1/runs/run-rest/sandboxes/{sandbox_id}/review"

    # then listing needs approval:read and shows the diff; deciding needs approval:submit
    assert client.get("/v1/runs/run-rest/sandboxes").status_code == 401
    assert client.get("/v1/runs/run-rest/sandboxes", headers=launcher).status_code == 403
    listed = client.get("/v1/runs/run-rest/sandboxes?review_status=pending", headers=reviewer)
    assert listed.status_code == 200
    (record,) = listed.get_json()["sandboxes"]
    assert (record["sandbox_id"], record["review_status"]) == (sandbox_id, "pending")
    assert record["manifest"]["patches"][0]["diff"] == PATCH["diff"]
    denied = client.post(url, json={"accept": True}, headers=launcher)
    assert denied.status_code == 403 and denied.get_json()["error"]["code"] == "forbidden"

    # when the reviewer accepts with a note
    accepted = client.post(url, json={"accept": True, "note": "ship it"}, headers=reviewer)

    # then the decision is stored with actor, note and time and the node moves on
    assert accepted.status_code == 200, accepted.get_json()
    body: dict[str, Any] = accepted.get_json()
    assert body["review_status"] == "accepted"
    assert [(r["accept"], r["actor"], r["note"]) for r in body["reviews"]] == [(True, "carol", "ship it")]
    step(store, make_registry(), "run-rest")
    with store.read() as conn:
        assert {n.node_id: n.status for n in nodes_of(conn, "run-rest")}["propose"] is NodeStatus.SUCCEEDED
        audit = conn.execute(
            select(s.audit_log.c.actor).where(s.audit_log.c.action == "sandbox.reviewed")
        ).all()
    assert [a.actor for a in audit] == ["carol"]

    # and a second decision conflicts
    again = client.post(url, json={"accept": False}, headers=reviewer)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "conflict"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/runs/run-nope/sandboxes/sbx-1/review", {"accept": True}, 404),
        ("/v1/runs/run-bad/sandboxes/sbx-1/review", {"accept": "yes"}, 400),
        ("/v1/runs/run-bad/sandboxes/sbx-1/review", {"accept": True, "extra": 1}, 400),
        ("/v1/runs/run-bad/sandboxes/sbx-1/review", {"accept": True, "note": "x" * 5000}, 400),
        ("/v1/runs/run-bad/sandboxes/SBX!/review", {"accept": True}, 400),
        ("/v1/runs/run-bad/sandboxes/sbx-1/review", {"accept": True}, 404),
    ],
)
def test_bad_requests(app: Flask, path: str, body: dict[str, Any], status: int) -> None:
    waiting_for_review(app, "run-bad")
    reviewer = token(app, "carol", "approval:read,approval:submit")
    response = app.test_client().post(path, json=body, headers=reviewer)
    assert response.status_code == status, response.get_json()
    assert set(response.get_json()["error"]) == {"code", "message"}
    listed = app.test_client().get("/v1/runs/run-nope/sandboxes", headers=reviewer)
    assert listed.status_code == 404
