"""Configuration: one frozen dataclass per process, built from SMITHERS_* variables.

Every command finds its deployment the same way: ``SMITHERS_DATABASE_URL`` and
``SMITHERS_REDIS_URL`` name a cluster; otherwise the data directory holds the embedded
default: the SQLite file ``smithers.db``, ``broker.json`` written by ``smithers up`` for
its embedded Redis, and ``deployment.json``, the record ``smithers up`` writes of its
workflow modules (and of its store and broker when they are not the embedded ones).
The data directory is ``--data-dir``, else ``SMITHERS_DATA_DIR``, else the nearest
``.smithers/`` with a ``deployment.json`` in the current directory or a parent (as git
finds ``.git``), else ``./.smithers`` (:mod:`smithers.shared.datadir`). A variable that
is set wins over the record: ``SMITHERS_WORKFLOWS``, ``SMITHERS_DATABASE_URL``,
``SMITHERS_REDIS_URL``, ``SMITHERS_DEPLOYMENT_VERSION``.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from smithers.shared import settings
from smithers.shared.actions import DecisionConfig
from smithers.shared.datadir import find_data_dir, read_record

DB_FILE = "smithers.db"
BROKER_FILE = "broker.json"


@dataclass(frozen=True)
class Deployment:
    """Where the store and the broker are."""

    database_url: str
    redis_url: str | None  # None: embedded broker not running (yet)
    data_dir: Path | None
    embedded: bool
    deployment_version: str
    workflows: str  # comma-separated module names
    project_dir: Path | None = None  # where workflow modules import from (None: the cwd)
    broker_url: str | None = None  # SMITHERS_BROKER_URL: the step messages' broker (None: redis_url)

    @property
    def broker_file(self) -> Path | None:
        """Where ``smithers up`` records its embedded broker, for the embedded default."""
        return None if self.data_dir is None else self.data_dir / BROKER_FILE


def resolve_deployment(
    env: Mapping[str, str], data_dir: str | None = None, cwd: Path | None = None, *, recorded: bool = True
) -> Deployment:
    """Find the deployment from the environment, an optional ``--data-dir`` and (unless
    not ``recorded``: ``smithers up`` itself) the record of ``smithers up`` in the data
    directory (see the module docstring)."""
    given_version = settings.DEPLOYMENT_VERSION.given(env)
    version = given_version or settings.DEPLOYMENT_VERSION.default
    workflows = settings.WORKFLOWS.read(env)
    db = settings.DATABASE_URL.given(env)
    redis_url = settings.REDIS_URL.given(env)
    broker_url = settings.BROKER_URL.given(env)
    if db and redis_url:
        return Deployment(db, redis_url, None, False, version, workflows, broker_url=broker_url)
    directory = find_data_dir(env, data_dir, cwd)
    record = read_record(directory) if recorded else None
    project_dir = None
    if record is not None:
        workflows = workflows or record.workflows
        version = given_version or record.deployment_version
        db = db or record.database_url
        redis_url = redis_url or record.redis_url
        broker_url = broker_url or record.broker_url
        project_dir = record.project_dir
    if not db:
        db = f"sqlite:///{directory / DB_FILE}"
    if not redis_url:
        redis_url = read_broker_url(directory / BROKER_FILE)
    return Deployment(db, redis_url, directory, True, version, workflows, project_dir, broker_url)


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

    sweep_interval_s: float = settings.SWEEP_INTERVAL.default
    redispatch_after_s: float = settings.REDISPATCH_AFTER.default
    max_lost: int = settings.MAX_LOST.default
    holder_heartbeat_s: float = settings.HOLDER_HEARTBEAT.default
    holder_ttl_s: float = settings.HOLDER_TTL.default
    retention_days: int = settings.RETENTION_DAYS.default  # 0: keep every run

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SchedulerConfig:
        """Read SMITHERS_SWEEP_INTERVAL, SMITHERS_REDISPATCH_AFTER, SMITHERS_MAX_LOST, the
        holder heartbeat and TTL, and SMITHERS_RETENTION_DAYS."""
        return cls(
            retention_days=settings.RETENTION_DAYS.read(env),
            sweep_interval_s=settings.SWEEP_INTERVAL.read(env),
            # well above a worker's lazy claim (0.25 s): a re-sent message must find the
            # attempt claimed (docs/architecture.md, "Celery settings")
            redispatch_after_s=settings.REDISPATCH_AFTER.read(env),
            max_lost=settings.MAX_LOST.read(env),
            holder_heartbeat_s=settings.HOLDER_HEARTBEAT.read(env),
            holder_ttl_s=settings.HOLDER_TTL.read(env),
        )


@dataclass(frozen=True)
class WorkerConfig:
    """Worker tunables: the attempt lease, Redis visibility timeout, queues."""

    lease_s: float = settings.LEASE_SECONDS.default
    visibility_timeout_s: float = settings.VISIBILITY_TIMEOUT.default
    queues: tuple[str, ...] = ("steps",)
    concurrency: int = 2
    sandbox_root: Path = Path("sandbox")
    secrets_dir: Path | None = None
    holder_heartbeat_s: float = settings.HOLDER_HEARTBEAT.default
    secrets_allow: frozenset[str] = frozenset()
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    decide_max_nodes: int = settings.DECIDE_MAX_NODES.default
    chain_steps: int = settings.CHAIN_STEPS.default
    chain_s: float = settings.CHAIN_SECONDS.default

    @classmethod
    def from_env(cls, env: Mapping[str, str], data_dir: Path | None = None) -> WorkerConfig:
        """Read the worker's settings (smithers.shared.settings, section Worker)."""
        root = settings.SANDBOX_ROOT.read(env) or str((data_dir or Path(".")) / "sandbox")
        secrets = settings.SECRETS_DIR.read(env)
        return cls(
            lease_s=settings.LEASE_SECONDS.read(env),
            visibility_timeout_s=settings.VISIBILITY_TIMEOUT.read(env),
            concurrency=settings.CONCURRENCY.read(env) or os.cpu_count() or 2,
            sandbox_root=Path(root).resolve(),
            secrets_dir=Path(secrets) if secrets else None,
            holder_heartbeat_s=settings.HOLDER_HEARTBEAT.read(env),
            secrets_allow=frozenset(
                name.strip() for name in settings.SECRETS_ALLOW.read(env).split(",") if name.strip()
            ),
            decision=decision_config(env),
            decide_max_nodes=settings.DECIDE_MAX_NODES.read(env),
            chain_steps=settings.CHAIN_STEPS.read(env),
            chain_s=settings.CHAIN_SECONDS.read(env),
        )


def decision_config(env: Mapping[str, str]) -> DecisionConfig:
    """The decision's tunables, the same in every process that decides."""
    return DecisionConfig(settings.REDISPATCH_AFTER.read(env), settings.MAX_LOST.read(env))
