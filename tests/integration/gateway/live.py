"""A live gateway process (``smithers gateway``, gunicorn) for client and remote-CLI
tests: start it, kill -9 it by PID, start it again on the same port; issue tokens and run
the ``smithers`` command line as a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import update

from smithers.shared.store import Store
from smithers.shared.store import schema as s
from tests.conftest import free_port
from tests.integration.gateway.support import KEY, ROOT, WORKFLOWS


def base_env(database_url: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of a deployment: its store, broker, workflows and signing key; no
    SMITHERS_* of the caller's (no remote mode leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    env.update(
        SMITHERS_DATABASE_URL=database_url,
        SMITHERS_WORKFLOWS=WORKFLOWS,
        SMITHERS_JWT_SECRET=KEY,
        SMITHERS_SSE_KEEPALIVE_SECONDS="0.5",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    if redis_url:
        env["SMITHERS_REDIS_URL"] = redis_url
    return env


def remote_env(url: str, token: str | None, **extra: str) -> dict[str, str]:
    """A client machine's environment: the gateway's URL and a token, no store, no broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    env.update(SMITHERS_GATEWAY_URL=url, PYTHONPATH=str(ROOT), **extra)
    if token is not None:
        env["SMITHERS_TOKEN"] = token
    return env


def smithers(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """``smithers ARGS`` as a subprocess; its exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "smithers", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def issue(env: dict[str, str], subject: str, scopes: str, ttl: str = "1h") -> str:
    """A token from ``smithers token issue`` on the deployment's store."""
    done = smithers(env, "token", "issue", "--subject", subject, "--scopes", scopes, "--ttl", ttl)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class LiveGateway:
    """``smithers gateway`` in its own process group, on a fixed port across restarts."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.port = free_port()
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveGateway:
        self.starts += 1
        log = (self.log_dir / f"gateway-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smithers", "gateway", "--port", str(self.port), "--workers", "1"],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 40
        while True:
            assert self.proc.poll() is None, self.output()
            assert time.time() < deadline, self.output()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)

    def kill9(self) -> None:
        """SIGKILL the gateway's process group (gunicorn master and worker) by its PID."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("gateway-*.log")))


def write_events(
    store: Store, run_id: str, finish: threading.Event, stop: threading.Event, written: list[int]
) -> threading.Thread:
    """Append events to the run until ``finish``, then end it (run.succeeded), as a worker
    would; ``written[0]`` is the last seq written."""

    def write() -> None:
        for i in range(5000):
            if stop.is_set():
                return
            if finish.is_set():
                break
            with store.write() as tx:
                tx.emit(run_id, "node.progress", payload={"i": i})
            written[0] = i + 2  # run.launched is seq 1
            time.sleep(0.015)
        with store.write() as tx:
            tx.conn.execute(
                update(s.runs).where(s.runs.c.run_id == run_id).values(status="succeeded", finished_at=tx.now)
            )
            tx.emit(run_id, "run.succeeded")

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread
