"""smithers.client against a live gateway process (gunicorn): typed results, pagination,
the gateway's refusals as errors, following a run's events through kill -9 of the
gateway with no gap and no duplicate, and its coverage of the OpenAPI document."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smithers.client import EXCLUDED, Approval, AsyncClient, Client, Event, RunDetail, operations
from smithers.gateway.openapi import document
from smithers.shared.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from smithers.shared.status import ApprovalStatus, NodeStatus, RunStatus
from smithers.shared.store import Store
from smithers.shared.store.queries import get_run
from tests.integration.conftest import Engine
from tests.integration.gateway.live import LiveGateway, base_env, issue, write_events

pytestmark = pytest.mark.timeout(240)
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.mark.parametrize("client", [Client, AsyncClient])
def test_every_operation_of_the_document_has_a_client_method_or_a_reason(
    client: type[Client] | type[AsyncClient],
) -> None:
    # given the gateway's OpenAPI document and the client's operations
    ops = {
        op["operationId"]: (method, path)
        for path, item in document()["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }
    covered = operations(client)
    # then every operation has a method, or is excluded with a reason; nothing else
    missing = set(ops) - set(covered) - set(EXCLUDED)
    assert not missing, f"operations without a {client.__name__} method: {sorted(missing)}"
    assert not set(covered) - set(ops), "client methods for operations the document lacks"
    assert not set(covered) & set(EXCLUDED)
    assert all(len(reason) > 20 for reason in EXCLUDED.values())
    assert set(EXCLUDED) <= set(ops), "an exclusion for an operation that is gone"


def _public(api: object) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(getattr(api, name))
        for name in dir(api)
        if not name.startswith("_") and callable(getattr(api, name))
    }


def test_the_async_client_has_every_method_of_the_sync_one_as_a_coroutine() -> None:
    # given both clients
    sync, aio = Client("http://127.0.0.1:9"), AsyncClient("http://127.0.0.1:9")
    plumbing = {"close", "aclose", "bind"}
    # then they have the same methods with the same parameters and results
    sync_methods, async_methods = _public(sync), _public(aio)
    assert set(sync_methods) - plumbing == set(async_methods) - plumbing
    for name in set(operations(Client).values()) | {"approve", "deny", "iter_runs", "request", "send"}:
        sync_sig, async_sig = sync_methods[name], async_methods[name]
        assert sync_sig.parameters.keys() == async_sig.parameters.keys(), name
        method = getattr(aio, name)
        if name.startswith("follow_"):  # a stream: async for
            assert async_sig.return_annotation == "AsyncEventStream", name
        elif name == "iter_runs":  # pages: async for
            assert (
                inspect.isasyncgenfunction(method)
                and async_sig.return_annotation == "AsyncIterator[RunSummary]"
            )
        else:  # a request: await, with the same typed result
            assert inspect.iscoroutinefunction(method), name
            assert sync_sig.return_annotation == async_sig.return_annotation, name
    sync.close()
    asyncio.run(aio.aclose())


@pytest.fixture
def live(tmp_path: Path, redis_url: str) -> Iterator[LiveGateway]:
    gateway = LiveGateway(base_env(f"sqlite:///{tmp_path / 'smithers.db'}", redis_url), tmp_path)
    yield gateway.start()
    gateway.stop()


def _until_waiting(api: Client, run_id: str) -> list[Event]:
    seen: list[Event] = []
    for ev in api.follow_run(run_id, timeout_s=60):
        seen.append(ev)
        if ev.type == "run.waiting":
            return seen
    raise AssertionError(f"{run_id} never waited: {[e.type for e in seen]}")


def test_the_client_drives_a_run_end_to_end_on_a_live_gateway(
    engine: Engine, tmp_path: Path, redis_url: str
) -> None:
    # given a live gateway in front of a scheduler and a worker, and three tokens
    gateway = LiveGateway(base_env(engine.database_url, redis_url), tmp_path).start()
    try:
        env = gateway.env
        bot = Client(gateway.url, issue(env, "ci-bot", "run:read,run:write"))
        alice = Client(gateway.url, issue(env, "alice", "run:read,approval:read,approval:submit"))
        admin = Client(gateway.url, issue(env, "root", "admin,run:read,run:write"))

        # when the bot launches an approval run (idempotently) and follows it
        launched = bot.launch_run("t-approval", {"n": 1}, run_id="client-1")
        again = bot.launch_run("t-approval", {"n": 1}, run_id="client-1")
        assert launched.created and not again.created and again.run.run_id == "client-1"
        # the launch decided its first step: the run is running
        assert launched.run.status is RunStatus.RUNNING and launched.run.launched_by == "ci-bot"
        stream = bot.follow_run("client-1", timeout_s=90)
        seen: list[Event] = []
        for ev in stream:
            seen.append(ev)
            if ev.type == "run.waiting":
                # the bot cannot decide; the owner can, and the run goes on
                with pytest.raises(Forbidden):
                    bot.approve("client-1", "gate")
                inbox = alice.list_approvals(run_id="client-1")
                assert [(a.node_id, a.status, a.owner) for a in inbox] == [
                    ("gate", ApprovalStatus.PENDING, "alice")
                ]
                assert inbox[0].context is not None and inbox[0].workflow == "t-approval"
                decided = alice.approve("client-1", "gate", note="lgtm")
                assert isinstance(decided, Approval) and decided.decided_by == "alice"

        # then the stream carried every seq once, in order, and ended with the run
        assert stream.end is not None and stream.end.reason == "terminal"
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
        assert seen[-1].type == "run.succeeded" and seen[0].type == "run.launched"
        decision = next(e for e in seen if e.type == "approval.decided")
        assert decision.payload["decided_by"] == "alice" and "asserted" not in decision.payload

        # and the run reads back typed
        detail = bot.get_run("client-1")
        assert isinstance(detail, RunDetail) and detail.run.status is RunStatus.SUCCEEDED
        assert detail.output_of("ship") == {"by": "alice"}
        assert {n.node_id: n.status for n in detail.nodes}["ship"] is NodeStatus.SUCCEEDED
        assert detail.revision.revision == detail.run.module_revision
        assert detail.run.input == {"n": 1} and detail.run.last_seq == seen[-1].seq
        resumed = list(bot.follow_run("client-1", after_seq=seen[-3].seq))
        assert [e.seq for e in resumed] == [seen[-2].seq, seen[-1].seq]

        # history: the audit trail names the decider, a replay branches off (admin)
        trail = bot.audit("client-1")
        assert any(e.type == "approval.decided" and e.actor == "alice" for e in trail.entries)
        replayed = admin.replay("client-1", "ship", new_run_id="client-1-replay")
        assert replayed.new_run_id == "client-1-replay" and replayed.action == "replay"
        rerun = bot.rerun_run("client-1", new_run_id="client-1-rerun")
        assert rerun.created and rerun.run.parent_run_id == "client-1"
        assert not bot.rerun_run("client-1", new_run_id="client-1-rerun").created

        # cancel and resume a second run while it waits
        bot.launch_run("t-approval", run_id="client-2")
        _until_waiting(bot, "client-2")
        cancelled = bot.cancel_run("client-2")
        assert cancelled.cancel_requested or cancelled.status is RunStatus.CANCELLED
        deadline = time.time() + 30
        while bot.get_run("client-2").run.status is not RunStatus.CANCELLED:
            assert time.time() < deadline
            time.sleep(0.1)
        assert bot.resume_run("client-2").status is not RunStatus.CANCELLED

        # pagination: every run once, newest first, across pages of two
        paged = [r.run_id for r in bot.iter_runs(page_size=2)]
        assert sorted(paged) == sorted({"client-1", "client-1-replay", "client-1-rerun", "client-2"})
        assert len(paged) == len(set(paged)) and bot.list_runs(limit=2).next_cursor is not None
        assert all(
            "input" not in r and "output" not in r for r in bot.request("GET", "/v1/runs").json()["runs"]
        )

        # the feed of every run, in feed order, without a duplicate
        feed = list(bot.follow_all(timeout_s=2))
        ids = [e.feed_id for e in feed]
        assert ids == sorted(set(ids)) and {e.run_id for e in feed} >= {"client-1", "client-2"}

        # workflows, revisions, grants, the caller, the probes
        assert "t-approval" in {w.name for w in bot.list_workflows()}
        revisions = bot.list_revisions("t-approval").revisions
        assert revisions and revisions[-1].revision == detail.run.module_revision
        issued = admin.issue_grant("carol", ["run:read"], ttl_s=600, note="test")
        carol = Client(gateway.url, issued.token)
        assert carol.whoami().subject == "carol" and carol.whoami().scopes == ("run:read",)
        assert issued.grant.jti in {g.jti for g in admin.list_grants(subject="carol")}
        assert admin.revoke_grant(issued.grant.jti).state == "revoked"
        with pytest.raises(Unauthorized):
            carol.list_runs()
        assert bot.health() and bot.ready().ready
        assert "smithers" in bot.metrics() and bot.openapi()["openapi"].startswith("3.")

        # delete (admin only); the audit trail outlives the run
        with pytest.raises(Forbidden):
            bot.delete_run("client-1-rerun")
        admin.delete_run("client-1-rerun")
        with pytest.raises(NotFound):
            bot.get_run("client-1-rerun")
        assert bot.audit("client-1-rerun").run is None
        for api in (bot, alice, admin, carol):
            api.close()
    finally:
        gateway.stop()


def test_refusals_are_the_errors_of_their_family(live: LiveGateway) -> None:
    token = issue(live.env, "ci-bot", "run:read,run:write")
    with Client(live.url, token) as api:
        with pytest.raises(NotFound, match="nope"):
            api.get_run("nope")
        with pytest.raises(NotFound) as unknown:
            api.launch_run("no-such-workflow")
        assert unknown.value.code == "unknown_workflow" and unknown.value.http_status == 404
        with pytest.raises(InvalidInput, match="run_id"):
            api.launch_run("t-chain", run_id="not an id!")
        api.launch_run("t-chain", {"a": 1}, run_id="same")
        with pytest.raises(Conflict):
            api.launch_run("t-chain", {"a": 2}, run_id="same")
        with pytest.raises(Forbidden, match="admin"):
            api.delete_run("same")
        with pytest.raises(InvalidInput, match="beyond"):
            list(api.follow_run("same", after_seq=99))
    with Client(live.url, "not-a-token") as stranger, pytest.raises(Unauthorized):
        stranger.list_runs()
    with Client(live.url) as anonymous:
        assert anonymous.health()
        with pytest.raises(Unauthorized):
            list(anonymous.follow_run("same"))


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_following_survives_kill_9_of_the_gateway_with_no_gap_and_no_duplicate(
    kind: str, tmp_path: Path, redis_url: str, request: pytest.FixtureRequest
) -> None:
    database_url = (
        f"sqlite:///{tmp_path / 'smithers.db'}" if kind == "sqlite" else request.getfixturevalue("pg_url")
    )
    gateway = LiveGateway(base_env(database_url, redis_url), tmp_path).start()
    store = Store(database_url)
    stop = threading.Event()
    try:
        # given a run whose events keep coming while a client follows it
        api = Client(gateway.url, issue(gateway.env, "watcher", "run:read,run:write"))
        run_id = api.launch_run("t-chain", run_id="long-1").run.run_id
        written = [1]
        finish = threading.Event()
        writer = write_events(store, run_id, finish, stop, written)
        stream = api.follow_run(run_id, timeout_s=120, reconnect_for_s=60)

        # when the gateway is killed -9 mid-stream, once early and once after the client
        # caught up again (following live), and started again each time
        seen: list[int] = []
        kills = after_restart = 0
        for ev in stream:
            seen.append(ev.seq)
            early = kills == 0 and len(seen) == 40
            live_again = kills == 1 and len(seen) > 100 and ev.seq >= written[0] - 1
            if early or live_again:
                kills += 1
                gateway.kill9()
                time.sleep(0.5)  # events go on being written while it is down
                gateway.start()
                after_restart = len(seen)
            if kills == 2 and len(seen) > after_restart + 50:
                finish.set()  # the run ends; its stream with it
        writer.join(60)

        # then the client saw every event exactly once, in order, to the run's end
        assert stream.end is not None and stream.end.reason == "terminal", gateway.output()
        assert kills == 2 and stream.connects >= 3
        with store.read() as conn:
            run = get_run(conn, run_id)
        assert run is not None
        assert seen == list(range(1, run.last_seq + 1))
        api.close()
    finally:
        stop.set()
        store.close()
        gateway.stop()
