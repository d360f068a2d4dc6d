"""Hop latency alone: a quicker probe than bench/engine.py's part (a).

    .venv/bin/python bench/hop.py [--chains 3] [--database-url URL]

Starts a private Redis, a scheduler and a step worker like bench/engine.py, runs
``--chains`` 40-step chains of 10 ms steps one after another and prints the hop p50
over all their hops (step N committed to step N+1 started, from the attempts table)
with its two parts: step N committed to the decision's transaction begun (the next
attempt's ``dispatched_at``), and from there to step N+1 started. No yardstick: use it
to compare two versions of the code in alternating runs on the same machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import Engine, pct, start_redis, wait_runs  # noqa: E402
from shared.store.queries import attempts_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temp dir")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="smithers-hop-"))
    url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    server, redis_url = start_redis()
    engine = Engine(url, redis_url, workdir, 2)
    try:
        wait_runs(engine.store, [engine.launch("b-one") for _ in range(5)], 60)  # warm-up
        hops: list[float] = []
        to_decision: list[float] = []
        to_start: list[float] = []
        for _ in range(args.chains):
            run_id = engine.launch("b-seq40")
            wait_runs(engine.store, [run_id], 120)
            with engine.store.read() as conn:
                attempts = {a.node_id: a for a in attempts_of(conn, run_id)}
            for i in range(39):
                done, nxt = attempts[f"s{i:02d}"], attempts[f"s{i + 1:02d}"]
                assert done.finished_at is not None and nxt.started_at is not None
                hops.append((nxt.started_at - done.finished_at) * 1000)
                to_decision.append((nxt.dispatched_at - done.finished_at) * 1000)
                to_start.append((nxt.started_at - nxt.dispatched_at) * 1000)
        print(
            f"hop p50 {pct(hops, 50):.2f} ms p99 {pct(hops, 99):.2f} ms; committed -> decision "
            f"{pct(to_decision, 50):.2f} ms, decision -> started {pct(to_start, 50):.2f} ms ({len(hops)} hops)",
            flush=True,
        )
    finally:
        engine.close()
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
