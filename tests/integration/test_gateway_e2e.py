"""The gateway in front of a real engine (scheduler and Celery worker processes), on
SQLite and PostgreSQL: launch over REST, follow over SSE, decide the approval over REST
as its owner, and read the finished run with its nodes, attempts and outputs."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from tests.integration.conftest import Engine
from tests.integration.gateway.support import make_gateway

pytestmark = pytest.mark.timeout(180)


DECIDING = 500  # the gateway decides the runs it changes, as `smithers gateway` does


def test_launch_follow_and_approve_over_rest(engine: Engine) -> None:
    with make_gateway(
        engine.database_url, engine.redis_url, sse_keepalive_s=0.5, sse_max_s=60, decide_max_nodes=DECIDING
    ) as gw:
        # given a run launched over REST by automation that cannot approve
        bot = gw.auth("run:read,run:write", "ci-bot")
        launched = gw.client.post("/v1/runs", json={"workflow": "t-approval"}, headers=bot)
        assert launched.status_code == 201
        run_id = launched.get_json()["run_id"]

        # and a client following its events
        frames: list[dict[str, Any]] = []
        response = gw.client.get(f"/v1/runs/{run_id}/events", headers=gw.auth("run:read"), stream=True)
        assert response.status_code == 200

        def follow() -> None:
            buffer = b""
            for chunk in response.response:
                buffer += chunk
                while b"\n\n" in buffer:
                    raw, buffer = buffer.split(b"\n\n", 1)
                    for line in raw.decode().splitlines():
                        if line.startswith("data: "):
                            frames.append(json.loads(line[6:]))

        follower = threading.Thread(target=follow)
        follower.start()

        # when the approval is requested, the bot is refused and the owner approves
        deadline = time.time() + 60
        while not any(f.get("type") == "approval.requested" for f in frames):
            assert time.time() < deadline, frames
            time.sleep(0.05)
        inbox = gw.client.get("/v1/approvals", headers=gw.auth("approval:read", "alice")).get_json()[
            "approvals"
        ]
        assert [(a["run_id"], a["node_id"]) for a in inbox if a["run_id"] == run_id] == [(run_id, "gate")]
        url = f"/v1/runs/{run_id}/approvals/gate"
        assert gw.client.post(url, json={"approved": True}, headers=bot).status_code == 403
        decided = gw.client.post(
            url, json={"approved": True, "note": "lgtm"}, headers=gw.auth("approval:submit", "alice")
        )
        assert decided.status_code == 200, decided.get_json()

        # then the stream ends after run.succeeded, having carried every seq once
        follower.join(90)
        response.close()
        assert not follower.is_alive()
        seqs = [f["seq"] for f in frames if "seq" in f]
        assert seqs == list(range(1, len(seqs) + 1))
        assert frames[-1] == {"reason": "terminal", "last_id": seqs[-1]}
        assert frames[-2]["type"] == "run.succeeded"
        decision = next(f for f in frames if f.get("type") == "approval.decided")
        assert decision["payload"] == {"approved": True, "note": "lgtm", "decided_by": "alice"}

        detail = gw.client.get(f"/v1/runs/{run_id}", headers=gw.auth("run:read")).get_json()
        assert detail["run"]["status"] == "succeeded" and detail["run"]["launched_by"] == "ci-bot"
        outputs = {o["node_id"]: o["value"] for o in detail["outputs"]}
        assert outputs["ship"] == {"by": "alice"}
        assert {a["node_id"] for a in detail["attempts"]} >= {"prepare", "ship"}


def test_the_gateway_and_a_worker_move_runs_with_no_scheduler(engine_factory: Any, database_url: str) -> None:
    # given a gateway and a step worker, and no scheduler at all
    engine: Engine = engine_factory(database_url)
    engine.worker()
    with make_gateway(engine.database_url, engine.redis_url, decide_max_nodes=DECIDING) as gw:
        writer = gw.auth("run:read,run:write", "ci-bot")

        # when a run is launched over REST: the launch decides and sends its first step
        launched = gw.client.post("/v1/runs", json={"workflow": "t-approval"}, headers=writer)
        assert launched.status_code == 201 and launched.get_json()["status"] == "running"
        run_id = launched.get_json()["run_id"]
        # the worker's commit of that step decided the approval that follows
        engine.wait_event(run_id, lambda e: e.type == "approval.requested", timeout=60)
        # and the approval's decision over REST sends the step after it
        decided = gw.client.post(
            f"/v1/runs/{run_id}/approvals/gate",
            json={"approved": True},
            headers=gw.auth("approval:submit", "alice"),
        )
        assert decided.status_code == 200, decided.get_json()
        run = engine.wait(run_id, timeout=60)
        assert run.status.value == "succeeded", run.error

        # and a cancel over REST ends a running run at once, its running step fenced out
        slow = gw.client.post(
            "/v1/runs",
            json={"workflow": "t-long-chain", "input": {"slow": "s1", "slow_s": 5}},
            headers=writer,
        ).get_json()["run_id"]
        engine.wait_event(slow, lambda e: e.type == "attempt.started" and e.node_id == "s1", timeout=60)
        cancelled = gw.client.post(f"/v1/runs/{slow}/cancel", headers=writer)
        assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
        engine.wait_event(slow, lambda e: e.type == "attempt.refused" and e.node_id == "s1", timeout=60)
        assert engine.run(slow).status.value == "cancelled"
