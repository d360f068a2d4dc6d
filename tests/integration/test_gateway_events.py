"""Event streams (SSE) on SQLite and PostgreSQL: replay, resume by Last-Event-ID or
query, no gap and no duplicate across reconnects under concurrent writers, the end of a
run's stream, keep-alives, the all-runs feed, and one poller for many subscribers."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from werkzeug.test import TestResponse

import smithers.gateway.sse
from smithers.shared.status import RunStatus
from tests.integration.gateway.support import Gateway, make_gateway, module_database

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_server: str
) -> Iterator[Gateway]:
    pg = request.getfixturevalue("pg_admin") if request.param == "postgres" else None
    with (
        module_database(request.param, tmp_path_factory.mktemp("gw-events"), pg) as url,
        make_gateway(url, redis_server, sse_keepalive_s=0.3, sse_buffer=64) as gateway,
    ):
        yield gateway


@dataclass
class Frame:
    id: int | None = None
    event: str | None = None
    data: dict[str, Any] | None = None
    comment: bool = False
    retry: int | None = None


@dataclass
class Reader:
    """Reads SSE frames from a streamed test response."""

    response: TestResponse
    buffer: bytes = b""
    frames: list[Frame] = field(default_factory=list)
    done: bool = False

    def __post_init__(self) -> None:
        self.chunks = iter(self.response.response)

    def next_frame(self) -> Frame | None:
        while b"\n\n" not in self.buffer:
            try:
                self.buffer += next(self.chunks)
            except StopIteration:
                self.done = True
                return None
        raw, self.buffer = self.buffer.split(b"\n\n", 1)
        frame = Frame()
        for line in raw.decode().split("\n"):
            key, _, value = line.partition(": ") if not line.startswith(":") else (":", "", "")
            if key == ":":
                frame.comment = True
            elif key == "id":
                frame.id = int(value)
            elif key == "event":
                frame.event = value
            elif key == "data":
                frame.data = json.loads(value)
            elif line.startswith("retry:"):
                frame.retry = int(line.split(":", 1)[1])
        self.frames.append(frame)
        return frame

    def events(self, count: int, timeout: float = 20) -> list[Frame]:
        """The next ``count`` event frames (skipping comments and retry)."""
        deadline = time.time() + timeout
        got: list[Frame] = []
        while len(got) < count:
            assert time.time() < deadline, f"only {len(got)} of {count} events"
            frame = self.next_frame()
            if frame is None:
                break
            if frame.id is not None:
                got.append(frame)
        return got

    def rest(self, timeout: float = 20) -> list[Frame]:
        """Frames until the stream ends."""
        deadline = time.time() + timeout
        while self.next_frame() is not None:
            assert time.time() < deadline, "the stream did not end"
        return self.frames

    def close(self) -> None:
        self.response.close()


def stream(gw: Gateway, url: str, **headers: str) -> Reader:
    response = gw.client.get(url, headers={**gw.auth("run:read"), **headers}, stream=True)
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == "text/event-stream"
    return Reader(response)


def ids(frames: list[Frame]) -> list[int]:
    return [f.id for f in frames if f.id is not None]


def test_replay_then_resume_by_header_or_query(gw: Gateway) -> None:
    run_id = gw.launch()
    gw.emit(run_id, n=5)

    reader = stream(gw, f"/v1/runs/{run_id}/events")
    first = reader.events(6)
    reader.close()
    assert reader.frames[0].retry == 2000
    assert ids(first) == [1, 2, 3, 4, 5, 6]
    assert first[0].data is not None and first[0].data["type"] == "run.launched"
    assert first[1].data == {**first[1].data, "run_id": run_id, "seq": 2, "type": "node.progress"}

    by_header = stream(gw, f"/v1/runs/{run_id}/events?after_seq=1", **{"Last-Event-ID": "3"})
    assert ids(by_header.events(3)) == [4, 5, 6]
    by_header.close()
    by_query = stream(gw, f"/v1/runs/{run_id}/events?after_seq=4")
    assert ids(by_query.events(2)) == [5, 6]
    by_query.close()


def test_a_runs_stream_ends_once_terminal_and_sent(gw: Gateway) -> None:
    run_id = gw.launch()
    reader = stream(gw, f"/v1/runs/{run_id}/events")
    assert ids(reader.events(1)) == [1]
    gw.emit(run_id, n=3)
    gw.finish(run_id, RunStatus.FAILED)
    frames = reader.rest()
    assert ids(frames) == [1, 2, 3, 4, 5]
    assert frames[-1].event == "end" and frames[-1].data == {"reason": "terminal", "last_id": 5}
    assert frames[-2].data is not None and frames[-2].data["type"] == "run.failed"

    # reconnecting to a finished run replays what is left and ends at once
    again = stream(gw, f"/v1/runs/{run_id}/events", **{"Last-Event-ID": "5"})
    tail = again.rest()
    assert ids(tail) == [] and tail[-1].event == "end"


def test_keep_alive_while_idle_and_end_when_deleted(gw: Gateway) -> None:
    run_id = gw.launch()
    reader = stream(gw, f"/v1/runs/{run_id}/events")
    reader.events(1)
    started = time.time()
    while not any(f.comment for f in reader.frames):
        assert reader.next_frame() is not None and time.time() - started < 5
    gw.client.delete(f"/v1/runs/{run_id}", headers=gw.auth("admin"))
    frames = reader.rest()
    assert frames[-1].event == "end" and frames[-1].data == {"reason": "deleted", "last_id": 1}


def test_bad_cursors_and_unknown_runs(gw: Gateway) -> None:
    run_id = gw.launch()
    reader = gw.auth("run:read")
    for url, headers in [
        (f"/v1/runs/{run_id}/events?after_seq=-1", {}),
        (f"/v1/runs/{run_id}/events?after_seq=x", {}),
        (f"/v1/runs/{run_id}/events", {"Last-Event-ID": "abc"}),
        (f"/v1/runs/{run_id}/events?from=1", {}),
        ("/v1/events?after_feed_id=1.5", {}),
        (f"/v1/runs/{run_id}/events", {"Last-Event-ID": "99"}),  # beyond its last seq
    ]:
        assert gw.client.get(url, headers={**reader, **headers}).status_code == 400, url
    assert gw.client.get("/v1/runs/run-missing/events", headers=reader).status_code == 404


def _writers(gw: Gateway, run_ids: list[str], per_run: int, threads: int) -> list[threading.Thread]:
    def write(run_id: str) -> None:
        for i in range(per_run // threads):
            with gw.store.write() as tx:
                tx.emit(run_id, "node.progress", payload={"i": i})
                if i % 7 == 0:
                    tx.emit(run_id, "node.progress", payload={"i": i, "pair": True})

    workers = [threading.Thread(target=write, args=(r,)) for r in run_ids for _ in range(threads)]
    for w in workers:
        w.start()
    return workers


def test_no_gap_no_duplicate_across_reconnects_under_concurrent_writers(gw: Gateway) -> None:
    # given a run written by three threads at once
    run_id = gw.launch()
    writers = _writers(gw, [run_id], per_run=150, threads=3)
    rng = random.Random(7)

    # when a client reads a few events at a time and reconnects from its last id
    seen: list[int] = []
    ended = False
    deadline = time.time() + 60
    while not ended and time.time() < deadline:
        headers = {"Last-Event-ID": str(seen[-1])} if seen else {}
        reader = stream(gw, f"/v1/runs/{run_id}/events", **headers)
        for _ in range(rng.randint(1, 40)):
            frame = reader.next_frame()
            if frame is None:
                break
            if frame.event == "end":
                ended = True
                break
            if frame.id is not None:
                seen.append(frame.id)
        reader.close()
        if not any(w.is_alive() for w in writers) and not ended and gw.count_events(run_id) == len(seen):
            gw.finish(run_id)

    # then it saw every seq exactly once, in order
    assert ended
    assert seen == list(range(1, gw.count_events(run_id) + 1))


def test_the_all_runs_feed_resumes_without_gap_or_duplicate(gw: Gateway) -> None:
    start = gw.max_feed_id()
    runs = [gw.launch() for _ in range(3)]
    writers = _writers(gw, runs, per_run=60, threads=2)
    seen: list[int] = []
    deadline = time.time() + 60
    while time.time() < deadline:
        cursor = seen[-1] if seen else start
        reader = stream(gw, "/v1/events", **{"Last-Event-ID": str(cursor)})
        for _ in range(random.randint(5, 60)):
            frame = reader.next_frame()
            if frame is None or frame.event == "end":
                break
            if frame.id is not None:
                assert frame.data is not None and frame.data["feed_id"] == frame.id
                seen.append(frame.id)
        reader.close()
        if not any(w.is_alive() for w in writers) and seen and seen[-1] == gw.max_feed_id():
            break
    assert seen == gw.feed_ids_after(start)


def test_many_subscribers_share_one_poller(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    # given 40 streams on one run, counting the store reads the streams make
    calls = {"n": 0}
    real = smithers.gateway.sse.events_after

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(smithers.gateway.sse, "events_after", counted)
    run_id = gw.launch()
    readers = [stream(gw, f"/v1/runs/{run_id}/events") for _ in range(40)]
    results: list[list[int]] = [[] for _ in readers]

    def consume(i: int) -> None:
        results[i] = ids(readers[i].rest(timeout=60))

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(readers))]
    for t in threads:
        t.start()

    # when 200 events are committed, slowly enough that nobody lags
    for _ in range(20):
        gw.emit(run_id, n=10)
        time.sleep(0.02)
    gw.finish(run_id)
    for t in threads:
        t.join(60)

    # then everyone got everything, and the streams read the store about once each
    assert all(r == list(range(1, 203)) for r in results)
    assert calls["n"] <= 3 * len(readers)
    fanout = gw.svc.fanout
    assert fanout._thread is not None and fanout._thread.is_alive()
    assert not fanout._topics  # every subscription was released


def test_a_lagging_subscriber_catches_up_from_the_store(gw: Gateway) -> None:
    # the fanout keeps 64 frames per run: a reader that sleeps through 300 must go back to the store
    run_id = gw.launch()
    reader = stream(gw, f"/v1/runs/{run_id}/events")
    assert ids(reader.events(1)) == [1]
    gw.emit(run_id, n=300)
    time.sleep(0.5)  # the poller fills and overflows this run's buffer meanwhile
    gw.finish(run_id)
    assert ids(reader.rest()) == list(range(1, 303))
