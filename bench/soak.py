"""Back-to-back one-step runs in windows: memory, CPU per run and runs/s over time.

    .venv/bin/python bench/soak.py [--runs 40000] [--window 5000] [--database-url URL]
                                   [--concurrency 2] [--scheduler-decides]

Starts a private Redis, a scheduler and a step worker like bench/engine.py, warms them
up, then launches ``--runs`` one-step runs (``b-one``) one after another from this
process, ``--window`` at a time: each window's runs are launched, then waited for, and
the next window starts. For each window it prints runs/s, the CPU per run of each
process (scheduler, worker: its Celery parent and prefork children, launcher: this
process, Redis and, on PostgreSQL, every ``postgres`` process) and in total, and the
resident memory (RSS) of each process at the window's end. ``--scheduler-decides``
leaves every decision to the scheduler (SMITHERS_DECIDE_MAX_NODES=0), the division of
labour whose pacing map once grew with the runs decided. The yardstick is the first
window, measured in the same run, and, after each window, the wall time a fixed
pure-Python loop takes in this process (``python loop``: on a shared machine it tells a slower
machine from a slower engine); the last line is machine-readable: the first and last
windows' runs/s, total CPU per run (ms) and RSS (MB) of each process, and the last
over the first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import Engine, private_engine, wait_runs  # noqa: E402

LABELS = {
    "scheduler": "scheduler",
    "worker": "worker",
    "bench": "launcher",
    "redis": "redis",
    "postgres": "postgres",
}


def rss_mb(pid: int) -> float:
    """Resident memory of one process (MB), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def group_pids(pgid: int) -> list[int]:
    """The live processes of a process group, the leader first."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            found.append(int(stat.parent.name))
    return sorted(found, key=lambda pid: (pid != pgid, pid))


def memory(procs: dict[str, subprocess.Popen[bytes]], redis_pid: int | None) -> dict[str, float]:
    """RSS (MB) of each process: the scheduler, the worker's parent and each of its
    children (``worker.1``, ...), the launcher and the Redis server."""
    found: dict[str, float] = {}
    for name, proc in procs.items():
        for i, pid in enumerate(group_pids(proc.pid)):
            found[name if i == 0 else f"{name}.{i}"] = rss_mb(pid)
    found["launcher"] = rss_mb(os.getpid())
    if redis_pid is not None:
        found["redis"] = rss_mb(redis_pid)
    return found


def yardstick_ms() -> float:
    """Wall time (ms) of a fixed pure-Python loop in this process: how fast the shared
    machine runs Python just now (its cores are shared with other jobs), so a slower
    window can be told from a slower engine."""
    t0 = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i
    return (time.perf_counter() - t0) * 1000


def window(engine: Engine, n: int, postgres: bool) -> tuple[float, dict[str, float]]:
    """Launch ``n`` one-step runs one after another and wait for them: (runs/s, ms of
    CPU per run by process and ``total``)."""
    before = engine.cpu()
    t0 = time.time()
    ids = [engine.launch("b-one") for _ in range(n)]
    t1 = wait_runs(engine.store, ids, 3600)
    after = engine.cpu()
    per_run = {
        label: (after[key] - before[key]) * 1000 / n
        for key, label in LABELS.items()
        if key != "postgres" or postgres
    }
    per_run["total"] = sum(per_run.values())
    return n / (t1 - t0), per_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40_000)
    parser.add_argument("--window", type=int, default=5_000)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temp dir")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--scheduler-decides", action="store_true", help="SMITHERS_DECIDE_MAX_NODES=0")
    args = parser.parse_args()
    if args.window < 1 or args.runs < args.window:
        parser.error("--window must be at least 1 and at most --runs")
    postgres = (args.database_url or "").startswith("postgresql")
    max_nodes = 0 if args.scheduler_decides else 500
    rows: list[tuple[float, dict[str, float], dict[str, float], float]] = []
    with private_engine(args.database_url, args.concurrency, "smithers-bench-soak-", max_nodes) as engine:
        redis_pid = _redis_pid(engine)
        wait_runs(engine.store, [engine.launch("b-one") for _ in range(20)], 60)  # warm-up
        print("window | runs done | runs/s | cpu per run (ms) | RSS (MB) | python loop (ms)", flush=True)
        for w in range(args.runs // args.window):
            rate, per_run = window(engine, args.window, postgres)
            mem = memory(engine.procs, redis_pid)
            loop_ms = yardstick_ms()  # after the window's CPU was read: not in it
            rows.append((rate, per_run, mem, loop_ms))
            print(
                f"{w + 1} | {(w + 1) * args.window} | {rate:.0f} | "
                + " ".join(f"{k} {v:.3f}" for k, v in per_run.items())
                + " | "
                + " ".join(f"{k} {v:.1f}" for k, v in mem.items())
                + f" | {loop_ms:.0f}",
                flush=True,
            )
    (rate0, cpu0, mem0, loop0), (rate1, cpu1, mem1, loop1) = rows[0], rows[-1]
    fields = [f"runs_per_s_first={rate0:.0f}", f"runs_per_s_last={rate1:.0f}"]
    fields += [f"cpu_ms_first={cpu0['total']:.3f}", f"cpu_ms_last={cpu1['total']:.3f}"]
    fields += [
        f"scheduler_cpu_ms_first={cpu0['scheduler']:.3f}",
        f"scheduler_cpu_ms_last={cpu1['scheduler']:.3f}",
    ]
    fields += [f"rss_mb_{k}_first={mem0[k]:.1f} rss_mb_{k}_last={mem1.get(k, 0.0):.1f}" for k in mem0]
    fields += [
        f"runs_per_s_last_vs_first={rate1 / rate0:.2f}",
        f"cpu_last_vs_first={cpu1['total'] / cpu0['total']:.2f}",
    ]
    fields += [f"python_loop_ms_first={loop0:.0f} python_loop_ms_last={loop1:.0f}"]
    print(" ".join(fields))


def _redis_pid(engine: Engine) -> int:
    """The Redis server's pid (it says)."""
    return int(engine.broker.redis.info("server")["process_id"])  # type: ignore[index]


if __name__ == "__main__":
    main()
