"""Fan-out and fan-in at several widths: CPU per completed step, per process and in total.

    .venv/bin/python bench/fanout.py [--widths 100,500,2000,10000] [--min-steps 2000]
                                     [--database-url URL] [--concurrency 2]
                                     [--decide-max-nodes 500]

Starts a private Redis, a scheduler and a step worker like bench/engine.py, warms them
up, then for each width runs ``b-wide<width>`` (a first step,
``width`` one-step leaves, a fan-in; bench/wide.py) one run after another until at least
``--min-steps`` steps have completed, and prints the wall time, steps/s and the CPU
per completed step of each process: the scheduler, the worker (its Celery parent and
prefork children), the launcher (this process: its launches and its polls of the
store), Redis and, on PostgreSQL, the server's backends connected to the bench's
database. The sum of those is ``total``; ``postgres_host`` (every ``postgres`` process on
the host, other databases' and the shared background processes too) is printed apart. A run wider than ``SMITHERS_DECIDE_MAX_NODES`` (500 by default) is decided
by the scheduler in batches, a narrower one by its writers, so only the total
compares the widths. The yardstick is the first width, measured in the same run; the
last line is machine-readable: ``cpu_ms_<width>=`` the total CPU per step, and
``worst_vs_first=`` the largest of those over the first width's.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import Engine, private_engine, wait_runs  # noqa: E402

WORKFLOWS = "bench.workflows,bench.wide"
PROCESSES = {"scheduler": "scheduler", "worker": "worker", "bench": "launcher", "redis": "redis"}


def one_width(engine: Engine, width: int, min_steps: int, postgres: bool) -> dict[str, float]:
    """Run ``b-wide<width>`` until ``min_steps`` steps completed: ms of CPU per step by
    process, ``total`` and ``steps_per_s``."""
    steps_per_run = width + 2
    runs = max(1, math.ceil(min_steps / steps_per_run))
    before = engine.cpu()
    t0 = time.time()
    for _ in range(runs):
        wait_runs(engine.store, [engine.launch(f"b-wide{width}")], 3600)
    wall = time.time() - t0
    after = engine.cpu()
    steps = runs * steps_per_run
    names = {**PROCESSES, **({"postgres_db": "postgres"} if postgres else {})}
    per_step = {label: (after[key] - before[key]) * 1000 / steps for key, label in names.items()}
    per_step["total"] = sum(per_step.values())
    if postgres:  # every server process on the host, other databases' work too: not in the total
        per_step["postgres_host"] = (after["postgres"] - before["postgres"]) * 1000 / steps
    print(
        f"width {width}: {runs} run(s), {steps} steps in {wall:.2f}s ({steps / wall:.0f} steps/s); "
        "cpu per step: " + ", ".join(f"{k} {v:.3f} ms" for k, v in per_step.items()),
        flush=True,
    )
    return per_step | {"steps_per_s": steps / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="100,500,2000,10000", help="from 100, 500, 2000, 10000")
    parser.add_argument("--min-steps", type=int, default=2000, help="steps measured at each width")
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temp dir")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--decide-max-nodes",
        type=int,
        default=500,
        help="SMITHERS_DECIDE_MAX_NODES (0: the scheduler decides all)",
    )
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",") if w.strip()]
    unknown = [w for w in widths if w not in (100, 500, 2000, 10000)]
    if not widths or unknown:
        parser.error(f"widths must be among 100, 500, 2000, 10000 (bench/wide.py); got {args.widths}")
    postgres = (args.database_url or "").startswith("postgresql")
    with private_engine(
        args.database_url, args.concurrency, "smithers-bench-fanout-", args.decide_max_nodes, WORKFLOWS
    ) as engine:
        wait_runs(engine.store, [engine.launch("b-one") for _ in range(20)], 60)  # warm-up
        wait_runs(engine.store, [engine.launch("b-wide100")], 120)
        results = {w: one_width(engine, w, args.min_steps, postgres) for w in widths}
    first = results[widths[0]]["total"]
    fields = [f"cpu_ms_{w}={r['total']:.3f}" for w, r in results.items()]
    fields += [f"steps_per_s_{w}={r['steps_per_s']:.0f}" for w, r in results.items()]
    worst = max(r["total"] for r in results.values()) / first
    print(" ".join(fields) + f" worst_vs_first={worst:.2f}")


if __name__ == "__main__":
    main()
