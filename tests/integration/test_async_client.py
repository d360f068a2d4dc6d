"""smithers.client.AsyncClient against a live gateway process (gunicorn): a launch, typed
reads, async pagination, an approval decision, the same errors as the sync client, and
following a run through kill -9 of the gateway with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smithers.client import AsyncClient, Client, Event, GatewayUnavailable, Launched, RunDetail
from smithers.shared.errors import Conflict, Forbidden, InvalidInput, NotFound, SmithersError, Unauthorized
from smithers.shared.status import ApprovalStatus, NodeStatus, RunStatus
from smithers.shared.store import Store
from smithers.shared.store.queries import get_run
from tests.conftest import free_port
from tests.integration.gateway.live import LiveGateway, base_env, issue, write_events

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def live(tmp_path: Path, redis_url: str) -> Iterator[LiveGateway]:
    gateway = LiveGateway(base_env(f"sqlite:///{tmp_path / 'smithers.db'}", redis_url), tmp_path)
    yield gateway.start()
    gateway.stop()


def test_the_async_client_launches_lists_and_decides_an_approval(
    engine_factory: Any, tmp_path: Path, redis_url: str
) -> None:
    # given a live gateway in front of a scheduler and a worker, a bot and an approver
    database_url = f"sqlite:///{tmp_path / 'smithers.db'}"
    engine = engine_factory(database_url)
    engine.scheduler()
    engine.worker()
    gateway = LiveGateway(base_env(database_url, redis_url), tmp_path).start()
    bot_token = issue(gateway.env, "ci-bot", "run:read,run:write")
    alice_token = issue(gateway.env, "alice", "run:read,approval:read,approval:submit")

    async def scenario() -> None:
        async with AsyncClient(gateway.url, bot_token) as bot, AsyncClient(gateway.url, alice_token) as alice:
            # when the bot launches an approval run (idempotently) and three chains at once
            launched = await bot.launch_run("t-approval", {"n": 1}, run_id="async-1")
            again = await bot.launch_run("t-approval", {"n": 1}, run_id="async-1")
            assert isinstance(launched, Launched) and launched.created and not again.created
            assert launched.run.status is RunStatus.RUNNING and launched.run.launched_by == "ci-bot"
            chains = await asyncio.gather(
                *(bot.launch_run("t-chain", run_id=f"async-c{i}") for i in range(3))
            )
            assert all(c.created for c in chains)

            # and follows the approval run, which alice approves while it waits
            stream = bot.follow_run("async-1", timeout_s=60)
            seen: list[Event] = []
            async for ev in stream:
                seen.append(ev)
                if ev.type == "run.waiting":
                    with pytest.raises(Forbidden):
                        await bot.approve("async-1", "gate")
                    inbox = await alice.list_approvals(run_id="async-1")
                    assert [(a.node_id, a.status, a.owner) for a in inbox] == [
                        ("gate", ApprovalStatus.PENDING, "alice")
                    ]
                    decided = await alice.approve("async-1", "gate", note="lgtm")
                    assert decided.decided_by == "alice"

            # then the stream carried every seq once, in order, to the run's end
            assert stream.end is not None and stream.end.reason == "terminal"
            assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
            assert seen[0].type == "run.launched" and seen[-1].type == "run.succeeded"
            resumed = [e.seq async for e in bot.follow_run("async-1", after_seq=seen[-3].seq)]
            assert resumed == [seen[-2].seq, seen[-1].seq]

            # and the run reads back typed
            detail = await bot.get_run("async-1")
            assert isinstance(detail, RunDetail) and detail.run.status is RunStatus.SUCCEEDED
            assert detail.output_of("ship") == {"by": "alice"}
            assert {n.node_id: n.status for n in detail.nodes}["ship"] is NodeStatus.SUCCEEDED

            # and pages of two list every run once, newest first
            paged = [r.run_id async for r in bot.iter_runs(page_size=2)]
            assert sorted(paged) == ["async-1", "async-c0", "async-c1", "async-c2"]
            assert len(paged) == len(set(paged))
            first = await bot.list_runs(limit=2)
            assert len(first.runs) == 2 and first.next_cursor is not None
            rest = await bot.list_runs(limit=2, cursor=first.next_cursor)
            assert [r.run_id for r in (*first.runs, *rest.runs)] == paged

    try:
        asyncio.run(scenario())
    finally:
        gateway.stop()


def _refusal(call: Any) -> SmithersError:
    with pytest.raises(SmithersError) as caught:
        call()
    return caught.value


async def _async_refusal(call: Any) -> SmithersError:
    with pytest.raises(SmithersError) as caught:
        await call()
    return caught.value


def test_the_async_client_raises_the_errors_of_the_sync_one(live: LiveGateway) -> None:
    # given a run (no worker: it stays unfinished), and both clients with one token
    token = issue(live.env, "ci-bot", "run:read,run:write")
    sync = Client(live.url, token)
    sync.launch_run("t-chain", {"a": 1}, run_id="same")
    refusals: list[tuple[type[SmithersError], str, tuple[Any, ...], dict[str, Any]]] = [
        (NotFound, "get_run", ("nope",), {}),
        (NotFound, "launch_run", ("no-such-workflow",), {}),
        (InvalidInput, "launch_run", ("t-chain",), {"run_id": "not an id!"}),
        (Conflict, "launch_run", ("t-chain", {"a": 2}), {"run_id": "same"}),
        (Forbidden, "delete_run", ("same",), {}),
    ]

    async def scenario() -> None:
        async with AsyncClient(live.url, token) as aio:
            # when each refused call is made by both
            for family, name, args, kwargs in refusals:
                expected = _refusal(lambda: getattr(sync, name)(*args, **kwargs))
                got = await _async_refusal(lambda: getattr(aio, name)(*args, **kwargs))
                # then the async client raises the same error, with the gateway's code
                assert type(got) is type(expected) and isinstance(got, family), name
                assert (got.code, got.http_status, got.message) == (
                    expected.code,
                    expected.http_status,
                    expected.message,
                )
            with pytest.raises(InvalidInput, match="beyond"):
                [e async for e in aio.follow_run("same", after_seq=99)]
        async with AsyncClient(live.url, "not-a-token") as stranger:
            with pytest.raises(Unauthorized):
                await stranger.list_runs()
            with pytest.raises(Unauthorized):
                [e async for e in stranger.follow_run("same")]
        async with AsyncClient(f"http://127.0.0.1:{free_port()}", token) as nowhere:
            with pytest.raises(GatewayUnavailable, match="did not answer"):
                await nowhere.health()
        # and a follower whose gateway stays away gives up after reconnect_for_s
        async with AsyncClient(live.url, token) as aio:
            stream = aio.follow_run("same", reconnect_for_s=1.5)
            started = time.monotonic()
            with pytest.raises(GatewayUnavailable, match="did not come back"):
                async for _ in stream:
                    if live.proc is not None:
                        live.kill9()
            assert stream.connects >= 2 and time.monotonic() - started < 10

    try:
        asyncio.run(scenario())
    finally:
        sync.close()


def test_async_following_survives_kill_9_of_the_gateway_with_no_gap_and_no_duplicate(
    tmp_path: Path, redis_url: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'smithers.db'}"
    gateway = LiveGateway(base_env(database_url, redis_url), tmp_path).start()
    store = Store(database_url)
    stop, finish = threading.Event(), threading.Event()
    token = issue(gateway.env, "watcher", "run:read,run:write")

    async def scenario() -> tuple[list[int], int, Any]:
        async with AsyncClient(gateway.url, token) as api:
            # given a run whose events keep coming while the client follows it
            run_id = (await api.launch_run("t-chain", run_id="long-async")).run.run_id
            written = [1]
            writer = write_events(store, run_id, finish, stop, written)
            stream = api.follow_run(run_id, timeout_s=60, reconnect_for_s=30)

            # when the gateway is killed -9 mid-stream and started again while events go on
            seen: list[int] = []
            after_restart = 0
            async for ev in stream:
                seen.append(ev.seq)
                if len(seen) == 30 and not after_restart:
                    gateway.kill9()
                    await asyncio.sleep(0.5)  # events go on being written while it is down
                    await asyncio.to_thread(gateway.start)
                    after_restart = len(seen)
                if after_restart and len(seen) > after_restart + 40 and ev.seq >= written[0] - 1:
                    finish.set()  # caught up with the writer: the run ends, its stream with it
            await asyncio.to_thread(writer.join, 30)
            return seen, stream.connects, stream.end

    try:
        seen, connects, end = asyncio.run(scenario())
        # then the client saw every event exactly once, in order, to the run's end
        assert end is not None and end.reason == "terminal", gateway.output()
        assert connects >= 2
        with store.read() as conn:
            run = get_run(conn, "long-async")
        assert run is not None and run.last_seq > 70
        assert seen == list(range(1, run.last_seq + 1))
    finally:
        stop.set()
        store.close()
        gateway.stop()
