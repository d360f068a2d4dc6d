"""OpenTelemetry tracing: one trace per run, off unless the OTEL_* environment asks for it.

Off (the default), nothing here imports ``opentelemetry`` and every helper is a no-op
that returns at once. On (:func:`configure` finds ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or an ``OTEL_TRACES_EXPORTER`` other than
``none``, and ``OTEL_SDK_DISABLED`` is not ``true``), the SDK exports over OTLP/HTTP
and Flask, Celery and redis-py are instrumented (leave some out with
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=redis``). The store's write transactions are
spans of their own (``smithers.transaction``) rather than SQLAlchemy's instrumentation:
opentelemetry-instrumentation-sqlalchemy 0.66b1 refuses SQLAlchemy 2.1.

How one trace follows a run across processes: the launch's W3C ``traceparent`` is stored
on the run row, since the scheduler is woken over a Redis list that carries no context;
each decision span takes it as its parent. A step message carries its publish span's
``traceparent`` in its Celery headers, where the Celery instrumentation of the worker
picks it up as the parent of the task's span; the step and its commit are children of
that. Span attributes name the run, node and attempt (:data:`RUN_ID` ...).

Needs the ``otel`` extra (``pip install 'smithers[otel]'``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from smithers.shared.keys import STEP_TASK

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("smithers.tracing")

RUN_ID = "smithers.run_id"
NODE_ID = "smithers.node_id"
ITERATION = "smithers.iteration"
ATTEMPT = "smithers.attempt"  # the attempt's number (1 for the first try)
ATTEMPT_ID = "smithers.attempt_id"
WORKFLOW = "smithers.workflow"
STEP = "smithers.step"  # a step message's label, workflow/run/node#attempt
TRACEPARENT = "traceparent"  # the W3C header, also the key of a step message's header

INSTRUMENTATIONS = ("flask", "celery", "redis")

_NULL: AbstractContextManager[None] = contextlib.nullcontext()
_tracer: Any = None  # an opentelemetry Tracer once enabled
_skipped: set[str] = set()  # instrumentations left out (OTEL_PYTHON_DISABLED_INSTRUMENTATIONS)


def wanted(env: Mapping[str, str]) -> bool:
    """True when the OTEL_* variables ask for traces to be exported."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def enabled() -> bool:
    """True once tracing is on in this process."""
    return _tracer is not None


def configure(service: str, env: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on for this process if the OTEL_* variables ask for it; idempotent.

    ``service`` names the process (``gateway``, ``scheduler``, ``worker``) in
    ``service.name`` (``smithers-<service>``) unless ``OTEL_SERVICE_NAME`` says otherwise.
    A tracer provider set before (by a host application or a test) is kept."""
    env = os.environ if env is None else env
    if enabled() or not wanted(env):
        return enabled()
    try:
        from opentelemetry import trace  # noqa: PLC0415
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    except ImportError:
        log.warning("OTEL_* is set but OpenTelemetry is not installed: pip install 'smithers[otel]'")
        return False
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        name = env.get("OTEL_SERVICE_NAME") or f"smithers-{service}"
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
        if exporter == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:  # otlp (over HTTP): endpoint, headers and timeouts from OTEL_EXPORTER_OTLP_*
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    enable(env)
    return True


def enable(env: Mapping[str, str] | None = None) -> None:
    """Turn the helpers on with the current tracer provider and instrument the libraries
    (Celery, redis-py; Flask per app, :func:`instrument_app`); idempotent.
    :func:`configure` calls it; a test calls it after setting its own provider."""
    global _tracer  # noqa: PLW0603 (one tracer per process, like OpenTelemetry's own globals)
    if enabled():
        return
    from opentelemetry import trace  # noqa: PLC0415

    skip = _disabled(os.environ if env is None else env)
    if "celery" not in skip:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor  # noqa: PLC0415

        CeleryInstrumentor().instrument()  # type: ignore[no-untyped-call]
        from celery.signals import before_task_publish  # noqa: PLC0415

        before_task_publish.connect(_annotate_publish, weak=False)
    if "redis" not in skip:
        from opentelemetry.instrumentation.redis import RedisInstrumentor  # noqa: PLC0415

        RedisInstrumentor().instrument()
    _tracer = trace.get_tracer("smithers")
    _skipped.update(skip)


def disable() -> None:
    """Undo :func:`enable`: the helpers are no-ops again and the libraries uninstrumented
    (a test that turned tracing on leaves the process as it found it)."""
    global _tracer  # noqa: PLW0603
    if not enabled():
        return
    from celery.signals import before_task_publish  # noqa: PLC0415
    from opentelemetry.instrumentation.celery import CeleryInstrumentor  # noqa: PLC0415
    from opentelemetry.instrumentation.redis import RedisInstrumentor  # noqa: PLC0415

    before_task_publish.disconnect(_annotate_publish)
    if "celery" not in _skipped:
        CeleryInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    if "redis" not in _skipped:
        RedisInstrumentor().uninstrument()
    _tracer = None
    _skipped.clear()


def _disabled(env: Mapping[str, str]) -> set[str]:
    raw = env.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return {part.strip().lower() for part in raw.split(",") if part.strip()}


def instrument_app(app: Flask) -> None:
    """Trace the Flask app's requests (a no-op while tracing is off)."""
    if not enabled() or "flask" in _skipped:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor  # noqa: PLC0415

    FlaskInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")  # type: ignore[no-untyped-call]


def span(name: str, parent: str | None = None, **attributes: Any) -> AbstractContextManager[Any]:
    """A span around a block, current inside it, with ``attributes`` (None values left
    out). ``parent``: a W3C ``traceparent`` to continue (else the current span's child).
    A no-op while tracing is off."""
    if _tracer is None:
        return _NULL
    return _span(name, parent, attributes)


def child_span(name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """:func:`span`, but only inside a trace: no root span for background work (a
    heartbeat, a sweep's transaction)."""
    if _tracer is None:
        return _NULL
    from opentelemetry import trace  # noqa: PLC0415

    if not trace.get_current_span().get_span_context().is_valid:
        return _NULL
    return _span(name, None, attributes)


@contextlib.contextmanager
def _span(name: str, parent: str | None, attributes: Mapping[str, Any]) -> Iterator[Any]:
    context = _extract(parent) if parent else None
    values = {k: v for k, v in attributes.items() if v is not None}
    with _tracer.start_as_current_span(name, context=context, attributes=values) as opened:
        yield opened


def traceparent() -> str | None:
    """The current span's W3C ``traceparent`` (None off or outside a span), to store."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get(TRACEPARENT)


def current() -> Any:
    """The current context, to make current again later with :func:`use` (None when off)."""
    if _tracer is None:
        return None
    from opentelemetry import context  # noqa: PLC0415

    return context.get_current()


@contextlib.contextmanager
def use(saved: Any) -> Iterator[None]:
    """Make a context from :func:`current` the current one inside the block."""
    if saved is None:
        yield
        return
    from opentelemetry import context  # noqa: PLC0415

    token = context.attach(saved)
    try:
        yield
    finally:
        context.detach(token)


def inject(headers: MutableMapping[str, Any]) -> None:
    """Add the current context's W3C headers to ``headers`` (nothing when off)."""
    if _tracer is None:
        return
    from opentelemetry import propagate  # noqa: PLC0415

    propagate.inject(headers)


def annotate(**attributes: Any) -> None:
    """Set ``attributes`` (None values left out) on the current span; a no-op when off."""
    if _tracer is None:
        return
    from opentelemetry import trace  # noqa: PLC0415

    values = {k: v for k, v in attributes.items() if v is not None}
    trace.get_current_span().set_attributes(values)


def _annotate_publish(headers: Mapping[str, Any] | None = None, body: Any = None, **_: Any) -> None:
    # Connected after the Celery instrumentation's handler: the current span is its
    # publish span. A step message's argsrepr is its label (workflow/run/node#attempt).
    if not headers or headers.get("task") != STEP_TASK:
        return
    args = body[0] if isinstance(body, list | tuple) and body else None
    annotate(
        **{
            ATTEMPT_ID: args[0] if isinstance(args, list | tuple) and args else None,
            STEP: headers.get("argsrepr") or None,
        }
    )


def _extract(traceparent_value: str) -> Any:
    from opentelemetry import propagate  # noqa: PLC0415

    return propagate.extract({TRACEPARENT: traceparent_value})
