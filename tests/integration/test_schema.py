"""Every schema version this project shipped migrates to the same schema a new store
gets, on SQLite and PostgreSQL; a schema the code cannot bring up to date is refused
with a message that says what to do.

The baselines (tests/integration/schemas/v<N>.<dialect>.sql) are the DDL of each
version's ``schema.py`` as released, frozen (tests/integration/schemas/freeze.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import Connection, inspect, text

from smithers.shared.errors import StoreUnavailable
from smithers.shared.store import Store
from smithers.shared.store.migrate import MIGRATIONS
from tests.conftest import PG_ADMIN

SCHEMAS = Path(__file__).resolve().parent / "schemas"
VERSIONS = sorted(int(p.name.split(".")[0][1:]) for p in SCHEMAS.glob("v*.sqlite.sql"))


def shape(conn: Connection) -> dict[str, Any]:
    """Tables, columns (type, nullability), primary keys, unique constraints, indexes and
    foreign keys, as the database reports them (SQLAlchemy's inspector)."""
    insp = inspect(conn)
    out: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        columns = sorted((c["name"], str(c["type"]), bool(c["nullable"])) for c in insp.get_columns(table))
        indexes = sorted(
            (str(i["name"]), tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(table)
        )
        uniques = sorted(tuple(sorted(u["column_names"])) for u in insp.get_unique_constraints(table))
        fks = sorted(
            (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
            for f in insp.get_foreign_keys(table)
        )
        pk = tuple(insp.get_pk_constraint(table)["constrained_columns"])
        out[table] = {"columns": columns, "pk": pk, "unique": uniques, "indexes": indexes, "fks": fks}
    return out


def fresh_shape(url: str) -> dict[str, Any]:
    store = Store(url)
    assert store.migrate() == max(MIGRATIONS)
    with store.engine.connect() as conn:
        found = shape(conn)
    store.close()
    return found


def build(url: str, version: int) -> Store:
    """A store holding what release ``version`` created: its frozen DDL and version rows."""
    store = Store(url)
    lines = (SCHEMAS / f"v{version}.{store.dialect.name}.sql").read_text().splitlines()
    ddl = "\n".join(line for line in lines if not line.startswith("--"))
    with store.engine.connect() as conn:  # the script as is, on the driver
        raw: Any = conn.connection.dbapi_connection
        if store.dialect.name == "sqlite":
            raw.executescript(ddl)
        else:
            raw.execute(ddl)  # psycopg: several statements in one, without parameters
            raw.commit()
    with store.engine.begin() as conn:
        for v in range(1, version + 1):
            conn.execute(text("INSERT INTO schema_version (version, applied_at) VALUES (:v, 0)"), {"v": v})
        conn.execute(text("INSERT INTO counters (name, value) VALUES ('events', 0)"))
    return store


@pytest.fixture
def pg_url2(pg_admin: sqlalchemy.Engine) -> Iterator[str]:
    """A second fresh PostgreSQL database (tests/conftest.py's ``pg_url``)."""
    name = f"smithers_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def second_url(database_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Another empty store on the same backend as ``database_url``."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return str(request.getfixturevalue("pg_url2"))


@pytest.mark.parametrize("version", VERSIONS)
def test_a_store_of_every_shipped_version_migrates_to_the_schema_of_a_new_one(
    database_url: str, second_url: str, version: int
) -> None:
    store = build(database_url, version)
    assert store.migrate() == max(MIGRATIONS)
    with store.engine.connect() as conn:
        upgraded = shape(conn)
    store.close()
    assert upgraded == fresh_shape(second_url)


def test_a_schema_newer_than_the_code_is_refused_with_what_to_do(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO schema_version (version, applied_at) VALUES (:v, 0)"), {"v": 99})
    with pytest.raises(StoreUnavailable, match=r"version 99, newer than this release.*Run that release"):
        store.migrate()
    store.close()


def test_smithers_tables_without_a_schema_version_are_refused_with_what_to_do(database_url: str) -> None:
    store = build(database_url, 1)
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE schema_version"))
    with pytest.raises(
        StoreUnavailable, match=r"no schema_version table.*empty database, or restore a backup"
    ):
        store.migrate()
    with store.engine.connect() as conn:  # nothing was changed
        assert not inspect(conn).has_table("schema_version")
    store.close()
