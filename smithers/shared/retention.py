"""Retention: finished runs older than the configured age are deleted, with everything
they own, through the same path as an admin's ``DELETE /v1/runs/<id>``.

Runs are picked in small batches by a read, then deleted one transaction per run, each
re-checking under the run's lock that the run is still terminal and old enough: a run
that was reopened (rerun, rewind, resume) since it was picked is left alone, and no
transaction holds the write lock for more than one run. A run that is not terminal is
never deleted. The audit entry of each deletion stays; the rows removed are counted in
the ``counters`` table (``pruned_runs``, ``pruned_rows``) for the metrics.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Float, func, select

from smithers.shared.errors import NotFound
from smithers.shared.status import RunStatus
from smithers.shared.store import Store
from smithers.shared.store import runs as runs_store
from smithers.shared.store import schema as s

log = logging.getLogger("smithers.retention")

BATCH = 50  # runs read per batch; each is deleted in a transaction of its own
DAY_S = 86400
PRUNED_RUNS = "pruned_runs"
PRUNED_ROWS = "pruned_rows"
_TERMINAL = (RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value)


@dataclass(frozen=True)
class Pruned:
    """What a prune removed (or, dry, would remove)."""

    runs: int
    rows: int
    run_ids: tuple[str, ...]


def candidates(
    store: Store, cutoff: float, limit: int, after: tuple[float, str] | None = None
) -> list[tuple[float, str]]:
    """(finished time, run id) of terminal runs that finished before ``cutoff``, oldest first."""
    r = s.runs
    finished = func.coalesce(r.c.finished_at, r.c.updated_at, type_=Float)
    query = select(finished, r.c.run_id).where(r.c.status.in_(_TERMINAL), finished < cutoff)
    if after is not None:
        query = query.where((finished > after[0]) | ((finished == after[0]) & (r.c.run_id > after[1])))
    query = query.order_by(finished, r.c.run_id).limit(limit)
    with store.read() as conn:
        found: list[Any] = list(conn.execute(query))
    return [(float(row[0]), str(row[1])) for row in found]


def remove_bundles(paths: Iterable[str]) -> None:
    """Remove sandbox bundle directories (never following a link), then their run's
    directory if that is left empty."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when empty


def prune(
    store: Store,
    older_than_s: float,
    *,
    now: float | None = None,
    dry_run: bool = False,
    batch: int = BATCH,
    actor: str = "retention",
    stop: Callable[[], bool] = lambda: False,
) -> Pruned:
    """Delete (or with ``dry_run`` only list) the terminal runs that finished more than
    ``older_than_s`` ago."""
    cutoff = (time.time() if now is None else now) - older_than_s
    runs = rows = 0
    ids: list[str] = []
    after: tuple[float, str] | None = None
    while not stop():
        found = candidates(store, cutoff, batch, after)
        if not found:
            break
        after = found[-1]
        for _, run_id in found:
            if dry_run:
                ids.append(run_id)
                continue
            if stop():
                break
            try:
                with store.write() as tx:
                    deleted = runs_store.delete_run(tx, run_id, actor, finished_before=cutoff)
                    if deleted is not None:
                        tx.add_to_counter(PRUNED_RUNS, 1)
                        tx.add_to_counter(PRUNED_ROWS, deleted.rows)
            except NotFound:  # deleted meanwhile (an admin, another scheduler)
                continue
            if deleted is None:
                continue
            remove_bundles(deleted.bundle_paths)
            runs += 1
            rows += deleted.rows
            ids.append(run_id)
    if dry_run:
        runs = len(ids)
    elif runs:
        log.info("retention: deleted %d run(s) (%d rows) finished before %.0f", runs, rows, cutoff)
    return Pruned(runs, rows, tuple(ids))


def pruned_totals(store: Store) -> dict[str, int]:
    """The counters of what retention has deleted so far."""
    c = s.counters
    with store.read() as conn:
        rows = conn.execute(select(c.c.name, c.c.value).where(c.c.name.in_((PRUNED_RUNS, PRUNED_ROWS))))
        found: dict[str, int] = {str(row[0]): int(row[1]) for row in list[Any](rows)}
    return {PRUNED_RUNS: found.get(PRUNED_RUNS, 0), PRUNED_ROWS: found.get(PRUNED_ROWS, 0)}
