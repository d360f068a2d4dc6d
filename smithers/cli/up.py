"""``smithers up``: the single-node deployment in one command.

Starts the embedded broker (unless ``SMITHERS_REDIS_URL`` is set), migrates the store,
then runs the scheduler, a step worker and the gateway as child processes, restarting
any that dies. Ctrl-C (or SIGTERM) stops them all.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from smithers.cli.childproc import RotatingLog, forget, spawn
from smithers.cli.embedded import EmbeddedBroker
from smithers.shared import settings
from smithers.shared.config import DB_FILE, Deployment
from smithers.shared.datadir import Record, write_record
from smithers.shared.errors import InvalidInput, SmithersError
from smithers.shared.restarts import MAX_RESTARTS, RestartBudget
from smithers.shared.store import Store


class Service(Protocol):
    """An embedded server started before the children (the broker, the store)."""

    name: str
    log: RotatingLog
    proc: subprocess.Popen[bytes] | None

    def alive(self) -> bool: ...
    def restart(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Child:
    """A supervised child process."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: RestartBudget = field(default_factory=RestartBudget)


class Supervisor:
    """Runs the children of ``smithers up`` and restarts the ones that die, the embedded
    broker included.

    One thread of its own starts, watches and stops every child: on Linux a child is
    sent SIGTERM by the kernel when the thread that started it ends
    (:mod:`smithers.cli.childproc`), so that thread lives as long as the children.
    """

    def __init__(
        self,
        deployment: Deployment,
        env: Mapping[str, str],
        log_dir: Path,
        children: list[Child],
        services: Sequence[Service] = (),
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.deployment = deployment
        self.env = dict(env)
        self.log_dir = log_dir
        self.children = children
        self.services = list(services)  # the embedded broker and store, started already
        self.on_failure = on_failure
        self._service_restarts: dict[str, RestartBudget] = {}
        self._logs = {c.name: log_file(log_dir, c.name, env) for c in children}
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start every child (in the supervisor's thread) and watch them."""
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        try:
            for child in self.children:
                self._spawn(child)
        finally:
            self._started.set()
        while not self._stop.wait(0.5):
            problem = self.check()
            if problem:
                if self.on_failure is not None:
                    self.on_failure(problem)
                break
        self._stop.wait()
        self._stop_children()

    def _spawn(self, child: Child) -> None:
        child.proc = spawn(child.argv, self.env, self._logs[child.name])

    def check(self) -> str | None:
        """Restart dead children; return an error once one dies too often."""
        now = time.time()
        for service in self.services:
            if not service.alive():
                problem = self._restart_service(service, now)
                if problem:
                    return problem
        for child in self.children:
            if child.proc is None or child.proc.poll() is None:
                continue
            forget(child.proc)
            if not child.restarts.take(now):
                log = self.log_dir / f"{child.name}.log"
                return f"{child.name} exited {MAX_RESTARTS} times in a minute (see {log})"
            print(f"smithers up: {child.name} exited ({child.proc.returncode}); restarting", file=sys.stderr)
            self._spawn(child)
        return None

    def _restart_service(self, service: Service, now: float) -> str | None:
        code = service.proc.returncode if service.proc is not None else None
        if not self._service_restarts.setdefault(service.name, RestartBudget()).take(now):
            return f"{service.name} exited {MAX_RESTARTS} times in a minute (see {service.log.path})"
        print(f"smithers up: {service.name} exited ({code}); restarting it", file=sys.stderr, flush=True)
        try:
            service.restart()
        except SmithersError as exc:
            return f"{service.name} could not be restarted: {exc.message}"
        print(f"smithers up: {service.name} is back", file=sys.stderr, flush=True)
        return None

    def stop(self) -> None:
        """Stop every child: SIGTERM, then SIGKILL after 10 s."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _stop_children(self) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(timeout=5)
            forget(child.proc)
        for service in reversed(self.services):
            service.stop()  # the broker and store last: the children use them as they stop


def log_file(log_dir: Path, name: str, env: Mapping[str, str]) -> RotatingLog:
    """``<log_dir>/<name>.log``, rotated by SMITHERS_LOG_MAX_BYTES / SMITHERS_LOG_BACKUPS."""
    return RotatingLog(
        log_dir / f"{name}.log", settings.LOG_MAX_BYTES.read(env), settings.LOG_BACKUPS.read(env)
    )


def child_argv(command: str, *args: str) -> list[str]:
    """argv for a ``smithers`` sub-command run by this interpreter."""
    return [sys.executable, "-m", "smithers", command, *args]


def docker_available() -> bool:
    """True when a Docker engine answers (for starting a sandbox worker)."""
    try:
        import docker  # noqa: PLC0415 (optional extra)

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def prepare(
    deployment: Deployment,
    concurrency: int | None,
    port: int,
    host: str,
    sandbox: str = "auto",
    store_kind: str = "sqlite",
) -> tuple[list[Service], Deployment, list[Child]]:
    """Start the embedded broker and store (as asked), migrate, and describe the children."""
    if store_kind == "embedded-postgres" and settings.DATABASE_URL.given(os.environ):
        raise InvalidInput(
            f"--store embedded-postgres and {settings.DATABASE_URL.name} name two stores; drop one"
        )
    services: list[Service] = []
    try:
        redis_url = settings.REDIS_URL.read(os.environ)
        if not redis_url:
            assert deployment.data_dir is not None
            broker = EmbeddedBroker(
                deployment.data_dir, log_file(deployment.data_dir / "logs", "broker", os.environ)
            )
            redis_url = broker.start()
            services.append(broker)
        deployment = replace(deployment, redis_url=redis_url, project_dir=Path.cwd())
        if store_kind == "embedded-postgres":
            assert deployment.data_dir is not None
            from smithers.cli.embedded_pg import EmbeddedPostgres  # noqa: PLC0415 (an optional extra)

            postgres = EmbeddedPostgres(
                deployment.data_dir, log_file(deployment.data_dir / "logs", "postgres", os.environ)
            )
            deployment = replace(deployment, database_url=postgres.start())
            services.append(postgres)
        store = Store(deployment.database_url)
        try:
            store.migrate()
        finally:
            store.close()
    except BaseException:
        for service in reversed(services):
            service.stop()
        raise
    if deployment.data_dir is not None:
        record_deployment(
            deployment, external_broker=not any(isinstance(x, EmbeddedBroker) for x in services)
        )
    worker_args = ["--queues", "steps"]
    if concurrency:
        worker_args += ["--concurrency", str(concurrency)]
    children = [
        Child("scheduler", child_argv("scheduler")),
        Child("worker", child_argv("worker", *worker_args)),
    ]
    if sandbox == "on" or (sandbox == "auto" and docker_available()):
        children.append(
            Child("sandbox-worker", child_argv("worker", "--queues", "sandbox", "--concurrency", "1"))
        )
    if importlib.util.find_spec("smithers.gateway.server") is not None:
        children.append(Child("gateway", child_argv("gateway", "--port", str(port), "--host", host)))
    return services, deployment, children


def record_deployment(deployment: Deployment, external_broker: bool) -> Path:
    """Write ``deployment.json``, which the other commands find this deployment by."""
    assert deployment.data_dir is not None
    embedded_db = f"sqlite:///{deployment.data_dir / DB_FILE}"
    record = Record(
        workflows=deployment.workflows,
        project_dir=deployment.project_dir or Path.cwd(),
        deployment_version=deployment.deployment_version,
        database_url=None if deployment.database_url == embedded_db else deployment.database_url,
        redis_url=deployment.redis_url if external_broker else None,
        broker_url=deployment.broker_url,
    )
    return write_record(deployment.data_dir, record)


def child_env(deployment: Deployment) -> dict[str, str]:
    """The environment of the children: the resolved URLs and workflows made explicit."""
    env = dict(os.environ)
    env["SMITHERS_DATABASE_URL"] = deployment.database_url
    env["SMITHERS_REDIS_URL"] = deployment.redis_url or ""
    env["SMITHERS_WORKFLOWS"] = deployment.workflows
    if deployment.data_dir is not None:
        env["SMITHERS_DATA_DIR"] = str(deployment.data_dir)
        env.setdefault("SMITHERS_SANDBOX_ROOT", str(deployment.data_dir / "sandbox"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH", "")]))
    return env
