"""`smithers signal` as a subprocess, locally (through the store, the scheduler woken)
and remotely (through a live gateway, the token's subject the sender), on SQLite and
PostgreSQL with a real scheduler and worker: clear errors and exit codes for bad input,
an idempotent repeat, and the run finishing with the payload."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from smithers.cli import exitcodes
from smithers.shared.status import RunStatus
from smithers.shared.store.queries import outputs_for
from tests.integration.conftest import Engine
from tests.integration.gateway.live import LiveGateway, base_env, issue, remote_env, smithers

pytestmark = pytest.mark.timeout(300)


def after_ci(engine: Engine, run_id: str) -> object:
    with engine.store.read() as conn:
        return outputs_for(conn, run_id, ("after_ci",))[("after_ci", 0)]


def test_signal_locally_and_remotely(engine: Engine, tmp_path: Path, redis_url: str) -> None:
    local = {k: v for k, v in engine.env.items() if k not in ("SMITHERS_GATEWAY_URL", "SMITHERS_PROFILE")}
    run_id = engine.launch("t-signal", run_id="sig-cli-1")
    engine.wait_event(run_id, lambda e: e.type == "signal.waiting", timeout=60)

    # bad input: a clear message and a non-zero exit, never a traceback
    bad = smithers(local, "signal", run_id, "ci.done", "--payload", '{"status": 1}')
    assert bad.returncode == exitcodes.BAD_INPUT and "payload.status" in bad.stderr, bad.stderr
    oops = smithers(local, "signal", run_id, "ci.done", "--payload", "{oops")
    assert oops.returncode == exitcodes.BAD_INPUT and "--payload is not JSON" in oops.stderr
    unknown = smithers(local, "signal", run_id, "deploy.done")
    assert unknown.returncode == exitcodes.NOT_FOUND and "deploy.done" in unknown.stderr
    assert "Traceback" not in bad.stderr + oops.stderr + unknown.stderr

    # a local signal moves the run on; a repeat of its id is the first delivery
    args = (
        "signal",
        run_id,
        "ci.done",
        "--id",
        "cli-1",
        "--payload",
        '{"status": "green"}',
        "--as",
        "deployer",
    )
    sent = smithers(local, *args)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == f"signal ci.done (cli-1) to {run_id}: sent by deployer"
    assert engine.wait(run_id, timeout=60).status is RunStatus.SUCCEEDED
    assert after_ci(engine, run_id) == {"status": "green", "sender": "deployer", "signal_id": "cli-1"}
    again = smithers(local, *args)
    assert again.returncode == 0 and "already sent" in again.stdout, again.stderr
    watched = smithers(local, "watch", run_id)
    assert watched.returncode == 0, watched.stderr
    assert re.search(r"\? ci\s+waiting for signal ci\.done", watched.stdout), watched.stdout
    assert "signal ci.done (cli-1) from deployer" in watched.stdout

    # remotely the token's subject sends it
    gateway = LiveGateway(base_env(engine.database_url, redis_url), tmp_path).start()
    try:
        ops = remote_env(gateway.url, issue(gateway.env, "ops", "run:read,run:write"))
        reader = remote_env(gateway.url, issue(gateway.env, "viewer", "run:read"))
        other = engine.launch("t-signal", run_id="sig-cli-2")
        engine.wait_event(other, lambda e: e.type == "signal.waiting", timeout=60)
        posing = smithers(ops, "signal", other, "ci.done", "--as", "alice")
        assert posing.returncode == exitcodes.BAD_INPUT and "--as does not exist" in posing.stderr
        refused = smithers(reader, "signal", other, "ci.done", "--payload", '{"status": "red"}')
        assert refused.returncode == exitcodes.DENIED, refused.stderr
        invalid = smithers(ops, "signal", other, "ci.done", "--payload", '{"status": "blue"}')
        assert invalid.returncode == exitcodes.BAD_INPUT and "payload.status" in invalid.stderr
        done = smithers(ops, "signal", other, "ci.done", "--id", "r-1", "--payload", '{"status": "red"}')
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"signal ci.done (r-1) to {other}: sent by ops"
        assert engine.wait(other, timeout=60).status is RunStatus.SUCCEEDED
        assert after_ci(engine, other) == {"status": "red", "sender": "ops", "signal_id": "r-1"}
    finally:
        gateway.stop()
