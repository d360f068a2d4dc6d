"""Approvers see what they decide: GET /v1/runs/{run_id}/approval-context with approval:read
and no run:read, on SQLite and PostgreSQL.

The owner and the fallback owner of a pending approval (or anyone, when it names no
owner) read the run's summary, input, the outputs the approval shows or comes after, and
its events; nobody reads another run that way, and whether that run exists is not told.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from smithers.shared.store import schema as s
from tests.integration.gateway.support import Gateway, make_gateway, module_database

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_server: str
) -> Iterator[Gateway]:
    pg = request.getfixturevalue("pg_admin") if request.param == "postgres" else None
    with (
        module_database(request.param, tmp_path_factory.mktemp("gw-approver"), pg) as url,
        make_gateway(url, redis_server, auth_failures=10**6) as gateway,
    ):
        yield gateway


def output(gw: Gateway, run_id: str, node_id: str, value: Any) -> None:
    """A succeeded node with its output, as a worker's commit leaves it."""
    now = time.time()
    with gw.store.write() as tx:
        tx.conn.execute(
            s.nodes.insert().values(
                run_id=run_id, node_id=node_id, iteration=0, kind="task", status="succeeded", failures=0,
                lost=0, current_iteration=0, started_at=now, finished_at=now, updated_at=now,
            )
        )  # fmt: skip
        tx.conn.execute(
            s.outputs.insert().values(
                run_id=run_id, node_id=node_id, iteration=0, value=value, created_at=now
            )
        )
        tx.emit(run_id, "node.succeeded", node_id=node_id, iteration=0)


def waiting_run(gw: Gateway, owner: str | None, fallback: str | None = None, **spec: Any) -> str:
    """A t-approval run whose ``prepare`` succeeded and whose ``gate`` waits; ``ship`` (after
    the gate, so not what it decides on) has an output too."""
    run_id = gw.launch("t-approval", {"ticket": "OPS-7", "target": "prod"})
    output(gw, run_id, "prepare", {"artifact": "build-42"})
    output(gw, run_id, "ship", {"secret_plan": "not for the approver"})
    gw.seed_approval(run_id, owner=owner, fallback_owner=fallback, escalate_at=time.time() + 3600)
    if spec:
        with gw.store.write() as tx:
            tx.conn.execute(
                update(s.approvals)
                .where(s.approvals.c.run_id == run_id)
                .values(spec={"description": "", "show": [], "schema": None, "options": [], **spec})
            )
    return run_id


def context(gw: Gateway, run_id: str, subject: str, scopes: str = "approval:read", query: str = "") -> Any:
    return gw.client.get(f"/v1/runs/{run_id}/approval-context{query}", headers=gw.auth(scopes, subject))


def test_the_owner_reads_what_the_approval_is_about_without_run_read(gw: Gateway) -> None:
    # given a run waiting on alice's approval, and alice holding approval:read only
    run_id = waiting_run(gw, owner="alice", fallback="bob")
    assert gw.client.get(f"/v1/runs/{run_id}", headers=gw.auth("approval:read", "alice")).status_code == 403

    # when alice asks for the approval's context
    response = context(gw, run_id, "alice")

    # then she gets the run's summary and input, her approval, the output it comes after, the events
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["run"]["run_id"] == run_id
    assert body["run"]["input"] == {"ticket": "OPS-7", "target": "prod"}
    assert body["run"]["status"] == "waiting"
    assert "output" not in body["run"]
    assert [(a["node_id"], a["owner"], a["status"]) for a in body["approvals"]] == [
        ("gate", "alice", "pending")
    ]
    assert body["approvals"][0]["context"] == {"prepare": {"artifact": "build-42"}}
    assert body["outputs"] == [{"node_id": "prepare", "iteration": 0, "value": {"artifact": "build-42"}}]
    assert "not for the approver" not in response.get_data(as_text=True)
    types = [e["type"] for e in body["events"]]
    assert types[0] == "run.launched" and "approval.requested" in types
    assert [e["seq"] for e in body["events"]] == list(range(1, len(types) + 1))
    assert body["next_after_seq"] is None

    # and the fallback owner, who decides after the escalation, reads it too
    assert context(gw, run_id, "bob").status_code == 200


def test_nobody_else_reads_it_and_no_run_is_told_to_exist(gw: Gateway) -> None:
    run_id = waiting_run(gw, owner="alice", fallback="bob")
    plain = gw.launch("t-chain", {"n": 1})
    refused = {
        "not an owner": context(gw, run_id, "mallory"),
        "no approval on it": context(gw, plain, "alice"),
        "no such run": context(gw, "run-does-not-exist", "alice"),
    }
    for why, response in refused.items():
        assert response.status_code == 403, why
        error = response.get_json()["error"]
        assert error["code"] == "forbidden", why
        assert "you hold no pending approval" in error["message"], why
    # run:read as well reads every pending approval's context, and is told what does not exist
    assert context(gw, run_id, "mallory", "approval:read,run:read").status_code == 200
    assert context(gw, "run-does-not-exist", "mallory", "approval:read,run:read").status_code == 404
    assert context(gw, plain, "mallory", "approval:read,run:read").status_code == 403
    # approval:read is the scope: run:read alone does not do
    missing = context(gw, run_id, "alice", "run:read,approval:submit")
    assert missing.status_code == 403
    assert missing.get_json()["error"]["message"] == "this action needs the scope 'approval:read'"


def test_an_approval_without_owner_is_anyones_with_the_scope(gw: Gateway) -> None:
    run_id = waiting_run(gw, owner=None)
    assert context(gw, run_id, "anyone").status_code == 200


def test_declared_outputs_are_what_is_shown(gw: Gateway) -> None:
    run_id = waiting_run(gw, owner="alice", show=["ship"])  # the workflow chose what the approver sees
    body = context(gw, run_id, "alice").get_json()
    assert body["outputs"] == [
        {"node_id": "ship", "iteration": 0, "value": {"secret_plan": "not for the approver"}}
    ]
    assert body["approvals"][0]["context"] == {"ship": {"secret_plan": "not for the approver"}}


def test_once_decided_the_run_is_closed_to_the_approver_again(gw: Gateway) -> None:
    run_id = waiting_run(gw, owner="alice")
    decided = gw.client.post(
        f"/v1/runs/{run_id}/approvals/gate",
        json={"approved": True, "note": "ok"},
        headers=gw.auth("approval:submit", "alice"),
    )
    assert decided.status_code == 200, decided.get_json()
    assert context(gw, run_id, "alice").status_code == 403


def test_events_are_paged_by_seq(gw: Gateway) -> None:
    run_id = waiting_run(gw, owner="alice")
    gw.emit(run_id, n=5)
    first = context(gw, run_id, "alice", query="?limit=3").get_json()
    assert [e["seq"] for e in first["events"]] == [1, 2, 3]
    assert first["next_after_seq"] == 3
    rest = context(gw, run_id, "alice", query=f"?after_seq={first['next_after_seq']}").get_json()
    assert rest["events"][0]["seq"] == 4 and rest["next_after_seq"] is None
    seqs = [e["seq"] for e in first["events"] + rest["events"]]
    assert seqs == list(range(1, len(seqs) + 1))
    bad = context(gw, run_id, "alice", query="?limit=0")
    assert bad.status_code == 400 and "limit" in bad.get_json()["error"]["message"]
    unknown = context(gw, run_id, "alice", query="?node=gate")
    assert unknown.status_code == 400 and "'node'" in unknown.get_json()["error"]["message"]
