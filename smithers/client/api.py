"""The methods both clients share, each defined once from its :mod:`~smithers.client.calls`
builder.

:class:`Api` lists every operation as an :class:`Endpoint`. Read on a
:class:`~smithers.client.Client` an endpoint is a method that sends its call and returns
the result; read on an :class:`~smithers.client.AsyncClient` it is the same method as a
coroutine. The signature, the docstring and the parser are the builder's, so the two
clients cannot drift apart; each only says how it sends (:meth:`Api.bind`).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from smithers.client import calls
from smithers.client.calls import OPERATION_ATTR, Call

if TYPE_CHECKING:
    from smithers.client.async_client import AsyncClient
    from smithers.client.client import Client

P = ParamSpec("P")
T = TypeVar("T")
USER_AGENT = "smithers-client/1"


class Endpoint(Generic[P, T]):
    """A client method made of one builder: ``Client().name(...)`` returns a ``T``,
    ``await AsyncClient().name(...)`` too."""

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        self.build = build
        self.operation_id: str | None = getattr(build, OPERATION_ATTR, None)
        self.__doc__ = build.__doc__
        self.signature = _result_signature(build)

    def __repr__(self) -> str:  # what help(Client) shows for the method
        return f"<method {self.build.__name__}{self.signature}>"

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Endpoint[P, T]: ...
    @overload
    def __get__(self, obj: Client, owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: AsyncClient, owner: type[Any]) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, obj: Api | None, owner: type[Any]) -> Any:
        if obj is None:
            return self
        method = obj.bind(self.build)
        method.__signature__ = self.signature  # type: ignore[attr-defined]
        return method


def _result_signature(build: Callable[..., Any]) -> inspect.Signature:
    """``build``'s signature returning what its call parses to (``Call[Run]``: ``Run``), for
    ``help()`` and ``inspect.signature`` of a client's method."""
    signature = inspect.signature(build)
    result = signature.return_annotation
    if isinstance(result, str) and result.startswith("Call[") and result.endswith("]"):
        return signature.replace(return_annotation=result.removeprefix("Call[").removesuffix("]"))
    return signature


class Api(ABC):
    """The gateway's REST API (``docs/api.md``): what :class:`~smithers.client.Client`
    and :class:`~smithers.client.AsyncClient` have in common.

    ``base_url`` is the gateway's root (``https://host:8080``); ``token`` a bearer token
    (``smithers token issue``).
    """

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    @abstractmethod
    def bind(self, build: Callable[P, Call[T]]) -> Callable[P, Any]:
        """The method that sends what ``build`` describes and returns (or awaits) its result."""

    # runs
    launch_run = Endpoint(calls.launch_run)
    list_runs = Endpoint(calls.list_runs)
    get_run = Endpoint(calls.get_run)
    delete_run = Endpoint(calls.delete_run)
    cancel_run = Endpoint(calls.cancel_run)
    resume_run = Endpoint(calls.resume_run)
    rerun_run = Endpoint(calls.rerun_run)
    migrate_run = Endpoint(calls.migrate_run)
    # approvals, signals and reviews
    list_approvals = Endpoint(calls.list_approvals)
    approval_context = Endpoint(calls.approval_context)
    decide_approval = Endpoint(calls.decide_approval)
    approve = Endpoint(calls.approve)
    deny = Endpoint(calls.deny)
    send_signal = Endpoint(calls.send_signal)
    list_sandboxes = Endpoint(calls.list_sandboxes)
    review_sandbox = Endpoint(calls.review_sandbox)
    # history
    audit = Endpoint(calls.audit)
    rewind = Endpoint(calls.rewind)
    replay = Endpoint(calls.replay)
    fork = Endpoint(calls.fork)
    # schedules and workflows
    list_schedules = Endpoint(calls.list_schedules)
    pause_schedule = Endpoint(calls.pause_schedule)
    resume_schedule = Endpoint(calls.resume_schedule)
    list_workflows = Endpoint(calls.list_workflows)
    list_revisions = Endpoint(calls.list_revisions)
    migrate_workflow = Endpoint(calls.migrate_workflow)
    # grants and the caller
    issue_grant = Endpoint(calls.issue_grant)
    list_grants = Endpoint(calls.list_grants)
    revoke_grant = Endpoint(calls.revoke_grant)
    whoami = Endpoint(calls.whoami)
    # probes
    health = Endpoint(calls.health)
    ready = Endpoint(calls.ready)
    metrics = Endpoint(calls.metrics)
    openapi = Endpoint(calls.openapi)


def operations(client: type[Api]) -> dict[str, str]:
    """``{operationId: method name}`` of every method of ``client`` that calls one."""
    found: dict[str, str] = {}
    for klass in reversed(client.__mro__):
        for name, attr in vars(klass).items():
            op = attr.operation_id if isinstance(attr, Endpoint) else getattr(attr, OPERATION_ATTR, None)
            if op is not None:
                found[str(op)] = name
    return found
