"""Tracing is off unless the OTEL_* environment asks for it, and free when off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from smithers.shared import tracing

ROOT = Path(__file__).resolve().parents[2]


def test_off_imports_no_opentelemetry() -> None:
    # given a process with no OTEL_* variable, when the worker and the gateway are imported
    code = (
        "import sys, smithers.workers, smithers.gateway.app, smithers.scheduler\n"
        "from smithers.shared import tracing\n"
        "assert not tracing.configure('worker')\n"
        "with tracing.span('x', None, a=1):\n"
        "    tracing.annotate(b=2)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    # then nothing of OpenTelemetry was imported
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_wanted_follows_the_otel_variables(env: dict[str, str], on: bool) -> None:
    assert tracing.wanted(env) is on


def test_helpers_are_no_ops_when_off() -> None:
    assert not tracing.enabled()
    assert tracing.traceparent() is None and tracing.current() is None
    headers: dict[str, str] = {}
    tracing.inject(headers)
    assert headers == {}
    with tracing.span("x", "00-" + "1" * 32 + "-" + "2" * 16 + "-01") as span, tracing.use(None):
        assert span is None
