"""Hop latency alone: a quicker probe than bench/engine.py's part (a).

    .venv/bin/python bench/hop.py [--chains 3] [--database-url URL]

Starts a private Redis, a scheduler and a step worker like bench/engine.py, runs
``--chains`` 40-step chains of 10 ms steps one after another and prints the hop p50
and p99 over all their hops (the end of step N's body to the start of step N+1's)
and the chains' median wall, then the CPU each process used over the chains and the
worker's per step. No yardstick: use it to compare two versions of the
code in alternating runs on the same machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import chain_hops, cpu_line, cpu_now, pct, private_engine, wait_runs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temp dir")
    args = parser.parse_args()
    with private_engine(args.database_url, 2, "smithers-hop-") as engine:
        wait_runs(engine.store, [engine.launch("b-one") for _ in range(5)], 60)  # warm-up
        hops: list[float] = []
        walls: list[float] = []
        before = cpu_now(engine.procs)
        for _ in range(args.chains):
            run_id = engine.launch("b-seq40")
            wait_runs(engine.store, [run_id], 120)
            found, wall = chain_hops(engine.store, run_id)
            hops += found
            walls.append(wall)
        cpu = cpu_line("cpu", engine.procs, before)
        steps = 40 * args.chains
        worker = cpu_now(engine.procs)["worker"] - before["worker"]
    print(
        f"hop p50 {pct(hops, 50):.2f} ms p99 {pct(hops, 99):.2f} ms; chain wall p50 {pct(walls, 50):.3f} s "
        f"({len(hops)} hops)",
        flush=True,
    )
    print(f"{cpu}; worker {worker / steps * 1000:.2f} ms of CPU per step", flush=True)


if __name__ == "__main__":
    main()
