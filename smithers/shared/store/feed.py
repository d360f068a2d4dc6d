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

from smithers.shared.store.store import Store
from smithers.shared.store.tx import Tx

BATCH = 5000  # events numbered per transaction at most


def number_feed(tx: Tx, limit: int = BATCH) -> None:
    """Give up to ``limit`` committed, unnumbered events their feed ids, in ``tx``
    (PostgreSQL; nothing to do on SQLite). A run's events take increasing ids in
    ``seq`` order (``created_at`` can go back within a run: it is taken when a
    transaction starts, before the run's lock); the ordering key is therefore the
    latest ``created_at`` so far in the run."""
    tx.dialect.number_feed(tx.conn, limit)


def number_now(store: Store, limit: int = BATCH) -> None:
    """:func:`number_feed` in a transaction of its own (before reading the feed)."""
    if not store.dialect.numbers_feed_on_write:
        with store.write() as tx:
            number_feed(tx, limit)
