"""Prometheus metrics of one gateway app, plus the cluster's figures from the store.

Under several gunicorn workers, ``smithers.gateway.server`` sets ``PROMETHEUS_MULTIPROC_DIR``
before any worker starts, and ``/metrics`` then sums every worker's values.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Request counts and latencies, open streams, delivered events, denials."""

    def __init__(self, extra: Collector | None = None) -> None:
        self.extra = extra  # the cluster's figures read from the store (smithers.shared.metrics)
        self.registry = CollectorRegistry(auto_describe=True)
        if extra is not None:
            self.registry.register(extra)
        self.requests = Counter(
            "smithers_gateway_requests_total",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "smithers_gateway_request_seconds",
            "Time to answer a request (event streams excluded).",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.streams = Gauge(
            "smithers_gateway_event_streams",
            "Open Server-Sent Event streams.",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.events = Counter(
            "smithers_gateway_stream_events_total",
            "Events written to event streams.",
            registry=self.registry,
        )
        self.denied = Counter(
            "smithers_gateway_denied_total",
            "Requests refused for a missing or bad credential (401) or scope (403).",
            ["status"],
            registry=self.registry,
        )

    def count_events(self, n: int) -> None:
        """Count ``n`` events sent on a stream."""
        if n:
            self.events.inc(n)

    def count_streams(self, delta: int) -> None:
        """An event stream opened (+1) or closed (-1)."""
        self.streams.inc(delta)

    def problem(self) -> str | None:
        """Why the metrics cannot be served (None: they can). In multiprocess mode every
        worker writes its values under ``PROMETHEUS_MULTIPROC_DIR``: gone or read-only,
        neither this worker's counters nor ``/metrics`` work."""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return None
        if not os.path.isdir(directory):
            return "the multiprocess metrics directory is missing"
        if not os.access(directory, os.W_OK | os.X_OK):
            return "the multiprocess metrics directory is not writable"
        return None

    def render(self) -> tuple[bytes, str]:
        """The exposition text (summed over workers in multiprocess mode) and its type."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            if self.extra is not None:
                registry.register(self.extra)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
