"""The asynchronous client: :class:`~smithers.client.Client`'s methods as coroutines.

>>> from smithers.client import AsyncClient
>>> async with AsyncClient("https://smithers.example", token) as api:  # doctest: +SKIP
...     launched = await api.launch_run("hello", {"name": "ada"})
...     async for event in api.follow_run(launched.run.run_id):
...         print(event.seq, event.type)

The requests, results and errors are the same (both clients are made of the builders of
:mod:`smithers.client.calls`); only the transport differs: one ``httpx.AsyncClient``, and
an :class:`~smithers.client.stream.AsyncEventStream` that reconnects and resumes like the
synchronous one. It runs on asyncio.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, ParamSpec, TypeVar

import httpx

from smithers.client import calls
from smithers.client.api import Api
from smithers.client.calls import Call, Follow, check, operation, unreachable
from smithers.client.stream import AsyncEventStream
from smithers.shared.api import RunSummary

__all__ = ["AsyncClient"]

P = ParamSpec("P")
T = TypeVar("T")


class AsyncClient(Api):
    """The gateway's REST API over one ``httpx.AsyncClient``; every method of
    :class:`~smithers.client.Client` with ``await`` (``iter_runs`` and the streams with
    ``async for``). Close it with ``await api.aclose()`` or ``async with``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token)
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self.headers,
            timeout=timeout_s,
            verify=verify,
            transport=transport,
            follow_redirects=False,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    # -- plumbing -------------------------------------------------------------------------

    async def request(
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
                response = await self.http.request(method, path, params=params, content=b"")
            else:
                response = await self.http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from None
        return check(response, ok)

    async def send(self, call: Call[T]) -> T:
        """Send ``call`` and return its typed result."""
        response = await self.request(call.method, call.path, json=call.json, params=call.params, ok=call.ok)
        return call.parse(response)

    def bind(self, build: Callable[P, Call[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """The coroutine that sends what ``build`` describes (see :class:`~smithers.client.api.Api`)."""

        @functools.wraps(build)
        async def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.send(build(*args, **kwargs))

        return method

    # -- what is more than one request ------------------------------------------------------

    async def iter_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        page_size: int = 50,
        since: int | None = None,
        until: int | None = None,
        q: str | None = None,
    ) -> AsyncIterator[RunSummary]:
        """Every matching run summary, newest first, following ``next_cursor`` page by page."""
        cursor: str | None = None
        while True:
            page = await self.send(
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
            for run in page.runs:
                yield run
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
    ) -> AsyncEventStream:
        """The run's events after ``after_seq``, as they happen, until the run ends
        (``async for``); reconnects and resumes from the last seq: no gap, no duplicate."""
        return self._stream(
            calls.run_events(
                run_id, after_seq=after_seq, timeout_s=timeout_s, reconnect_for_s=reconnect_for_s
            )
        )

    @operation("allEvents")
    def follow_all(
        self, *, after_feed_id: int = 0, timeout_s: float | None = None, reconnect_for_s: float = 60.0
    ) -> AsyncEventStream:
        """Every run's events in commit order after ``after_feed_id`` (``async for``)."""
        return self._stream(
            calls.all_events(
                after_feed_id=after_feed_id, timeout_s=timeout_s, reconnect_for_s=reconnect_for_s
            )
        )

    def _stream(self, follow: Follow) -> AsyncEventStream:
        return AsyncEventStream(
            self.http,
            follow.path,
            after=follow.after,
            by=follow.by,
            deadline=follow.deadline,
            reconnect_for_s=follow.reconnect_for_s,
        )
