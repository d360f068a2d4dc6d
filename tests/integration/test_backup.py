"""Back up during an active run, restore into a fresh location, finish the run there."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy

from smithers.shared.status import RunStatus
from tests.conftest import PG_ADMIN
from tests.integration.conftest import ROOT, Engine

pytestmark = pytest.mark.slow


@pytest.fixture
def second_url(database_url: str, tmp_path: Path, pg_admin: sqlalchemy.Engine) -> Iterator[str]:
    """A second, empty store on the same backend as ``database_url``."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored' / 'smithers.db'}"
        return
    name = f"smithers_restore_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    with pg_admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def db(url: str, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SMITHERS_DATABASE_URL": url, "SMITHERS_REDIS_URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "smithers", "db", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_backup_mid_run_restores_and_finishes(
    engine_factory: Any, database_url: str, second_url: str, tmp_path: Path
) -> None:
    # given a run in progress on the first store
    first: Engine = engine_factory(database_url)
    first.scheduler()
    first.worker()
    effects = tmp_path / "effects.txt"
    run_id = first.launch("t-chain", {"sleep": 1.0, "effects": str(effects)}, run_id="backed-up")
    first.wait_event(run_id, lambda ev: ev.type == "attempt.started" and ev.node_id == "b")

    # when it is backed up while steps keep committing, and the first deployment is lost
    archive = tmp_path / "backup.bin"
    result = db(database_url, first.redis_url, "backup", str(archive))
    assert result.returncode == 0, result.stderr
    first.stop_all()
    redis.Redis.from_url(first.redis_url).flushall()

    # and the backup is restored into a fresh store where new processes start
    result = db(second_url, first.redis_url, "restore", str(archive))
    assert result.returncode == 0, result.stderr
    second: Engine = engine_factory(second_url)
    second.scheduler()
    second.worker()

    # then the run finishes there, same id, same outputs
    run = second.wait(run_id, timeout=90)
    assert run.status is RunStatus.SUCCEEDED
    assert run.output == {"e": {"value": 5}}
    seqs = [e.seq for e in second.events(run_id)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_restore_refuses_a_file_that_is_not_a_backup(tmp_path: Path, redis_url: str) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a database at all" * 100)
    result = db(f"sqlite:///{tmp_path / 'x.db'}", redis_url, "restore", str(junk))
    assert result.returncode == 2
    assert "not a SQLite backup" in result.stderr or "not a sound" in result.stderr
