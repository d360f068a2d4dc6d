"""The typed results of :class:`smithers.client.Client`: frozen dataclasses, one per
schema of the gateway's OpenAPI document, each built by ``from_json`` from a response body.

The families modelled in pydantic (every one but the readiness probe and the stream's end)
come from :mod:`smithers.shared.api`, the models the gateway serializes with; here are
those two, :class:`Launched` (the client's answer to a launch)
and :class:`Signal` (with the client's ``created``). ``from_json`` (and the models'
``model_validate``) reads the fields it knows and
ignores others: a newer gateway that adds a field does not break an older client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smithers.shared import api

Json = Mapping[str, Any]


@dataclass(frozen=True)
class Launched:
    """The answer to a launch or rerun: the run, and whether this call created it (201);
    ``created`` is the client's (the status code's meaning), not the body's."""

    run: api.Run
    created: bool
    warnings: tuple[api.LaunchWarning, ...] = ()


class Signal(api.Signal):
    """A signal sent to a run; ``created`` False: a repeat of its ``signal_id`` (the first
    delivery came back). ``created`` is the client's (the status code's meaning), not the body's."""

    created: bool = True


@dataclass(frozen=True)
class Ready:
    """The gateway's readiness: ``ready`` only when every check is ``ok``."""

    ready: bool
    checks: dict[str, str]

    @classmethod
    def from_json(cls, data: Json, ready: bool) -> Ready:
        """Build from a ``Ready`` or ``NotReady`` body."""
        return cls(ready=ready, checks={str(k): str(v) for k, v in (data.get("checks") or {}).items()})


@dataclass(frozen=True)
class StreamEnd:
    """Why a stream ended: ``terminal``, ``deleted`` (a run's stream only), or ``timeout``
    / ``shutdown`` (the client reconnects), and the last id the gateway sent."""

    reason: str
    last_id: int

    @classmethod
    def from_json(cls, data: Json) -> StreamEnd:
        """Build from the ``data`` of an ``event: end`` frame."""
        return cls(reason=str(data.get("reason", "")), last_id=int(data.get("last_id") or 0))
