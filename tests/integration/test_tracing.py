"""One trace follows a run: the launch request, each decision, each Celery publish and
step, each commit. The gateway (Flask test client), the scheduler and a real Celery worker
(threads pool, real Redis; not eager mode) run in this process so one in-memory exporter
sees every span."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from smithers.gateway.store import GatewayStore
from smithers.scheduler import Scheduler
from smithers.shared import tracing
from smithers.shared.broker import Broker
from smithers.shared.config import SchedulerConfig, WorkerConfig
from smithers.shared.status import RunStatus
from smithers.shared.store.queries import get_run
from smithers.workers import build_env, create_app
from tests.integration.gateway.support import Gateway, config, registry

pytestmark = pytest.mark.timeout(120)
EXPORTER = InMemorySpanExporter()


@pytest.fixture
def traced() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)  # once per process: OpenTelemetry's own rule
    EXPORTER.clear()
    tracing.enable({})
    try:
        yield EXPORTER
    finally:
        tracing.disable()


def attr(span: ReadableSpan, key: str) -> Any:
    return (span.attributes or {}).get(key)


def test_one_trace_follows_a_run(tmp_path: Path, redis_url: str, traced: InMemorySpanExporter) -> None:
    # given a gateway, a scheduler and a step worker, all traced
    database_url = f"sqlite:///{tmp_path / 'smithers.db'}"
    from smithers.gateway.app import create_app as create_gateway

    store = GatewayStore(database_url)
    store.migrate()
    gw = Gateway(create_gateway(config(database_url, redis_url), store=store, registry=registry()))
    env = build_env(database_url, redis_url, registry(), WorkerConfig(lease_s=5, concurrency=2))
    worker_app = create_app(env)
    broker = Broker(redis_url)
    scheduler = Scheduler(gw.store, broker, registry(), SchedulerConfig(sweep_interval_s=0.2))
    stop = threading.Event()
    loop = threading.Thread(target=scheduler.run_forever, args=(stop,), daemon=True)
    token = gw.auth("run:write")  # issued before the trace starts
    traced.clear()
    try:
        with start_worker(
            worker_app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING"
        ):
            loop.start()

            # when a run is launched over HTTP and runs to its end
            response = gw.client.post("/v1/runs", json={"workflow": "t-chain", "input": {}}, headers=token)
            assert response.status_code == 201, response.get_json()
            run_id = response.get_json()["run_id"]
            deadline = time.time() + 60
            while True:
                with gw.store.read() as conn:
                    run = get_run(conn, run_id)
                assert run is not None
                if run.status is RunStatus.SUCCEEDED:
                    break
                assert time.time() < deadline, run.status
                time.sleep(0.05)
            time.sleep(0.3)  # the last commit's span ends after its transaction
    finally:
        stop.set()
        loop.join(timeout=10)
        broker.close()
        env.broker.close()
        env.store.close()
        gw.close()

    # then one trace holds it all, rooted at the launch request
    spans = traced.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    request = next(s for s in spans if s.name == "POST /v1/runs")
    run_trace = [s for s in spans if s.context.trace_id == request.context.trace_id]
    named = {name: [s for s in run_trace if s.name == name] for name in {s.name for s in run_trace}}

    def parent(span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, span.name
        return by_id[span.parent.span_id]

    launch = named["smithers.launch"][0]
    assert parent(launch) is request and attr(launch, tracing.RUN_ID) == run_id
    # the launch makes the first decision; each step's commit makes the next one
    decisions = named["smithers.decide"]
    assert [d for d in decisions if parent(d) is launch] and all(
        attr(d, tracing.RUN_ID) == run_id and (parent(d) is launch or parent(d).name == "smithers.commit")
        for d in decisions
    )

    steps = named["smithers.step"]
    assert sorted(attr(s, tracing.NODE_ID) for s in steps) == ["a", "b", "c", "d", "e"]
    first = next(s for s in steps if attr(s, tracing.NODE_ID) == "a")
    for step in steps:
        # step <- Celery's task span <- Celery's publish span <- a decision of this run: the
        # launch's for a, whose message was delivered; b to e ran in place under a's task
        task = parent(step)
        assert task.name == "run/smithers.step" and task.kind is trace.SpanKind.CONSUMER
        assert task is parent(first)
        publish = parent(task)
        assert publish.name == "apply_async/smithers.step" and publish.kind is trace.SpanKind.PRODUCER
        assert attr(publish, tracing.ATTEMPT_ID) == attr(first, tracing.ATTEMPT_ID)
        assert run_id in attr(publish, tracing.STEP)
        assert parent(publish) in decisions
        assert attr(step, tracing.RUN_ID) == run_id and attr(step, tracing.ATTEMPT) == 1
        assert attr(step, tracing.WORKFLOW) == "t-chain"
        # and the step's commit, with its store transaction under it
        (commit,) = [s for s in named["smithers.commit"] if parent(s) is step]
        assert attr(commit, tracing.NODE_ID) == attr(step, tracing.NODE_ID)
        assert any(parent(t) is commit for t in named["smithers.transaction"])
    assert any(parent(t) is launch for t in named["smithers.transaction"])  # the launch's commit
