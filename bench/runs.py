"""Throughput of one kind of run alone: a quicker probe than bench/engine.py.

    .venv/bin/python bench/runs.py [--runs 1000] [--workflow b-one] [--database-url URL]

Starts a private Redis, a scheduler and a step worker (``--concurrency 2``) like
bench/engine.py, warms them up, launches ``--runs`` runs of ``--workflow`` (from
bench/workflows.py: ``b-one``, ``b-seq40``, ``b-wide``) and prints the wall time, steps/s
(runs/s for ``b-one``) and the CPU each process used. No yardstick: use it to compare
two versions of the code in alternating runs on the same machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import cpu_line, cpu_now, private_engine, wait_runs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--workflow", default="b-one")
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temp dir")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    with private_engine(args.database_url, args.concurrency, "smithers-bench-") as engine:
        launch, procs = engine.launch, engine.procs
        wait_runs(engine.store, [launch("b-one") for _ in range(20)], 60)  # warm-up
        before = cpu_now(procs)
        t0 = time.time()
        ids = [launch(args.workflow) for _ in range(args.runs)]
        t1 = wait_runs(engine.store, ids, 600)
        steps = args.runs * len(engine.registry.get(args.workflow).workflow.nodes)
        print(f"{args.runs} x {args.workflow}: {t1 - t0:.2f}s, {steps / (t1 - t0):.0f} steps/s", flush=True)
        print(cpu_line("cpu", procs, before), flush=True)


if __name__ == "__main__":
    main()
