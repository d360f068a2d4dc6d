"""A typed client for the gateway's REST API (``docs/api.md``).

>>> from smithers.client import Client
>>> with Client("https://smithers.example", token) as api:        # doctest: +SKIP
...     launched = api.launch_run("hello", {"name": "ada"})
...     for event in api.follow_run(launched.run.run_id):
...         print(event.seq, event.type)

Every method is one operation of the OpenAPI document (its ``operationId`` is on the
method's builder in :mod:`smithers.client.calls`, see :data:`EXCLUDED` for the few a client
has no use for), returns the types of :mod:`smithers.client.types` and raises the errors of
:mod:`smithers.shared.errors` for a gateway's refusal (:mod:`smithers.client.errors`).
:class:`~smithers.client.AsyncClient` is the same API with ``await``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

import httpx

from smithers.client import calls
from smithers.client.api import Api
from smithers.client.calls import EXCLUDED, Call, Follow, check, operation, unreachable
from smithers.client.stream import EventStream
from smithers.shared.api import RunSummary

__all__ = ["EXCLUDED", "Client"]

P = ParamSpec("P")
T = TypeVar("T")


class Client(Api):
    """The gateway's REST API over one ``httpx.Client`` (connection pooling, TLS).

    ``base_url`` is the gateway's root (``https://host:8080``); ``token`` a bearer token
    (``smithers token issue``); ``verify`` a CA bundle path or False for TLS.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token)
        self.http = httpx.Client(
            base_url=self.base_url,
            headers=self.headers,
            timeout=timeout_s,
            verify=verify,
            transport=transport,
            follow_redirects=False,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    # -- plumbing -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        """Send one request; a status outside ``ok`` raises its error."""
        try:
            if json is None and method == "POST":
                response = self.http.request(method, path, params=params, content=b"")
            else:
                response = self.http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from None
        return check(response, ok)

    def send(self, call: Call[T]) -> T:
        """Send ``call`` and return its typed result."""
        return call.parse(
            self.request(call.method, call.path, json=call.json, params=call.params, ok=call.ok)
        )

    def bind(self, build: Callable[P, Call[T]]) -> Callable[P, T]:
        """The method that sends what ``build`` describes (see :class:`~smithers.client.api.Api`)."""

        @functools.wraps(build)
        def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.send(build(*args, **kwargs))

        return method

    # -- what is more than one request ------------------------------------------------------

    def iter_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        page_size: int = 50,
        since: int | None = None,
        until: int | None = None,
        q: str | None = None,
    ) -> Iterator[RunSummary]:
        """Every matching run summary, newest first, following ``next_cursor`` page by page."""
        cursor: str | None = None
        while True:
            page = self.send(
                calls.list_runs(
                    status=status,
                    workflow=workflow,
                    limit=page_size,
                    cursor=cursor,
                    since=since,
                    until=until,
                    q=q,
                )
            )
            yield from page.runs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    @operation("runEvents")
    def follow_run(
        self,
        run_id: str,
        *,
        after_seq: int = 0,
        timeout_s: float | None = None,
        reconnect_for_s: float = 60.0,
    ) -> EventStream:
        """The run's events after ``after_seq``, as they happen, until the run ends.

        Reconnects on its own and resumes from the last seq it yielded: no gap, no
        duplicate. ``timeout_s`` stops following after that long (``end.reason`` then
        ``"deadline"``)."""
        return self._stream(
            calls.run_events(
                run_id, after_seq=after_seq, timeout_s=timeout_s, reconnect_for_s=reconnect_for_s
            )
        )

    @operation("allEvents")
    def follow_all(
        self, *, after_feed_id: int = 0, timeout_s: float | None = None, reconnect_for_s: float = 60.0
    ) -> EventStream:
        """Every run's events in commit order after ``after_feed_id`` (``RunPage.feed_id``
        gives a starting point); never ends by itself."""
        return self._stream(
            calls.all_events(
                after_feed_id=after_feed_id, timeout_s=timeout_s, reconnect_for_s=reconnect_for_s
            )
        )

    def _stream(self, follow: Follow) -> EventStream:
        return EventStream(
            self.http,
            follow.path,
            after=follow.after,
            by=follow.by,
            deadline=follow.deadline,
            reconnect_for_s=follow.reconnect_for_s,
        )
