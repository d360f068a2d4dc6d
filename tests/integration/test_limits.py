"""Size bounds: run input (413 at launch), step output (the step fails with
``output_too_large``), event payloads; nothing oversized is stored, and list pages
carry summaries without input or output."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from smithers.shared.errors import PayloadTooLarge
from smithers.shared.limits import SizeLimits
from smithers.shared.status import RunStatus
from smithers.shared.store import Store
from smithers.shared.store import schema as s
from smithers.shared.store.queries import attempts_of, outputs_of
from tests.integration.gateway.support import make_gateway

pytestmark = pytest.mark.timeout(180)


def test_a_step_output_over_the_limit_fails_the_step_and_stores_nothing(
    engine_factory: Any, database_url: str
) -> None:
    eng = engine_factory(database_url, SMITHERS_MAX_OUTPUT_BYTES="1000")
    eng.scheduler()
    eng.worker()
    small = eng.launch("t-sized", {"size": 500})
    big = eng.launch("t-sized", {"size": 5000})
    assert eng.wait(small).status == RunStatus.SUCCEEDED
    failed = eng.wait(big)
    assert failed.status == RunStatus.FAILED
    with eng.store.read() as conn:
        attempts = attempts_of(conn, big)
        assert outputs_of(conn, big) == {}
        assert outputs_of(conn, small) == {("text", 0): "x" * 500}
        stored = [len(json.dumps(v)) for v in conn.execute(select(s.outputs.c.value)).scalars()]
    assert attempts and all(a.error and a.error["code"] == "output_too_large" for a in attempts)
    assert "5002 bytes" in attempts[0].error["message"]  # type: ignore[index]
    assert stored and max(stored) < 1000


def test_an_event_payload_over_the_limit_is_refused_and_nothing_is_written(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    store.limits = SizeLimits(event_bytes=100)
    try:
        with pytest.raises(PayloadTooLarge, match="the limit is 100"), store.write() as tx:
            tx.emit("run-x", "note", payload={"text": "y" * 200})
        with store.read() as conn:
            assert conn.execute(select(func.count()).select_from(s.events)).scalar() == 0
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_launch_over_the_input_limit_gets_413_and_lists_carry_no_input_or_output(
    backend: str, request: pytest.FixtureRequest, tmp_path: Any, redis_url: str
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite" else str(request.getfixturevalue("pg_url"))
    with make_gateway(url, redis_url) as gw:
        gw.store.limits = SizeLimits(input_bytes=200)
        writer = gw.auth("run:write,run:read")
        over = gw.client.post(
            "/v1/runs", json={"workflow": "t-sized", "input": {"pad": "z" * 300}}, headers=writer
        )
        assert over.status_code == 413
        assert over.get_json()["error"]["code"] == "payload_too_large"
        assert "the limit is 200" in over.get_json()["error"]["message"]
        with gw.store.read() as conn:
            assert conn.execute(select(func.count()).select_from(s.runs)).scalar() == 0

        ok = gw.client.post("/v1/runs", json={"workflow": "t-sized", "input": {"size": 3}}, headers=writer)
        assert ok.status_code == 201, ok.get_json()
        page = gw.client.get("/v1/runs", headers=writer).get_json()
        (summary,) = page["runs"]
        assert "input" not in summary and "output" not in summary
        assert summary["run_id"] == ok.get_json()["run_id"]
        detail = gw.client.get(f"/v1/runs/{summary['run_id']}", headers=writer).get_json()
        assert detail["run"]["input"] == {"size": 3}
