"""CPU per one-step run, phase by phase, in one process: no Celery, no contention.

    .venv/bin/python bench/phases.py [--runs 600] [--batch 4] [--rounds 3] [--database-url URL]

Launches ``--runs`` runs of ``b-one`` (bench/workflows.py), decides them ``--batch`` to
a transaction as the scheduler does (``Scheduler.process_many``: each step's attempt
dispatched), runs every attempt as a worker would (``run_attempt``: peek, step, commit,
wake-up), then decides them again (each run closed). Prints the CPU milliseconds per
run of each phase: this process's, and on PostgreSQL the server's (every ``postgres``
process on this host). Step messages are collected, not sent; wake-ups go to a
private Redis. Against bench/runs.py (the same runs through the real processes) it
shows how much of the engine's cost is the work itself and how much is the processes
sharing two cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import cpu_now, launch_run, start_redis, wait_runs  # noqa: E402
from smithers.scheduler.loop import Scheduler  # noqa: E402
from smithers.shared.broker import Broker  # noqa: E402
from smithers.shared.config import SchedulerConfig, WorkerConfig  # noqa: E402
from smithers.shared.registry import load_registry  # noqa: E402
from smithers.shared.store import Store  # noqa: E402
from smithers.workers.step import WorkerEnv, run_attempt  # noqa: E402


class CollectingBroker(Broker):
    """Keeps the attempt ids of step messages instead of sending them."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(redis_url)
        self.sent: list[str] = []

    def send_steps(self, steps: Iterable[tuple[str, str, float | None]], after: int | None = None) -> None:
        self.sent.extend(attempt_id for attempt_id, _, _ in steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument("--batch", type=int, default=4, help="runs decided per transaction")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temp dir")
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='smithers-phases-')}/bench.db"
    server, redis_url = start_redis()
    store = Store(url)
    broker = CollectingBroker(redis_url)
    try:
        store.migrate()
        registry = load_registry("bench.workflows", str(ROOT))
        scheduler = Scheduler(store, broker, registry, SchedulerConfig())
        env = WorkerEnv(store, broker, registry, WorkerConfig(), "bench:1")
        postgres = url.startswith("postgresql")

        def cpu() -> tuple[float, float]:  # this process, the server
            now = cpu_now({})
            return now["bench"], now["postgres"] if postgres else 0.0

        def decide_all(ids: list[str]) -> None:
            # process_many decides every run now: pacing applies only to wake-ups
            for i in range(0, len(ids), args.batch):
                scheduler.process_many(ids[i : i + args.batch])

        def one_round(n: int) -> dict[str, tuple[float, float]]:
            phases: dict[str, tuple[float, float]] = {}
            mark = cpu()

            def lap(name: str) -> None:
                nonlocal mark
                now = cpu()
                phases[name] = (now[0] - mark[0], now[1] - mark[1])
                mark = now

            ids = [launch_run(store, broker, registry, "b-one") for _ in range(n)]
            lap("launch")
            decide_all(ids)
            lap("dispatch")
            attempts, broker.sent = broker.sent, []
            for attempt_id in attempts:
                run_attempt(env, attempt_id, None)
            lap("attempt")
            decide_all(ids)
            lap("close")
            wait_runs(store, ids, 10)  # each one succeeded
            return phases

        one_round(50)  # warm-up: statements compiled, connections open
        for _ in range(args.rounds):
            phases = one_round(args.runs)
            per_run = {k: (a / args.runs * 1000, b / args.runs * 1000) for k, (a, b) in phases.items()}
            line = " ".join(f"{k} {a:.3f}/{b:.3f}" for k, (a, b) in per_run.items())
            total = [sum(v[i] for v in per_run.values()) for i in (0, 1)]
            print(
                f"ms per run (this process/server): {line} | total {total[0]:.3f}/{total[1]:.3f}", flush=True
            )
    finally:
        broker.close()
        store.close()
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
