"""Create and migrate the schema idempotently; safe when processes start at once.

SQLite: the migration runs inside BEGIN IMMEDIATE, so a second process waits on the
busy timeout and then finds the schema in place. PostgreSQL: a transaction-scoped
advisory lock does the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine, exists, inspect, select, text, update
from sqlalchemy.schema import CreateColumn

from smithers.shared.errors import StoreUnavailable
from smithers.shared.store import schema as s
from smithers.shared.store.engine import dialect_of

Migration = Callable[[Connection], None]


def _v1(conn: Connection) -> None:
    s.metadata.create_all(conn, checkfirst=True)
    if conn.execute(select(s.counters.c.name).where(s.counters.c.name == "events")).first() is None:
        conn.execute(s.counters.insert().values(name="events", value=0))


def _v2(conn: Connection) -> None:
    """``runs.reopened``. A run from before it may have been rewound or resumed, so each
    one that has attempts is marked reopened: its attempt numbers are counted."""
    if "reopened" in {c["name"] for c in inspect(conn).get_columns("runs")}:
        return  # created by _v1 from the current tables
    column = CreateColumn(s.runs.c.reopened).compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE runs ADD COLUMN {column}"))
    has_attempts = exists().where(s.attempts.c.run_id == s.runs.c.run_id)
    conn.execute(update(s.runs).where(has_attempts).values(reopened=True))


def _v3(conn: Connection) -> None:
    """Events numbered after commit on PostgreSQL (smithers.shared.store.feed): ``feed_id`` may
    be NULL there, and a partial index finds the unnumbered events. SQLite keeps
    numbering as it writes, so its column stays NOT NULL (changing it would mean
    rebuilding the table); the index is created there too, and stays empty."""
    if not dialect_of(conn).numbers_feed_on_write:
        conn.execute(text("ALTER TABLE events ALTER COLUMN feed_id DROP NOT NULL"))
    if "ix_events_unnumbered" not in {i["name"] for i in inspect(conn).get_indexes("events")}:
        index = next(i for i in s.events.indexes if i.name == "ix_events_unnumbered")
        index.create(conn)


def _v4(conn: Connection) -> None:
    """``runs.traceparent``: the launch's trace context (smithers.shared.tracing)."""
    if "traceparent" in {c["name"] for c in inspect(conn).get_columns("runs")}:
        return  # created by _v1 from the current tables
    column = CreateColumn(s.runs.c.traceparent).compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE runs ADD COLUMN {column}"))


def _v5(conn: Connection) -> None:
    """Workflow revisions (smithers.shared.store.revisions): ``runs.status_reason``,
    ``attempts.revision``, and the ``revisions`` and ``holders`` tables."""
    for table, column in ((s.runs, s.runs.c.status_reason), (s.attempts, s.attempts.c.revision)):
        if column.name not in {c["name"] for c in inspect(conn).get_columns(table.name)}:
            compiled = CreateColumn(column).compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {compiled}"))
    s.revisions.create(conn, checkfirst=True)
    s.holders.create(conn, checkfirst=True)


def _v6(conn: Connection) -> None:
    """``audit_log.count`` and ``audit_log.dedupe_key`` (unique): denied requests of one
    source and reason in one interval are one row with a count (smithers.gateway.app)."""
    columns = {c["name"] for c in inspect(conn).get_columns("audit_log")}
    for name in ("count", "dedupe_key"):
        if name not in columns:
            column = CreateColumn(s.audit_log.c[name]).compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE audit_log ADD COLUMN {column}"))
    if "ux_audit_dedupe" not in {i["name"] for i in inspect(conn).get_indexes("audit_log")}:
        next(i for i in s.audit_log.indexes if i.name == "ux_audit_dedupe").create(conn)


def _v7(conn: Connection) -> None:
    """``approvals.spec``, ``approvals.payload``, ``approvals.escalated_at``: what an approval
    declares for its approver, the decision's payload, the escalation event's time."""
    present = {c["name"] for c in inspect(conn).get_columns("approvals")}
    for name in ("spec", "payload", "escalated_at"):
        if name not in present:  # absent unless _v1 created the current tables
            column = CreateColumn(s.approvals.c[name]).compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE approvals ADD COLUMN {column}"))


def _v8(conn: Connection) -> None:
    """``attempts.cache_key`` and ``cache_entries.attempt_id``: the cache policy added them
    to the tables while the schema was still version 1, so a file created by the first
    release has version 1 without them (the scheduler then failed on every tick with
    "no column named cache_key"). Both are nullable: added here when absent."""
    for table, name in (("attempts", "cache_key"), ("cache_entries", "attempt_id")):
        if name not in {c["name"] for c in inspect(conn).get_columns(table)}:
            column = CreateColumn(s.metadata.tables[table].c[name]).compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column}"))


def _v10(conn: Connection) -> None:
    """``webhook_deliveries``: the ids of signed control-plane webhooks, remembered so a
    replay is refused on every gateway process (smithers.shared.store.webhooks)."""
    s.webhook_deliveries.create(conn, checkfirst=True)


def _v11(conn: Connection) -> None:
    """``events.feed_id`` nullable everywhere, as a new store has it: _v3 left it NOT NULL
    on SQLite files from before it (an upgraded file and a new one differed). SQLite
    cannot change a column's constraint, so the table is rebuilt: renamed, created
    anew with its indexes, copied, dropped. Nothing references ``events``."""
    if next(c for c in inspect(conn).get_columns("events") if c["name"] == "feed_id")["nullable"]:
        return  # PostgreSQL since _v3, and every store created since
    for index in inspect(conn).get_indexes("events"):
        if index["name"]:  # named ones move with the renamed table: free their names
            conn.execute(text(f"DROP INDEX {index['name']}"))
    conn.execute(text("ALTER TABLE events RENAME TO events_old"))
    s.events.create(conn)
    names = ", ".join(c.name for c in s.events.columns)
    conn.execute(text(f"INSERT INTO events ({names}) SELECT {names} FROM events_old"))  # noqa: S608
    conn.execute(text("DROP TABLE events_old"))


def _v12(conn: Connection) -> None:
    """``signals``: signals sent to runs, kept until a signal node takes them
    (smithers.shared.store.signals)."""
    s.signals.create(conn, checkfirst=True)


def _v13(conn: Connection) -> None:
    """``schedules``: each cron schedule's pause flag and latest tick dealt with
    (smithers.shared.store.schedules)."""
    s.schedules.create(conn, checkfirst=True)


def _v15(conn: Connection) -> None:
    """``runs.parent_node_id``, ``parent_iteration``, ``parent_epoch`` and the index
    ``ix_runs_parent``: a child run's link to the node execution that launched it
    (smithers.shared.store.children)."""
    present = {c["name"] for c in inspect(conn).get_columns("runs")}
    for name in ("parent_node_id", "parent_iteration", "parent_epoch"):
        if name not in present:  # absent unless _v1 created the current tables
            column = CreateColumn(s.runs.c[name]).compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE runs ADD COLUMN {column}"))
    if "ix_runs_parent" not in {i["name"] for i in inspect(conn).get_indexes("runs")}:
        next(i for i in s.runs.indexes if i.name == "ix_runs_parent").create(conn)


def _v17(conn: Connection) -> None:
    """Flow control (smithers.shared.store.flow): ``runs.priority`` and the
    ``flow_gates`` and ``flow_slots`` tables."""
    if "priority" not in {c["name"] for c in inspect(conn).get_columns("runs")}:
        column = CreateColumn(s.runs.c.priority).compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE runs ADD COLUMN {column}"))
    s.flow_gates.create(conn, checkfirst=True)
    s.flow_slots.create(conn, checkfirst=True)


def _v14(conn: Connection) -> None:
    """Budgets (smithers.shared.budget): ``runs.budget`` (the run's ceilings) and the
    ``spend`` table (what each attempt reported spending)."""
    if "budget" not in {c["name"] for c in inspect(conn).get_columns("runs")}:
        column = CreateColumn(s.runs.c.budget).compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE runs ADD COLUMN {column}"))
    s.spend.create(conn, checkfirst=True)


MIGRATIONS: dict[int, Migration] = {
    1: _v1,
    2: _v2,
    3: _v3,
    4: _v4,
    5: _v5,
    6: _v6,
    7: _v7,
    8: _v8,
    10: _v10,
    11: _v11,
    12: _v12,
    13: _v13,
    14: _v14,
    15: _v15,
    17: _v17,
}


def _refuse_unknown(conn: Connection, current: int) -> None:
    """Raise :class:`StoreUnavailable`, saying what to do, for a schema this release
    cannot bring up to date: one newer than it knows, or tables of ours with no
    ``schema_version`` (every release had it: not a database a release made)."""
    newest = max(MIGRATIONS)
    if current > newest:
        raise StoreUnavailable(
            f"the store's schema is version {current}, newer than this release of smithers knows"
            f" (up to {newest}): a newer release migrated it. Run that release (or a newer one)"
            " here; an older release must not write to it (restore a backup taken before the"
            " upgrade to go back)"
        )
    if current == 0:
        ours = sorted(set(inspect(conn).get_table_names()) & set(s.metadata.tables))
        if ours:
            raise StoreUnavailable(
                f"the store has smithers tables ({', '.join(ours[:5])}) but no schema_version"
                " table, so no release of smithers made it and it cannot be migrated: point"
                " SMITHERS_DATABASE_URL at an empty database, or restore a backup"
                " (smithers db restore)"
            )


def migrate(engine: Engine) -> int:
    """Bring the schema to the newest version; return that version. Atomic per call."""
    with engine.connect().execution_options(smithers_write=True) as conn, conn.begin():
        dialect_of(conn).migration_lock(conn)
        current = 0
        if inspect(conn).has_table("schema_version"):
            current = (
                conn.execute(
                    select(s.schema_version.c.version).order_by(s.schema_version.c.version.desc())
                ).scalar()
                or 0
            )
        _refuse_unknown(conn, current)
        for version in sorted(MIGRATIONS):
            if version > current:
                MIGRATIONS[version](conn)
                conn.execute(s.schema_version.insert().values(version=version, applied_at=time.time()))
                current = version
        return current
