"""GatewayConfig: the gateway's settings, built once from SMITHERS_* variables.

The token signing key comes from ``SMITHERS_JWT_SECRET``, or the file named by
``SMITHERS_JWT_SECRET_FILE``, or (single node only) ``<data dir>/gateway.key``, created
with mode 0600 on first use. It is never read from or written to the store.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from smithers.gateway.cors import parse_origins
from smithers.shared import settings
from smithers.shared.actions import DecisionConfig
from smithers.shared.config import Deployment, decision_config
from smithers.shared.errors import InvalidInput
from smithers.shared.grants import TtlPolicy
from smithers.shared.webhook import WebhookConfig

KEY_FILE = "gateway.key"
MIN_KEY_CHARS = 32


def key_dir(env: Mapping[str, str], deployment: Deployment) -> Path | None:
    """Where a single-node deployment keeps its signing key: its data directory, when
    the store is a SQLite file or the embedded PostgreSQL on a socket in that directory
    (``smithers up`` hands its children SMITHERS_DATA_DIR). A cluster gets its key from
    SMITHERS_JWT_SECRET(_FILE) only."""
    given = env.get(settings.DATA_DIR.name)
    directory = deployment.data_dir or (Path(given).resolve() if given else None)
    if deployment.database_url.startswith("sqlite"):
        return directory
    socket = make_url(deployment.database_url).query.get("host")
    if directory is not None and isinstance(socket, str) and Path(socket).parent == directory:
        return directory  # smithers up --store embedded-postgres
    return None


def load_signing_key(env: Mapping[str, str], data_dir: Path | None, *, create: bool = True) -> str:
    """The HS256 signing key: from the environment, a file, or the data directory."""
    key = settings.JWT_SECRET.read(env)
    source = settings.JWT_SECRET.name
    if not key and settings.JWT_SECRET_FILE.read(env):
        path = Path(settings.JWT_SECRET_FILE.read(env))
        source = str(path)
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise InvalidInput(f"cannot read the signing key file {path}: {exc.strerror}") from None
    if not key and data_dir is not None:
        path = data_dir / KEY_FILE
        source = str(path)
        key = _data_dir_key(path, create)
    if not key:
        raise InvalidInput(
            "no token signing key: set SMITHERS_JWT_SECRET or SMITHERS_JWT_SECRET_FILE"
            " (a single-node deployment keeps one in its data directory)"
        )
    if len(key) < MIN_KEY_CHARS:
        raise InvalidInput(f"the signing key from {source} is shorter than {MIN_KEY_CHARS} characters")
    return key


def _data_dir_key(path: Path, create: bool) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if not create:
            return ""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway app needs; the key is kept out of ``repr``."""

    database_url: str
    redis_url: str | None
    signing_key: str = field(repr=False)
    deployment_version: str = "dev"
    workflows: str = ""
    ttl: TtlPolicy = field(default_factory=TtlPolicy)
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)  # /v1/control/*: secrets, bounds
    issuer: str = "smithers"
    max_body_bytes: int = settings.GATEWAY_MAX_BODY.default
    page_max: int = settings.GATEWAY_PAGE_MAX.default
    sse_poll_s: float = settings.SSE_POLL_SECONDS.default
    sse_idle_poll_s: float = 0.5
    sse_keepalive_s: float = settings.SSE_KEEPALIVE_SECONDS.default
    sse_max_s: float = settings.SSE_MAX_SECONDS.default
    sse_buffer: int = 2048
    sse_retry_ms: int = 2000
    cors_origins: tuple[str, ...] = ()  # exact origins; empty: no CORS headers at all
    holder_ttl_s: float = settings.HOLDER_TTL.default  # a launch warns when no live holder has its revision
    auth_failures: int = settings.GATEWAY_AUTH_FAILURES.default
    auth_window_s: float = settings.GATEWAY_AUTH_WINDOW.default
    session_ttl_s: int = settings.SESSION_TTL.default
    session_secure: str = settings.SESSION_SECURE_COOKIE.default  # auto | true | false
    broker_url: str | None = None  # the step messages' broker (None: redis_url)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    decide_max_nodes: int = settings.DECIDE_MAX_NODES.default

    @classmethod
    def from_env(cls, env: Mapping[str, str], deployment: Deployment) -> GatewayConfig:
        """Read the deployment's URLs and SMITHERS_GATEWAY_* / SMITHERS_SSE_* tunables."""
        data_dir = key_dir(env, deployment)
        return cls(
            database_url=deployment.database_url,
            redis_url=deployment.redis_url,
            signing_key=load_signing_key(env, data_dir),
            deployment_version=deployment.deployment_version,
            workflows=deployment.workflows,
            ttl=TtlPolicy.from_env(env),
            webhooks=WebhookConfig.from_env(env),
            max_body_bytes=settings.GATEWAY_MAX_BODY.read(env),
            page_max=settings.GATEWAY_PAGE_MAX.read(env),
            sse_poll_s=settings.SSE_POLL_SECONDS.read(env),
            sse_keepalive_s=settings.SSE_KEEPALIVE_SECONDS.read(env),
            sse_max_s=settings.SSE_MAX_SECONDS.read(env),
            cors_origins=parse_origins(settings.CORS_ORIGINS.read(env)),
            holder_ttl_s=settings.HOLDER_TTL.read(env),
            auth_failures=settings.GATEWAY_AUTH_FAILURES.read(env),
            auth_window_s=settings.GATEWAY_AUTH_WINDOW.read(env),
            session_ttl_s=settings.SESSION_TTL.read(env),
            session_secure=settings.SESSION_SECURE_COOKIE.read(env),
            broker_url=deployment.broker_url,
            decision=decision_config(env),
            decide_max_nodes=settings.DECIDE_MAX_NODES.read(env),
        )
