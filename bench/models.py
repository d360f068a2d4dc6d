"""Per-request cost of the request-body models: APIFlask + pydantic against plain Flask.

    .venv/bin/python bench/models.py [--requests 20000] [--rounds 5]

Three WSGI apps answer the same POST of a launch body (``{"workflow", "input", "run_id",
"priority"}``) with ``{"ok": true}``, called in process with one prebuilt WSGI environ
(no socket, no test client), so the difference between them is what the integration
costs per request:

- ``flask``: the yardstick, a plain Flask route that reads ``request.get_json()``;
- ``flask_pydantic``: the same route validating with ``LaunchRequest.model_validate``
  by hand (the model's own cost, without APIFlask);
- ``apiflask``: an APIFlask route with ``@bp.input(LaunchRequest)`` on an APIBlueprint,
  as the gateway's views are written.

Rounds alternate the apps; each figure is the median over rounds of the mean CPU
microseconds per request (``time.process_time``, so that other jobs on a shared machine
count less). The last line is machine-readable JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apiflask import APIBlueprint, APIFlask
from flask import Flask, jsonify, request
from werkzeug.test import EnvironBuilder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smithers.gateway.models import LaunchRequest  # noqa: E402

BODY = json.dumps(
    {"workflow": "hello", "input": {"name": "world", "n": 3}, "run_id": "bench-1", "priority": 2}
).encode()
WSGI = Callable[[dict[str, Any], Callable[..., Any]], Any]


def plain() -> Flask:
    app = Flask("plain")

    @app.post("/v1/runs")
    def launch() -> Any:
        body = request.get_json()
        assert body["workflow"] == "hello"
        return jsonify({"ok": True})

    return app


def by_hand() -> Flask:
    app = Flask("by_hand")

    @app.post("/v1/runs")
    def launch() -> Any:
        body = LaunchRequest.model_validate(request.get_json())
        assert body.workflow == "hello"
        return jsonify({"ok": True})

    return app


def integration() -> APIFlask:
    app = APIFlask("apiflask", spec_path=None, docs_path=None, json_errors=False)
    bp = APIBlueprint("runs", __name__)

    @bp.post("/v1/runs")
    @bp.input(LaunchRequest, arg_name="body")
    def launch(body: LaunchRequest) -> Any:
        assert body.workflow == "hello"
        return jsonify({"ok": True})

    app.register_blueprint(bp)
    return app


def per_request_us(app: WSGI, n: int) -> float:
    environ = EnvironBuilder(
        path="/v1/runs", method="POST", data=BODY, content_type="application/json"
    ).get_environ()
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    start = time.process_time()  # this process's CPU: other jobs on the machine do not count
    for _ in range(n):
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(BODY)
        for _chunk in app(env, start_response):
            pass
    elapsed = time.process_time() - start
    assert set(statuses) == {"200 OK"}, set(statuses)
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    apps: dict[str, WSGI] = {"flask": plain(), "flask_pydantic": by_hand(), "apiflask": integration()}
    for app in apps.values():
        per_request_us(app, 500)  # warm up
    rounds: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(args.rounds):
        for name, app in apps.items():
            rounds[name].append(per_request_us(app, args.requests))
    result: dict[str, Any] = {name: round(statistics.median(v), 1) for name, v in rounds.items()}
    result["apiflask_extra_us"] = round(result["apiflask"] - result["flask"], 1)
    result["pydantic_extra_us"] = round(result["flask_pydantic"] - result["flask"], 1)
    for name, values in rounds.items():
        print(f"{name:15s} median {result[name]:7.1f} us/request  rounds {[round(v, 1) for v in values]}")
    print(json.dumps({"requests": args.requests, "rounds": args.rounds, **result}))


if __name__ == "__main__":
    main()
