"""Event streams: GET /v1/runs/{run_id}/events and GET /v1/events (Server-Sent Events).

Resume a run's stream with ``Last-Event-ID`` (or ``?after_seq=N``) and the all-runs
stream with ``Last-Event-ID`` (or ``?after_feed_id=N``): no gap, no duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable

from apiflask import APIBlueprint
from flask import Response, request

from smithers.gateway.auth import requires
from smithers.gateway.body import check_query, check_run_id, parse_int, query_int
from smithers.gateway.services import services
from smithers.gateway.sse import RunStream, Stream
from smithers.shared.errors import InvalidInput, NotFound
from smithers.shared.grants import Scope
from smithers.shared.store.queries import get_run

bp = APIBlueprint("events", __name__)

MAX_CURSOR = 2**62


def _cursor(query_name: str) -> int:
    """The resume point: ``Last-Event-ID`` (sent by a reconnecting EventSource) wins over
    the query parameter; both are validated."""
    queried = query_int(query_name, 0, 0, MAX_CURSOR) or 0
    header = request.headers.get("Last-Event-ID")
    if header is not None and header.strip():
        return parse_int(header, "Last-Event-ID", 0, MAX_CURSOR)
    return queried


def _sse(body: Iterable[bytes]) -> Response:
    return Response(
        body,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@bp.get("/v1/runs/<run_id>/events")
@requires(Scope.RUN_READ)
def run_events(run_id: str) -> Response:
    """A run's events from ``seq > cursor``; ends once the run is terminal and sent."""
    check_run_id(run_id)
    check_query(("after_seq",))
    after = _cursor("after_seq")
    svc = services()
    with svc.store.read() as conn:
        run = get_run(conn, run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} not found")
    if after > run.last_seq:  # not an id this run ever sent: it would wait forever
        raise InvalidInput(f"cursor {after} is beyond the run's last event ({run.last_seq})")
    return _sse(RunStream(svc.store, svc.fanout, svc.config, run_id, after, svc.metrics.count_events))


@bp.get("/v1/events")
@requires(Scope.RUN_READ)
def all_events() -> Response:
    """Every run's events in commit order from ``feed_id > cursor``."""
    check_query(("after_feed_id",))
    after = _cursor("after_feed_id")
    svc = services()
    return _sse(Stream(svc.store, svc.fanout, svc.config, after, svc.metrics.count_events))
