"""The feed across all runs on PostgreSQL: events are numbered after they commit.

SQLite serializes every writer anyway, so there a transaction takes its feed ids from
the ``counters`` row ``events`` as it writes its events (:meth:`Tx.flush`). On
PostgreSQL that row lock, held through each commit's WAL flush, would serialize every
event-writing transaction in the cluster (measured: docs/benchmarks.md). There, events
are written with ``feed_id`` NULL and :func:`number_feed` numbers the committed ones
later, one numbering transaction at a time (an advisory lock), from the same counter:

- a numbering sees only committed events, and its ids are all above those of the
  numbering before it, which committed first; so a reader that has seen feed id N has
  seen every id below N (ids of deleted runs aside), as on SQLite;
- a run's events are committed in ``seq`` order (its row lock), so its unnumbered
  events are the newest ones, and they are numbered in ``seq`` order; across runs,
  by the time they were written.

The gateway's event poller numbers before each read (a stream's replay reads what is
numbered and the poller hands it the rest), and the scheduler's sweep does so too, so
the backlog stays small when no one follows the feed. A process not yet upgraded still
takes ids from the counter row; the numbering increments the same row, so the two
never hand out an id twice.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, bindparam, func, select, text

from smithers.shared.store.store import Store
from smithers.shared.store.tx import Tx

# pg_advisory_xact_lock key of the numbering transaction (an arbitrary constant).
FEED_LOCK_ID = 0x5F33D_F33D
BATCH = 5000  # events numbered per transaction at most

_LOCK = select(func.pg_advisory_xact_lock(bindparam("b_key", type_=BigInteger)))
_NUMBER = text("""WITH q AS (
    SELECT run_id, seq, row_number() OVER (ORDER BY at, run_id, seq) AS rn
    FROM (
        SELECT run_id, seq, max(created_at) OVER (PARTITION BY run_id ORDER BY seq) AS at
        FROM events WHERE feed_id IS NULL
    ) AS u
    ORDER BY at, run_id, seq
    LIMIT :b_limit
), n AS (
    SELECT count(*) AS c FROM q
), f AS (
    UPDATE counters SET value = value + n.c FROM n
    WHERE counters.name = 'events' AND n.c > 0
    RETURNING counters.value - n.c AS base
)
UPDATE events SET feed_id = f.base + q.rn FROM q, f
WHERE events.run_id = q.run_id AND events.seq = q.seq""")


def number_feed(tx: Tx, limit: int = BATCH) -> None:
    """Give up to ``limit`` committed, unnumbered events their feed ids, in ``tx``
    (PostgreSQL; nothing to do on SQLite). A run's events take increasing ids in
    ``seq`` order (``created_at`` can go back within a run: it is taken when a
    transaction starts, before the run's lock); the ordering key is therefore the
    latest ``created_at`` so far in the run."""
    if not tx.postgres:
        return
    tx.execute(_LOCK, {"b_key": FEED_LOCK_ID})
    tx.execute(_NUMBER, {"b_limit": limit})


def number_now(store: Store, limit: int = BATCH) -> None:
    """:func:`number_feed` in a transaction of its own (before reading the feed)."""
    if store.postgres:
        with store.write() as tx:
            number_feed(tx, limit)
