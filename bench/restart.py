"""Restart benchmark: seconds from spawning ``smithers gateway`` to its first 200 on /healthz.

    .venv/bin/python bench/restart.py [--starts 10] [--store sqlite,postgres]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/smithers_restart_bench]
        [--worker-class gevent|gthread] [--workers 2] [--importtime] [--worker-pools prefork,gevent]

Whole-process figures: each start spawns the console script (``.venv/bin/smithers gateway``,
what an operator or a supervisor runs) on a free loopback port, polls ``GET /healthz``
every 10 ms until it answers 200, reads the CPU its process group had used by then
(from /proc: steadier than seconds on a shared machine), then stops it (SIGINT to its
process group, gunicorn's quick shutdown) and waits before the next start. The store is
a SQLite file, or a PostgreSQL database this script creates and drops; the schema is
migrated before the first start, so every start meets an existing store, as a restart
does. A private Redis on a free port serves as the broker.

Yardsticks, in the same run and measured the same way: ``python -m http.server`` (an
interpreter that serves HTTP and imports nothing else: the floor of any Python gateway)
and gunicorn serving a one-line WSGI app with the same worker class and worker count
(the floor of this server design).

``--importtime`` also runs one start with ``PYTHONPROFILEIMPORTTIME=1`` (``-X importtime``
that an exec'd interpreter inherits) and prints where the import time goes: self time
per top-level package over the whole process tree, the interpreters started, and how
many modules more than one process imported (a second interpreter, or gunicorn
workers importing what their master did not).

``--root DIR`` runs another checkout's code (``git archive COMMIT | tar -x -C DIR``) with this
environment, to compare two commits in one run.

``--worker-pools prefork,gevent`` also times ``smithers worker --pool P`` (SQLite store,
concurrency 2) from spawn to Celery's "ready" log line.

The last line is machine-readable JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SECRET = "bench-restart-signing-key-" + "r" * 40
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")
TRIVIAL_APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"status": "ok"}']
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)  # gunicorn's quick shutdown; KeyboardInterrupt elsewhere
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def group_cpu_s(pgid: int) -> float:
    """User + system CPU of every live process in process group ``pgid`` (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # fields from the state on: pgrp is the third
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def time_to_healthy(
    argv: list[str], env: dict[str, str], port: int, path: str = "/healthz", log: Path | None = None
) -> tuple[float, float]:
    """Spawn ``argv``: the seconds until ``path`` on ``port`` answered 200, and the CPU
    seconds its processes had used by then."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    began = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        while time.perf_counter() - began < 60:
            if proc.poll() is not None:
                raise SystemExit(f"{argv[:4]} exited with {proc.returncode} before answering (log {log})")
            if healthy(port, path):
                return time.perf_counter() - began, group_cpu_s(proc.pid)
            time.sleep(0.01)
        raise SystemExit(f"{argv[:4]} did not answer within 60 s (log {log})")
    finally:
        stop(proc)
        if log:
            out.close()  # type: ignore[union-attr]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def redis_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    binary = shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.02)
    raise SystemExit("redis-server did not start")


def psql(url: str, sql: str) -> None:
    from sqlalchemy import create_engine, text  # noqa: PLC0415
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    admin = make_url(url).set(database="postgres")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


def prepare_store(kind: str, args: argparse.Namespace, workdir: Path) -> tuple[str, Callable[[], None]]:
    """The store's URL, migrated, and what drops it afterwards."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    from smithers.shared.store import Store  # noqa: PLC0415

    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'smithers.db'}"

        def drop() -> None:
            pass

    else:
        url = args.postgres_url
        name = make_url(url).database
        psql(url, f'DROP DATABASE IF EXISTS "{name}"')
        psql(url, f'CREATE DATABASE "{name}"')

        def drop() -> None:
            psql(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    store = Store(url)
    store.migrate()
    store.close()
    return url, drop


def bench_store(kind: str, args: argparse.Namespace, workdir: Path, redis_url: str) -> dict[str, Any]:
    url, drop = prepare_store(kind, args, workdir)
    env = {
        **os.environ,
        "SMITHERS_DATABASE_URL": url,
        "SMITHERS_REDIS_URL": redis_url,
        "SMITHERS_JWT_SECRET": SECRET,
        "SMITHERS_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(args.root),
    }
    smithers = str(Path(sys.executable).with_name("smithers"))
    options = ["--host", "127.0.0.1", "--workers", str(args.workers), "--worker-class", args.worker_class]
    times: list[float] = []
    cpu: list[float] = []
    log = workdir / f"gateway-{kind}.log"
    try:
        for _ in range(args.starts):
            port = free_port()
            wall, used = time_to_healthy(
                [smithers, "gateway", *options, "--port", str(port)], env, port, log=log
            )
            times.append(wall)
            cpu.append(used)
        result: dict[str, Any] = {
            "store": kind,
            "gateway_s": summary(times),
            "cpu_s": summary(cpu),
            "all": [round(t, 3) for t in times],
        }
        if args.importtime:
            result["importtime"] = importtime(smithers, options, env, workdir / f"importtime-{kind}.txt")
    finally:
        drop()
    return result


def time_to_ready(argv: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Spawn a worker: the seconds until Celery logged it ready, and its CPU by then."""
    log.unlink(missing_ok=True)
    out = open(log, "ab")  # noqa: SIM115
    began = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        while time.perf_counter() - began < 60:
            if proc.poll() is not None:
                raise SystemExit(f"{argv[:4]} exited with {proc.returncode} before it was ready (log {log})")
            if b" ready." in log.read_bytes():
                return time.perf_counter() - began, group_cpu_s(proc.pid)
            time.sleep(0.01)
        raise SystemExit(f"{argv[:4]} was not ready within 60 s (log {log})")
    finally:
        stop(proc)
        out.close()


def bench_worker(args: argparse.Namespace, workdir: Path, redis_url: str) -> dict[str, Any]:
    """``smithers worker`` on a SQLite store, each pool of ``--worker-pools``."""
    url, drop = prepare_store("sqlite", args, workdir)
    env = {
        **os.environ,
        "SMITHERS_DATABASE_URL": url,
        "SMITHERS_REDIS_URL": redis_url,
        "PYTHONPATH": str(args.root),
    }
    smithers = str(Path(sys.executable).with_name("smithers"))
    result: dict[str, Any] = {}
    try:
        for pool in args.worker_pools.split(","):
            argv = [smithers, "worker", "--pool", pool, "--concurrency", "2", "--log-level", "INFO"]
            runs = [time_to_ready(argv, env, workdir / f"worker-{pool}.log") for _ in range(args.starts)]
            result[pool] = {"ready_s": summary([w for w, _ in runs]), "cpu_s": summary([c for _, c in runs])}
            print(f"worker --pool {pool}: spawn -> ready {json.dumps(result[pool])}")
    finally:
        drop()
    return result


def yardsticks(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    (workdir / "trivial_app.py").write_text(TRIVIAL_APP)
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    plain: list[float] = []
    unicorn: list[float] = []
    unicorn_cpu: list[float] = []
    for _ in range(args.starts):
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(workdir),
            str(port),
        ]
        plain.append(time_to_healthy(argv, env, port, path="/")[0])
        port = free_port()
        argv = [str(Path(sys.executable).with_name("gunicorn")), "--bind", f"127.0.0.1:{port}"]
        argv += ["--workers", str(args.workers), "--worker-class", args.worker_class, "trivial_app:app"]
        wall, used = time_to_healthy(argv, env, port)
        unicorn.append(wall)
        unicorn_cpu.append(used)
    return {
        "http_server_s": summary(plain),
        "gunicorn_trivial_s": summary(unicorn),
        "gunicorn_trivial_cpu_s": summary(unicorn_cpu),
    }


def importtime(smithers: str, options: list[str], env: dict[str, str], out: Path) -> dict[str, Any]:
    """One start under ``-X importtime``: self time per top-level package (summed over
    the process tree: gunicorn's workers import what their master did not), the
    interpreters started, and the modules imported by more than one process."""
    port = free_port()
    argv = [smithers, "gateway", *options, "--port", str(port)]
    out.unlink(missing_ok=True)
    # the variable, not -X importtime: an interpreter exec'd by this one inherits it
    took, _ = time_to_healthy(argv, {**env, "PYTHONPROFILEIMPORTTIME": "1"}, port, log=out)
    per_package: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    total_us = 0
    for line in out.read_text(errors="replace").splitlines():
        m = IMPORT_LINE.match(line)
        if not m:
            continue
        self_us, module = int(m.group(1)), m.group(4)
        seen[module] += 1
        per_package[module.split(".")[0]] += self_us
        total_us += self_us
    interpreters = seen["encodings"]  # each interpreter imports it once, at startup
    twice = sorted(name for name, n in seen.items() if n > 1 and "._" not in name)
    top = [(name, round(us / 1e6, 3)) for name, us in per_package.most_common(12)]
    print(f"  -X importtime start: {took:.2f} s to healthy; {total_us / 1e6:.2f} s of imports in all")
    print(f"  interpreters started: {interpreters}; modules imported by more than one process: {len(twice)}")
    for name, secs in top:
        print(f"    {name:<24} {secs:6.3f} s self")
    return {
        "healthy_s": round(took, 3),
        "import_s": round(total_us / 1e6, 3),
        "interpreters": interpreters,
        "imported_twice": len(twice),
        "top": dict(top),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--starts", type=int, default=10)
    p.add_argument("--store", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    p.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/smithers_restart_bench"
    )
    p.add_argument("--worker-class", choices=("gevent", "gthread"), default="gevent")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--importtime", action="store_true")
    p.add_argument("--no-yardsticks", action="store_true")
    p.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="the checkout whose smithers the processes run (first on PYTHONPATH): an older commit's"
        " `git archive` to compare with",
    )
    p.add_argument(
        "--worker-pools",
        default="",
        help="also time `smithers worker` to ready, each pool of these (prefork,gevent)",
    )
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="smithers-restart-bench-"))
    redis, redis_url = redis_server(workdir)
    results: dict[str, Any] = {
        "starts": args.starts,
        "worker_class": args.worker_class,
        "workers": args.workers,
    }
    try:
        if not args.no_yardsticks:
            results["yardsticks"] = yardsticks(args, workdir)
            print(f"yardsticks: {json.dumps(results['yardsticks'])}")
        if args.worker_pools:
            results["worker"] = bench_worker(args, workdir, redis_url)
        for kind in filter(None, args.store.split(",")):
            r = bench_store(kind.strip(), args, workdir, redis_url)
            results[kind.strip()] = r
            print(f"{kind}: spawn -> first 200 of /healthz {json.dumps(r['gateway_s'])}  all {r['all']}")
            print(f"{kind}: CPU of the gateway's processes by then {json.dumps(r['cpu_s'])}")
    finally:
        stop(redis)
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
