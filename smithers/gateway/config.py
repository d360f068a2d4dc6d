"""GatewayConfig: the gateway's settings, built once from SMITHERS_* variables.

The token signing key comes from ``SMITHERS_JWT_SECRET``, or the file named by
``SMITHERS_JWT_SECRET_FILE``, or (single node only) ``<data dir>/gateway.key``, created
with mode 0600 on first use. It is never read from or written to the store. With
``SMITHERS_JWT_ALGORITHM`` RS256, ES256 or EdDSA the gateway's own tokens are signed
with the private key of ``SMITHERS_JWT_PRIVATE_KEY_FILE`` and verified with the public
one, so a gateway given only ``SMITHERS_JWT_PUBLIC_KEY_FILE`` verifies but cannot mint;
the secret then signs console sessions only, and is optional.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlalchemy.engine import make_url

from smithers.gateway.cors import parse_origins
from smithers.gateway.issuers import LEEWAY_LIMIT_S, OutsideIssuer, load_issuers
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


def load_signing_key(
    env: Mapping[str, str], data_dir: Path | None, *, create: bool = True, required: bool = True
) -> str:
    """The HS256 signing key: from the environment, a file, or the data directory
    (``""`` when there is none and it is not ``required``)."""
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
    if not key and not required:
        return ""
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


RSA_MIN_BITS = 2048
MAX_PEM_BYTES = 64 * 1024


@dataclass(frozen=True)
class KeyPair:
    """The PEM keys of an asymmetric algorithm: the private one only where tokens are issued."""

    algorithm: str
    private_pem: str = field(default="", repr=False)
    public_pem: str = ""


def _fits(key: object, algorithm: str) -> bool:
    if algorithm == "RS256":
        return isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) and key.key_size >= RSA_MIN_BITS
    if algorithm == "ES256":
        return isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
            key.curve, ec.SECP256R1
        )
    return isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey)


def _pem(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read the {what} key file {path}: {exc.strerror}") from None
    if len(data) > MAX_PEM_BYTES:
        raise InvalidInput(f"the {what} key file {path} is over {MAX_PEM_BYTES} bytes")
    return data


def _public_bytes(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_key_pair(env: Mapping[str, str]) -> KeyPair | None:
    """The key pair SMITHERS_JWT_ALGORITHM and SMITHERS_JWT_{PRIVATE,PUBLIC}_KEY_FILE name,
    checked (the key's type fits the algorithm, RSA at least 2048 bits, both halves one
    pair), or None for HS256."""
    algorithm = settings.JWT_ALGORITHM.read(env)
    if algorithm == "HS256":
        return None
    private_path = settings.JWT_PRIVATE_KEY_FILE.read(env)
    public_path = settings.JWT_PUBLIC_KEY_FILE.read(env)
    if not private_path and not public_path:
        raise InvalidInput(
            f"SMITHERS_JWT_ALGORITHM={algorithm} needs SMITHERS_JWT_PUBLIC_KEY_FILE (to verify)"
            " or SMITHERS_JWT_PRIVATE_KEY_FILE (to issue)"
        )
    wrong = f"does not hold a key for {algorithm} (RSA of {RSA_MIN_BITS}+ bits, EC P-256 or Ed25519)"
    private_pem = derived = ""
    if private_path:
        try:
            private = serialization.load_pem_private_key(_pem(private_path, "private"), password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"{private_path} is not an unencrypted PEM private key: {exc}") from None
        if not _fits(private, algorithm):
            raise InvalidInput(f"the private key file {private_path} {wrong}")
        assert isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
        private_pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        derived = _public_bytes(private.public_key()).decode()
    public_pem = derived
    if public_path:
        try:
            public = serialization.load_pem_public_key(_pem(public_path, "public"))
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"{public_path} is not a PEM public key: {exc}") from None
        if not _fits(public, algorithm):
            raise InvalidInput(f"the public key file {public_path} {wrong}")
        assert isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
        public_pem = _public_bytes(public).decode()
        if derived and derived != public_pem:
            raise InvalidInput(f"{public_path} is not the public half of {private_path}")
    return KeyPair(algorithm, private_pem, public_pem)


OWN_ISSUER = "smithers"  # the iss of the gateway's own tokens


def load_outside_issuers(env: Mapping[str, str], ttl: TtlPolicy) -> tuple[OutsideIssuer, ...]:
    """The issuers of SMITHERS_IDP_ISSUERS_FILE (none when unset); none may claim the
    gateway's own ``iss``, or its own tokens would be checked against a JWKS."""
    path = settings.IDP_ISSUERS_FILE.read(env)
    issuers = load_issuers(path, ttl) if path else ()
    if any(i.issuer == OWN_ISSUER for i in issuers):
        raise InvalidInput(f"SMITHERS_IDP_ISSUERS_FILE {path}: {OWN_ISSUER!r} is the gateway's own issuer")
    return issuers


def read_leeway(env: Mapping[str, str]) -> int:
    """SMITHERS_IDP_LEEWAY, bounded: a wide skew would stretch every outside token."""
    leeway = settings.IDP_LEEWAY.read(env)
    if leeway > LEEWAY_LIMIT_S:
        raise InvalidInput(f"SMITHERS_IDP_LEEWAY may be at most {LEEWAY_LIMIT_S} seconds (5m)")
    return leeway


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
    issuer: str = OWN_ISSUER
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
    grant_cache_s: float = settings.GRANT_CACHE.default  # a grant row read is reused this long
    auth_failures: int = settings.GATEWAY_AUTH_FAILURES.default
    auth_window_s: float = settings.GATEWAY_AUTH_WINDOW.default
    session_ttl_s: int = settings.SESSION_TTL.default
    session_secure: str = settings.SESSION_SECURE_COOKIE.default  # auto | true | false
    broker_url: str | None = None  # the step messages' broker (None: redis_url)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    decide_max_nodes: int = settings.DECIDE_MAX_NODES.default
    key_pair: KeyPair | None = None  # None: HS256 tokens signed with signing_key
    outside_issuers: tuple[OutsideIssuer, ...] = ()
    idp_leeway_s: int = settings.IDP_LEEWAY.default
    jwks_timeout_s: float = settings.IDP_JWKS_TIMEOUT.default
    jwks_cache_s: int = settings.IDP_JWKS_CACHE.default
    jwks_refresh_min_s: int = settings.IDP_JWKS_REFRESH_MIN.default

    @classmethod
    def from_env(cls, env: Mapping[str, str], deployment: Deployment) -> GatewayConfig:
        """Read the deployment's URLs and SMITHERS_GATEWAY_* / SMITHERS_SSE_* tunables."""
        data_dir = key_dir(env, deployment)
        key_pair = load_key_pair(env)
        ttl = TtlPolicy.from_env(env)
        return cls(
            database_url=deployment.database_url,
            redis_url=deployment.redis_url,
            # with a key pair the secret signs console sessions only (none: sessions are off)
            signing_key=load_signing_key(env, data_dir, required=key_pair is None),
            deployment_version=deployment.deployment_version,
            workflows=deployment.workflows,
            ttl=ttl,
            key_pair=key_pair,
            outside_issuers=load_outside_issuers(env, ttl),
            idp_leeway_s=read_leeway(env),
            jwks_timeout_s=settings.IDP_JWKS_TIMEOUT.read(env),
            jwks_cache_s=settings.IDP_JWKS_CACHE.read(env),
            jwks_refresh_min_s=settings.IDP_JWKS_REFRESH_MIN.read(env),
            webhooks=WebhookConfig.from_env(env),
            max_body_bytes=settings.GATEWAY_MAX_BODY.read(env),
            page_max=settings.GATEWAY_PAGE_MAX.read(env),
            sse_poll_s=settings.SSE_POLL_SECONDS.read(env),
            sse_keepalive_s=settings.SSE_KEEPALIVE_SECONDS.read(env),
            sse_max_s=settings.SSE_MAX_SECONDS.read(env),
            cors_origins=parse_origins(settings.CORS_ORIGINS.read(env)),
            holder_ttl_s=settings.HOLDER_TTL.read(env),
            grant_cache_s=settings.GRANT_CACHE.read(env),
            auth_failures=settings.GATEWAY_AUTH_FAILURES.read(env),
            auth_window_s=settings.GATEWAY_AUTH_WINDOW.read(env),
            session_ttl_s=settings.SESSION_TTL.read(env),
            session_secure=settings.SESSION_SECURE_COOKIE.read(env),
            broker_url=deployment.broker_url,
            decision=decision_config(env),
            decide_max_nodes=settings.DECIDE_MAX_NODES.read(env),
        )
