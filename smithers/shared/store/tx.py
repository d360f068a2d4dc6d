"""A write transaction that also appends events (the transactional outbox).

Per-run ``seq`` is allocated from ``runs.next_seq`` under the run's row lock at the
end of the transaction. On SQLite the global ``feed_id`` comes from the ``counters``
row ``events`` in the same statement batch; the counter row lock is held until commit,
so feed ids are handed out in commit order: a reader that has seen feed id N has seen
every id below N. On PostgreSQL events are written without a feed id and numbered
after they commit (:mod:`smithers.shared.store.feed`), so writers do not queue on that row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Insert,
    Row,
    Table,
    Update,
    bindparam,
    select,
    update,
)

from smithers.shared.limits import SizeLimits, check_size
from smithers.shared.redaction import redact
from smithers.shared.store import schema as s
from smithers.shared.store.engine import Dialect

# Statements are built once: building a Core statement per call costs more than
# running it on SQLite (see docs/benchmarks.md).
RUN_BY_ID = select(s.runs).where(s.runs.c.run_id == bindparam("b_run_id"))
_HOLD_RUN = select(s.runs.c.run_id).where(s.runs.c.run_id == bindparam("b_run_id"))
_NEXT_FEED = (
    update(s.counters)
    .where(s.counters.c.name == "events")
    .values(value=s.counters.c.value + bindparam("b_n"))
    .returning(s.counters.c.value)
)
_INSERT_EVENTS = s.events.insert()


@lru_cache(maxsize=512)
def _update_statement(table: Table, keys: tuple[str, ...], where: tuple[str, ...]) -> Update:
    return (
        update(table)
        .where(*[table.c[w] == bindparam(f"w_{w}") for w in where])
        .values({k: bindparam(f"v_{k}") for k in keys})
    )


def _update_call(
    table: Table, where: dict[str, Any], values: dict[str, Any]
) -> tuple[Update, dict[str, Any]]:
    """The cached ``UPDATE`` for these columns and its parameters."""
    stmt = _update_statement(table, tuple(sorted(values)), tuple(sorted(where)))
    params = {f"v_{k}": v for k, v in values.items()}
    params.update({f"w_{k}": v for k, v in where.items()})
    return stmt, params


@lru_cache(maxsize=64)
def _next_seq_statement(keys: tuple[str, ...]) -> Update:
    """``UPDATE runs SET next_seq = next_seq + :b_n, <keys> ... RETURNING next_seq``."""
    r = s.runs
    values: dict[str, Any] = {k: bindparam(f"v_{k}") for k in keys}
    values["next_seq"] = r.c.next_seq + bindparam("b_n")
    return update(r).where(r.c.run_id == bindparam("b_run_id")).values(values).returning(r.c.next_seq)


@lru_cache(maxsize=64)
def _insert_statement(table: Table) -> Insert:
    return table.insert()


@lru_cache(maxsize=64)
def _upsert_statement(
    dialect: Dialect, table: Table, keys: tuple[str, ...], update: tuple[str, ...]
) -> Insert:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE SET update`` (SQLite and PostgreSQL alike)."""
    return dialect.upsert(table, keys, lambda excluded: {u: excluded[u] for u in update})


@dataclass
class _Pending:
    type: str
    node_id: str | None
    iteration: int | None
    attempt_id: str | None
    payload: dict[str, Any]
    seq: int | None  # given by the caller (a run row written with its next_seq), else allocated


@dataclass
class Tx:
    """One write transaction: the connection, the time, and the events to append."""

    conn: Connection
    dialect: Dialect
    now: float = field(default_factory=time.time)
    _events: dict[str, list[_Pending]] = field(default_factory=dict)
    _wake: set[str] = field(default_factory=set)
    _run_values: dict[str, dict[str, Any]] = field(default_factory=dict)
    woken: set[str] = field(default_factory=set)
    _before_commit: list[Callable[[], None]] = field(default_factory=list)
    _publish_key: int | None = None
    limits: SizeLimits = field(default_factory=SizeLimits)
    # each run's next_seq as this transaction's events left it (its version: kept.py)
    seq_written: dict[str, int] = field(default_factory=dict)
    decided_runs: set[str] = field(default_factory=set)  # the runs :meth:`decided` named

    def publish_lock(self) -> None:
        """PostgreSQL: take an advisory lock (on a random key) held until this
        transaction ends, so messages naming its rows can go out before it commits:
        see :meth:`publish_key`. Nothing on SQLite: no key there, and messages go out
        after the commit."""
        if self._publish_key is None:
            self._publish_key = self.dialect.publish_lock(self.conn)

    def publish_key(self) -> int | None:
        """The key of :meth:`publish_lock` (None without it). A worker handed it waits
        for the lock before it reads the attempt (:func:`smithers.shared.store.attempts.peek`),
        which is therefore what this transaction committed, or nothing if it rolled back."""
        return self._publish_key

    def before_commit(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` when the transaction's work is done and ``COMMIT`` is about to be
        sent: its row locks are still held (a reader that locks the same rows waits
        for the commit). Not called if the block raises."""
        self._before_commit.append(fn)

    def finish(self) -> None:
        """The end of the block, just before commit (the store calls it): :meth:`flush`,
        then the :meth:`before_commit` callbacks."""
        self.flush()
        callbacks, self._before_commit = self._before_commit, []
        for fn in callbacks:
            fn()

    def lock_run(self, run_id: str) -> Row[Any] | None:
        """Read the run row, locking it until commit (FOR UPDATE on PostgreSQL).

        On SQLite the whole database is already write-locked by BEGIN IMMEDIATE.
        """
        self._write_run_values(run_id)
        query = self.dialect.lock_run(RUN_BY_ID)
        row: Row[*tuple[Any, ...]] | None = self.conn.execute(query, {"b_run_id": run_id}).first()
        return row

    def hold_run(self, run_id: str) -> None:
        """Lock the run row until commit without reading it. PostgreSQL: ``FOR UPDATE``,
        so whatever is read next is read under the lock. SQLite: BEGIN IMMEDIATE
        already holds the database."""
        self._write_run_values(run_id)
        self.dialect.hold(self.conn, _HOLD_RUN, {"b_run_id": run_id})

    def execute(self, stmt: Any, params: dict[str, Any] | None = None) -> CursorResult[*tuple[Any, ...]]:
        """Run a (prebuilt) statement: ``Connection.execute``."""
        return self.conn.execute(stmt, params)

    def emit(
        self,
        run_id: str,
        type: str,
        *,
        node_id: str | None = None,
        iteration: int | None = None,
        attempt_id: str | None = None,
        payload: dict[str, Any] | None = None,
        seq: int | None = None,
    ) -> None:
        """Queue an event of ``run_id``; it is written with this transaction or not at all.

        ``seq``: the event's number, for a run row this transaction inserted with
        ``next_seq`` already counting it (a launch): nothing then updates the row unless
        events without one follow. Else the number is allocated from the run's
        ``next_seq`` when the events are written (after any given ones).
        """
        if payload:
            check_size(payload, self.limits.event_bytes, f"the payload of a {type} event")
        pending = self._events.setdefault(run_id, [])
        assert seq is None or not pending or pending[-1].seq is not None, "a given seq after an allocated one"
        pending.append(_Pending(type, node_id, iteration, attempt_id, redact(payload or {}), seq))

    def update(self, table: Table, where: dict[str, Any], values: dict[str, Any]) -> int:
        """``UPDATE table SET values WHERE col = value AND ...``; returns the row count.

        The statement is built once per shape and cached.
        """
        return int(self.conn.execute(*_update_call(table, where, values)).rowcount)

    def set(self, table: Table, where: dict[str, Any], values: dict[str, Any]) -> None:
        """:meth:`update` when the row count is not needed."""
        self.conn.execute(*_update_call(table, where, values))

    def set_run(self, run_id: str, values: dict[str, Any]) -> None:
        """Set columns of a run row this transaction holds (:meth:`lock_run`,
        :meth:`hold_run`). Written at the end, in the statement that also allocates
        the run's ``seq`` and writes its wake-up: one ``UPDATE`` of the row per
        transaction, not one per change. Until then a read of the row outside
        :meth:`lock_run` and :meth:`hold_run` (which write them first) sees it unchanged.
        """
        self._run_values.setdefault(run_id, {}).update(values)

    def _write_run_values(self, run_id: str) -> None:
        values = self._run_values.pop(run_id, None)
        if values:
            self.set(s.runs, {"run_id": run_id}, values)

    def insert(self, table: Table, values: dict[str, Any]) -> None:
        """``INSERT INTO table`` one row (statement cached per table)."""
        self.conn.execute(_insert_statement(table), values)

    def upsert(
        self,
        table: Table,
        keys: tuple[str, ...],
        values: dict[str, Any],
        update: tuple[str, ...] | None = None,
    ) -> None:
        """Insert one row, or update the row with the same ``keys``: its columns named
        in ``update``, by default every non-key value but ``created_at`` (which keeps
        the first insert's time)."""
        if update is None:
            update = tuple(k for k in values if k not in keys and k != "created_at")
        stmt = _upsert_statement(self.dialect, table, keys, tuple(sorted(update)))
        self.conn.execute(stmt, values)

    def add_to_counter(self, name: str, n: int) -> None:
        """Add ``n`` to the row ``name`` of ``counters`` (created at ``n``)."""
        stmt = self.dialect.upsert(
            s.counters, ("name",), lambda excluded: {"value": s.counters.c.value + excluded.value}
        )
        self.conn.execute(stmt, {"name": name, "value": n})

    def wake(self, run_id: str) -> None:
        """Mark the run as needing the scheduler now (also noted for a Redis wake-up).

        Written by :meth:`flush` with the run's ``next_seq``: one statement, not two.
        """
        self._wake.add(run_id)
        self.woken.add(run_id)

    def pending_events(self, run_id: str) -> int:
        """How many events of ``run_id`` this transaction has queued and not yet written."""
        return len(self._events.get(run_id, ()))

    def decided(self, run_id: str) -> None:
        """The run is decided in this transaction: its wake time is the decision's, so a
        wake-up noted earlier in it (by the change the decision follows) is withdrawn."""
        self._wake.discard(run_id)
        self.woken.discard(run_id)
        self.decided_runs.add(run_id)

    def audit(
        self,
        action: str,
        *,
        actor: str | None,
        target_type: str | None = None,
        target_id: str | None = None,
        run_id: str | None = None,
        detail: dict[str, Any] | None = None,
        dedupe_key: str | None = None,
    ) -> None:
        """Append an audit-log row (kept even when the run it names is deleted).

        ``dedupe_key``: a row with the same key already there counts one more instead
        (its ``count`` goes up; its other fields stay those of the first event)."""
        values = dict(
            at=self.now,
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            run_id=run_id,
            detail=redact(detail or {}),
            count=1,
            dedupe_key=dedupe_key,
        )
        if dedupe_key is None:
            self.conn.execute(s.audit_log.insert().values(values))
            return
        stmt = self.dialect.upsert(s.audit_log, ("dedupe_key",), lambda _: {"count": s.audit_log.c.count + 1})
        self.conn.execute(stmt, values)

    def flush(self) -> None:
        """Write run rows (:meth:`set_run`, wake-ups), allocate seq and feed ids and
        insert the queued events (called before commit)."""
        values, self._run_values = self._run_values, {}
        for run_id in self._wake:  # a wake-up wins over a wake time set in the same transaction
            values.setdefault(run_id, {})["wake_at"] = self.now
        self._wake = set()
        for run_id, v in values.items():
            if run_id not in self._events or self._events[run_id][-1].seq is not None:
                self.set(s.runs, {"run_id": run_id}, v)
        total = sum(len(v) for v in self._events.values())
        if not total:
            return
        seqs: dict[str, int] = {}
        for run_id, pending in self._events.items():
            n = sum(ev.seq is None for ev in pending)  # given ones (first) are counted already
            if not n:
                continue
            v = values.get(run_id, {})
            params = {f"v_{k}": x for k, x in v.items()}
            params.update(b_run_id=run_id, b_n=n)
            last: int = self.conn.execute(_next_seq_statement(tuple(sorted(v))), params).scalar_one()
            seqs[run_id] = int(last) - n
            self.seq_written[run_id] = int(last)
        feed: int | None = None  # PostgreSQL: numbered after commit (smithers.shared.store.feed)
        if self.dialect.numbers_feed_on_write:
            feed = int(self.conn.execute(_NEXT_FEED, {"b_n": total}).scalar_one()) - total
        rows = []
        for run_id, pending in self._events.items():
            for ev in pending:
                if ev.seq is None:
                    seqs[run_id] += 1
                if feed is not None:
                    feed += 1
                rows.append(
                    {
                        "run_id": run_id,
                        "seq": ev.seq if ev.seq is not None else seqs[run_id],
                        "feed_id": feed,
                        "type": ev.type,
                        "node_id": ev.node_id,
                        "iteration": ev.iteration,
                        "attempt_id": ev.attempt_id,
                        "payload": ev.payload,
                        "created_at": self.now,
                    }
                )
        self.conn.execute(_INSERT_EVENTS, rows)
        self._events.clear()
