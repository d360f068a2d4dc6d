"""The worker's holder heartbeat: the main worker process announces, every
``SMITHERS_HOLDER_HEARTBEAT`` seconds, the workflow revisions it holds (its steps'
queues carry them: smithers.shared.keys.revision_queue), and withdraws them at shutdown."""

from __future__ import annotations

import logging
import threading
import time

from smithers.shared.errors import SmithersError
from smithers.shared.store import revisions
from smithers.workers.step import WorkerEnv

log = logging.getLogger("smithers.worker")


class Holders:
    """One announcing thread per worker process (started when Celery reports it ready)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, env: WorkerEnv) -> None:
        """Announce now, then keep announcing from a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        started_at = time.time()
        self.announce(env, started_at)
        self._thread = threading.Thread(
            target=self._loop, args=(env, started_at), name="smithers-holder", daemon=True
        )
        self._thread.start()

    def announce(self, env: WorkerEnv, started_at: float) -> None:
        """Refresh this worker's holder rows (one transaction); a store outage is logged.

        An earlier worker of the same id that died without leaving may have taken step
        messages with it (delivered, not yet started: Redis gives them back only after
        the visibility timeout): the broker's epoch is dropped, so a scheduler sends every
        queued step again at its next sweep (docs/architecture.md, "Lost messages")."""
        entries = [env.registry.get(name) for name in env.registry.names()]
        try:
            with env.store.write() as tx:
                restarted = revisions.hold(tx, env.worker_id, "worker", entries, started_at)
        except SmithersError as exc:
            log.warning("could not announce held revisions: %s", exc.message)
            return
        if restarted:
            log.warning("worker %s died before this start: its step messages are sent again", env.worker_id)
            env.broker.forget_epoch()

    def _loop(self, env: WorkerEnv, started_at: float) -> None:
        while not self._stop.wait(env.config.holder_heartbeat_s):
            self.announce(env, started_at)

    def stop(self, env: WorkerEnv) -> None:
        """Stop announcing and withdraw this worker's rows (its revisions' other holders
        take over; with none left, the runs show ``revision_unavailable``)."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread = None
        try:
            with env.store.write() as tx:
                revisions.leave(tx, env.worker_id)
        except SmithersError as exc:
            log.warning("could not withdraw held revisions: %s", exc.message)


HOLDERS = Holders()
