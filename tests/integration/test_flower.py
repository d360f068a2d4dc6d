"""``smithers flower`` on a real broker and worker: our queues and workers, behind auth."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any

from tests.conftest import free_port
from tests.integration.conftest import Engine

USER, PASSWORD = "ops", "a-long-flower-password"
LABEL = re.compile(r"t-chain/run-[0-9a-f]+/[a-e]#1")


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
            return response.status, json.loads(body) if body.startswith((b"{", b"[")) else body
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what} not seen within {timeout}s")


def test_flower_shows_our_queues_and_workers_and_refuses_strangers(
    engine_factory: Any, sqlite_url: str
) -> None:
    # given a step worker and Flower on the same broker
    port = free_port()
    engine: Engine = engine_factory(sqlite_url, SMITHERS_FLOWER_USER=USER, SMITHERS_FLOWER_PASSWORD=PASSWORD)
    engine.worker("flower-test-worker", queues="steps,sandbox", concurrency=1)
    engine.start("flower", "flower", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    _wait_for(lambda: _get(f"{base}/healthcheck")[0] == 200, 30, "Flower answering")

    # when a stranger, a wrong password and the operator ask
    no_auth = [_get(f"{base}{path}")[0] for path in ("/", "/workers", "/broker", "/api/workers")]
    wrong = _get(f"{base}/api/workers", (USER, "not-the-password"))[0]

    # then only the operator gets in, and sees our worker on our queues
    assert no_auth == [401, 401, 401, 401]
    assert wrong == 401

    def worker_queues() -> list[str] | None:
        _, workers = _get(f"{base}/api/workers?refresh=1", (USER, PASSWORD))
        for name, info in (workers or {}).items():
            if name.startswith("flower-test-worker@") and info.get("active_queues"):
                return sorted(q["name"] for q in info["active_queues"])
        return None

    # (each queue also for the workflow revision the worker holds: docs/operations.md)
    rev = engine.registry.get("t-chain").revision[:12]
    ours = ["sandbox", f"sandbox.{rev}", "steps", f"steps.{rev}"]
    assert _wait_for(worker_queues, 30, "the worker in Flower") == ours
    status, lengths = _get(f"{base}/api/queues/length", (USER, PASSWORD))
    assert status == 200
    assert sorted(q["name"] for q in lengths["active_queues"]) == ours


def test_flower_lists_each_step_by_workflow_run_node_and_attempt(
    engine_factory: Any, sqlite_url: str
) -> None:
    # given a scheduler, a step worker and Flower (which turns the worker's task events on)
    port = free_port()
    engine: Engine = engine_factory(sqlite_url, SMITHERS_FLOWER_USER=USER, SMITHERS_FLOWER_PASSWORD=PASSWORD)
    engine.scheduler()
    engine.worker("flower-label-worker", concurrency=1)
    engine.start("flower", "flower", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    _wait_for(lambda: _get(f"{base}/healthcheck")[0] == 200, 30, "Flower answering")

    def step_args() -> list[str] | None:
        # when runs with a secret-looking input are launched until Flower has seen one
        engine.launch("t-chain", {"note": "not-for-flower"})
        # (Flower turns task events on as it starts, so it can miss the first nodes of the first
        # run, or hear a task's outcome before the event that carries its arguments)
        _, tasks = _get(f"{base}/api/tasks", (USER, PASSWORD))
        args = [t.get("args") or "" for t in (tasks or {}).values()]
        return args if any(LABEL.fullmatch(a) for a in args) else None

    # then a step reads workflow/run/node#attempt, and the input is nowhere
    _wait_for(step_args, 60, "a step labelled workflow/run/node#attempt in Flower's task list")
    _, tasks = _get(f"{base}/api/tasks", (USER, PASSWORD))
    assert "not-for-flower" not in json.dumps(tasks)
