"""What the views use: the store, the broker, the registry, the control plane, the
event fanout and the metrics, built once per app by :func:`smithers.gateway.app.create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from flask import current_app

from smithers.gateway.config import GatewayConfig
from smithers.gateway.fanout import Fanout
from smithers.gateway.limits import FailureLimiter
from smithers.gateway.metrics import Metrics
from smithers.shared.broker import Broker
from smithers.shared.registry import Registry
from smithers.shared.store import Store
from smithers.shared.store.advance import Decider
from smithers.shared.store.grants import ControlPlaneStore

EXTENSION = "smithers"


@dataclass
class Services:
    """The app's collaborators."""

    config: GatewayConfig
    store: Store
    broker: Broker | None
    registry: Registry
    control: ControlPlaneStore
    fanout: Fanout
    metrics: Metrics
    limiter: FailureLimiter
    decider: Decider | None = None  # the gateway decides the runs it changes (launch, approve, cancel)

    def close(self) -> None:
        """Stop the poller and close connections."""
        self.fanout.stop()
        if self.broker is not None:
            self.broker.close()
        self.store.close()


def services() -> Services:
    """The services of the current app."""
    return cast(Services, current_app.extensions[EXTENSION])
