"""The harness's own services, each restartable on a fixed address: a private Redis, a
private PostgreSQL (``initdb``/``pg_ctl`` on a free port) and network namespaces with
a veth pair each (a worker "on its own host"). Nothing here touches the shared Redis on
6379 or the shared PostgreSQL on 5432; every wait is bounded."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis
import sqlalchemy

from tests.conftest import free_port, redis_binary

NETNS_PREFIX = "smithers-f"


class ServiceError(RuntimeError):
    """A service of the harness did not start or stop in time."""


class RedisServer:
    """redis-server on a fixed port (no persistence), bound to loopback and ``extra_binds``."""

    def __init__(self, workdir: Path, extra_binds: tuple[str, ...] = ()) -> None:
        binary = redis_binary()
        if binary is None:
            raise ServiceError("redis-server not found")
        self.binary = binary
        self.port = free_port()
        self.binds = ("127.0.0.1", *extra_binds)
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, host: str = "127.0.0.1") -> str:
        return f"redis://{host}:{self.port}/0"

    def start(self, timeout: float = 15) -> None:
        argv = [self.binary, "--bind", *self.binds, "--port", str(self.port), "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.workdir)]
        # reachable from the harness's namespaces too (it binds only to their host ends)
        argv += ["--protected-mode", "no"]
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        client = redis.Redis.from_url(self.url(), socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServiceError(f"redis-server exited with {self.proc.returncode}")
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise ServiceError(f"redis-server did not answer within {timeout}s")
        finally:
            client.close()

    def kill(self) -> None:
        """kill -9 by PID."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def flushall(self) -> None:
        client = redis.Redis.from_url(self.url(), socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


def postgres_available() -> str | None:
    """Why a private PostgreSQL cannot be started here, or None."""
    for tool in ("initdb", "pg_ctl"):
        if shutil.which(tool) is None:
            return f"{tool} not on PATH"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


class PrivatePostgres:
    """A PostgreSQL cluster of the harness's own: initdb into a temporary directory,
    ``pg_ctl start`` on a free port (loopback and ``extra_listen``), restartable; under
    root it runs as the ``postgres`` user (PostgreSQL refuses root)."""

    database = "smithers"

    def __init__(self, extra_listen: tuple[str, ...] = ()) -> None:
        why = postgres_available()
        if why:
            raise ServiceError(why)
        self.root = Path(tempfile.mkdtemp(prefix="smithers-faults-pg-", dir="/tmp"))
        self.root.chmod(0o755)
        self.pgdata = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.listen = ",".join(("127.0.0.1", *extra_listen))
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.root, self.user)
        self.initialised = False

    def url(self, host: str = "127.0.0.1") -> str:
        return f"postgresql+psycopg://postgres@{host}:{self.port}/{self.database}"

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), user=self.user, capture_output=True, text=True, timeout=timeout, check=False
        )

    def init(self) -> None:
        done = self._run("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        if done.returncode != 0:
            raise ServiceError(f"initdb failed: {done.stderr.strip()[-500:]}")
        with (self.pgdata / "pg_hba.conf").open("a") as fh:
            fh.write("host all all 10.213.0.0/16 trust\n")
        self.initialised = True

    def start(self, timeout: float = 30) -> None:
        if not self.initialised:
            self.init()
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses='{self.listen}'"
            " -c fsync=off -c max_connections=200 -c shared_buffers=32MB"
        )
        done = self._run(
            "pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-o", options,
            "-w", "-t", str(int(timeout)), "start", timeout=timeout + 10,
        )  # fmt: skip
        if done.returncode != 0:
            raise ServiceError(f"pg_ctl start failed: {done.stdout[-300:]} {self.tail()}")
        engine = sqlalchemy.create_engine(
            self.url().rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT"
        )
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": self.database}
                ).first()
                if found is None:
                    conn.execute(sqlalchemy.text(f'CREATE DATABASE "{self.database}"'))
        finally:
            engine.dispose()

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        """``pg_ctl stop -m immediate`` is a crash as far as the clients are concerned."""
        if not (self.pgdata / "postmaster.pid").exists():
            return
        done = self._run(
            "pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", str(int(timeout)), "stop",
            timeout=timeout + 10,
        )  # fmt: skip
        if done.returncode != 0 and (self.pgdata / "postmaster.pid").exists():
            self._kill_postmaster()

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.1)

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-800:]
        except OSError:
            return ""

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def netns_unavailable() -> str | None:
    """Why the harness cannot make network namespaces here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"{NETNS_PREFIX}-probe-{os.getpid()}"
    made = subprocess.run(
        ["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10, check=False
    )
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10, check=False)
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if check and done.returncode != 0:
        raise ServiceError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _free_subnet() -> int:
    """A third octet of 10.213.x.0/24 that no interface of this machine uses."""
    used = _ip("-o", "-4", "addr", "show").stdout
    start = os.getpid() % 200
    for k in range(250):
        x = (start + k) % 250 + 1
        if f" 10.213.{x}." not in used:
            return x
    raise ServiceError("no free 10.213.x.0/24 subnet")


def remove_stale_netns() -> None:
    """Remove the namespaces (and veths) of harness processes that died without cleaning
    up (``smithers-f-<pid>-<i>`` whose pid is gone)."""
    listed = _ip("netns", "list", check=False).stdout.split()
    for name in listed:
        parts = name.split("-")
        if not name.startswith(NETNS_PREFIX + "-") or len(parts) != 4 or not parts[2].isdigit():
            continue
        try:
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            _ip("link", "del", f"sfh{parts[2]}x{parts[3]}"[:15], check=False)
            _ip("netns", "del", name, check=False)
        except PermissionError:
            continue


class Netns:
    """A network namespace joined to this host by a veth pair: the host end is
    ``host_addr``, the namespace end ``ns_addr`` (a /30 of 10.213.x.y). ``cut()`` sets the
    link down (a partition: packets vanish, connections stall), ``heal()`` sets it up."""

    def __init__(self, index: int = 0) -> None:
        remove_stale_netns()
        pid = os.getpid()
        self.name = f"{NETNS_PREFIX}-{pid}-{index}"
        self.host_if = f"sfh{pid}x{index}"[:15]
        self.ns_if = f"sfw{pid}x{index}"[:15]
        self.subnet = _free_subnet()
        self.host_addr = f"10.213.{self.subnet}.{4 * index + 1}"
        self.ns_addr = f"10.213.{self.subnet}.{4 * index + 2}"
        self.made = False

    def create(self) -> None:
        self.made = True
        _ip("netns", "add", self.name)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("-n", self.name, "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if)
        _ip("-n", self.name, "link", "set", self.ns_if, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")

    @property
    def prefix(self) -> tuple[str, ...]:
        """The command prefix that runs a process inside the namespace."""
        return ("ip", "netns", "exec", self.name)

    def cut(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def heal(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def destroy(self) -> None:
        """Remove the veth pair and the namespace (either may already be gone)."""
        if not self.made:
            return
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.name, check=False)
        self.made = False
