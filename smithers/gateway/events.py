"""Event streams: GET /v1/runs/{run_id}/events and GET /v1/events (Server-Sent Events).

Resume a run's stream with ``Last-Event-ID`` (or ``?after_seq=N``) and the all-runs
stream with ``Last-Event-ID`` (or ``?after_feed_id=N``): no gap, no duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable

from apiflask import APIBlueprint
from flask import Response, request

from smithers.gateway.apidoc import AUTH, CURSOR, LAST_EVENT_ID, RUN_ID_PARAM, SSE, errors, param, reads
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
@bp.doc(
    summary="Follow a run's events (Server-Sent Events)",
    operation_id="runEvents",
    description="`id:` is the run's seq. Resume with `Last-Event-ID` or `after_seq`: no gap, no"
    " duplicate. The stream ends with an `end` event once the run is terminal and every event"
    " was sent; comment lines keep it alive while idle.",
    responses={200: SSE, **errors(*AUTH, 404, 503)},
)
@reads(RUN_ID_PARAM, param("after_seq", "query", CURSOR, "Start after this seq (default 0)."), LAST_EVENT_ID)
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
@bp.doc(
    summary="Follow every run's events in commit order (Server-Sent Events)",
    operation_id="allEvents",
    description="`id:` is the event's feed id, allocated in commit order (on PostgreSQL"
    " shortly after the commit; until then the event's `feed_id` is `null` where it is"
    " shown and this stream has not sent it). Resume with `Last-Event-ID` or `after_feed_id`.",
    responses={200: SSE, **errors(*AUTH, 503)},
)
@reads(param("after_feed_id", "query", CURSOR, "Start after this feed id (default 0)."), LAST_EVENT_ID)
def all_events() -> Response:
    """Every run's events in commit order from ``feed_id > cursor``."""
    check_query(("after_feed_id",))
    after = _cursor("after_feed_id")
    svc = services()
    return _sse(Stream(svc.store, svc.fanout, svc.config, after, svc.metrics.count_events))
