"""The probes' bodies (``/healthz``, ``/readyz`` when ready)."""

from __future__ import annotations

from smithers.shared.api.model import Resource


class Health(Resource):
    """The process answers."""

    status: str


class Ready(Resource):
    """The store, the broker and the metrics each `ok`."""

    status: str
    checks: dict[str, str]
