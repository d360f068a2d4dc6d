"""SMITHERS_LOG_FORMAT=json: every line a real gateway (gunicorn) and a real Celery worker
write is a JSON object, gunicorn's and Celery's own records included."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from smithers.shared.status import RunStatus
from tests.integration.test_gateway_server import base_env, request, start

# Celery writes these straight to the terminal (not log records; stdout, never stderr):
# its shutdown notice, and the startup banner unless --quiet (which `smithers worker` passes).
CELERY_NOTICE = re.compile(r"^(worker: (Warm|Cold) shutdown \(MainProcess\))?$")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` parsed as JSON (a line that is not fails the test)."""
    lines = []
    for line in text.splitlines():
        if CELERY_NOTICE.fullmatch(line.strip()):
            continue
        try:
            lines.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n--- whole log ---\n{text}") from None
    return lines


def test_gunicorn_writes_only_json_lines(tmp_path: Path, sqlite_url: str, redis_url: str) -> None:
    # given the gateway under gunicorn with SMITHERS_LOG_FORMAT=json
    server = start(base_env(sqlite_url, redis_url, SMITHERS_LOG_FORMAT="json"), tmp_path / "gateway.log")
    try:
        # when it serves a request and is stopped
        assert request(server.port, "GET", "/readyz")[0] == 200
        assert request(server.port, "GET", "/v1/runs", "Bearer-not-a-token")[0] == 401
    finally:
        server.stop()
    # then every line is JSON: ours, the access log and gunicorn's own (master and worker)
    lines = json_lines(server.output())
    loggers = {line["logger"] for line in lines}
    assert {"smithers.gateway", "smithers.gateway.access", "gunicorn.error"} <= loggers, loggers
    messages = [line["message"] for line in lines if line["logger"] == "gunicorn.error"]
    assert any(m.startswith("Listening at:") for m in messages), messages
    assert any("Shutting down" in m for m in messages), messages
    assert all(line["process"] == "gateway" for line in lines)
    assert "Bearer-not-a-token" not in server.output()


def test_a_celery_worker_writes_only_json_lines(engine_factory: Any, sqlite_url: str) -> None:
    # given a scheduler and a Celery worker with SMITHERS_LOG_FORMAT=json
    engine = engine_factory(sqlite_url, SMITHERS_LOG_FORMAT="json")
    engine.scheduler()
    engine.worker()
    # when a run whose first attempt fails (a logged traceback) retries to success
    run_id = engine.launch("t-retry", {"fail_times": 1})
    assert engine.wait(run_id).status is RunStatus.SUCCEEDED
    engine.stop_all()
    # then each process's log is JSON lines only, Celery's records included
    worker = json_lines((engine.logs / "worker.log").read_text())
    scheduler = json_lines((engine.logs / "scheduler.log").read_text())
    assert scheduler and all(line["process"] == "scheduler" for line in scheduler)
    loggers = {line["logger"] for line in worker}
    assert any(name.startswith("celery.") for name in loggers), loggers
    assert any(line["message"].endswith("ready.") for line in worker), worker
    assert all(line["process"] == "worker" for line in worker)
