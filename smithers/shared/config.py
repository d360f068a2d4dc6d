"""Configuration: one frozen dataclass per process, built from SMITHERS_* variables.

Every command finds its deployment the same way: ``SMITHERS_DATABASE_URL`` and
``SMITHERS_REDIS_URL`` name a cluster; otherwise the data directory (``--data-dir``,
``SMITHERS_DATA_DIR``, default the current directory) holds the embedded default: the
SQLite file ``smithers.db`` and ``broker.json`` written by ``smithers up`` for its
embedded Redis.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from smithers.shared.errors import InvalidInput

DB_FILE = "smithers.db"
BROKER_FILE = "broker.json"


def env_number(env: Mapping[str, str], name: str, default: float, minimum: float | None = None) -> float:
    """A positive number from the environment variable ``name`` (``default`` if unset),
    at least ``minimum`` when one is given."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a number, not {raw!r}") from None
    if value <= 0:
        raise InvalidInput(f"{name} must be > 0")
    if minimum is not None and value < minimum:
        raise InvalidInput(f"{name} must be at least {minimum:g}, not {value:g}")
    return value


@dataclass(frozen=True)
class Deployment:
    """Where the store and the broker are."""

    database_url: str
    redis_url: str | None  # None: embedded broker not running (yet)
    data_dir: Path | None
    embedded: bool
    deployment_version: str
    workflows: str  # comma-separated module names

    @property
    def broker_file(self) -> Path | None:
        """Where ``smithers up`` records its embedded broker, for the embedded default."""
        return None if self.data_dir is None else self.data_dir / BROKER_FILE


def resolve_deployment(env: Mapping[str, str], data_dir: str | None = None) -> Deployment:
    """Find the deployment from the environment and an optional ``--data-dir``."""
    version = env.get("SMITHERS_DEPLOYMENT_VERSION") or "dev"
    workflows = env.get("SMITHERS_WORKFLOWS", "")
    db = env.get("SMITHERS_DATABASE_URL")
    redis_url = env.get("SMITHERS_REDIS_URL")
    directory = Path(data_dir or env.get("SMITHERS_DATA_DIR") or ".").resolve()
    if db and redis_url:
        return Deployment(db, redis_url, None, False, version, workflows)
    if not db:
        db = f"sqlite:///{directory / DB_FILE}"
    if not redis_url:
        redis_url = read_broker_url(directory / BROKER_FILE)
    return Deployment(db, redis_url, directory, True, version, workflows)


def read_broker_url(path: Path) -> str | None:
    """The embedded broker's URL from ``broker.json`` if that broker answers, else None."""
    try:
        info = json.loads(path.read_text())
        host, port = str(info["host"]), int(info["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        with socket.create_connection((host, port), timeout=0.5):
            pass
    except OSError:
        return None
    return f"redis://{host}:{port}/0"


@dataclass(frozen=True)
class SchedulerConfig:
    """Scheduler tunables (seconds)."""

    sweep_interval_s: float = 1.0
    redispatch_after_s: float = 30.0
    max_lost: int = 5

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SchedulerConfig:
        """Read SMITHERS_SWEEP_INTERVAL and SMITHERS_REDISPATCH_AFTER."""
        return cls(
            sweep_interval_s=env_number(env, "SMITHERS_SWEEP_INTERVAL", 1.0),
            # well above a worker's lazy claim (0.25 s): a re-sent message must find the
            # attempt claimed (docs/architecture.md, "Celery settings")
            redispatch_after_s=env_number(env, "SMITHERS_REDISPATCH_AFTER", 30.0, minimum=1.0),
            max_lost=int(env_number(env, "SMITHERS_MAX_LOST", 5)),
        )


@dataclass(frozen=True)
class WorkerConfig:
    """Worker tunables: the attempt lease, Redis visibility timeout, queues."""

    lease_s: float = 30.0
    visibility_timeout_s: float = 3600.0
    queues: tuple[str, ...] = ("steps",)
    concurrency: int = 2
    sandbox_root: Path = Path("sandbox")
    secrets_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], data_dir: Path | None = None) -> WorkerConfig:
        """Read SMITHERS_LEASE_SECONDS, SMITHERS_VISIBILITY_TIMEOUT, SMITHERS_SANDBOX_ROOT."""
        root = env.get("SMITHERS_SANDBOX_ROOT") or str((data_dir or Path(".")) / "sandbox")
        secrets = env.get("SMITHERS_SECRETS_DIR")
        return cls(
            lease_s=env_number(env, "SMITHERS_LEASE_SECONDS", 30.0),
            visibility_timeout_s=env_number(env, "SMITHERS_VISIBILITY_TIMEOUT", 3600.0),
            concurrency=int(env_number(env, "SMITHERS_CONCURRENCY", float(os.cpu_count() or 2))),
            sandbox_root=Path(root).resolve(),
            secrets_dir=Path(secrets) if secrets else None,
        )
