"""Sandbox steps as plain data: what a step asks for, validated when it is declared.

A sandbox step is described by a :class:`SandboxSpec`: image, command, network,
environment, secrets by name, ports, volumes, limits and the files of its workspace.
The bundles that cross the container boundary are in :mod:`smithers.shared.bundle`. Nothing
here imports Docker.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from smithers.shared.bundle import check_relpath, check_unique
from smithers.shared.errors import InvalidWorkflow, SandboxError

__all__ = [
    "NETWORK_POLICIES",
    "SANDBOX_UID",
    "SandboxSpec",
    "VolumeMount",
    "resolve_secret_values",
]

SANDBOX_UID = 10001
"""The uid and gid every sandbox process runs as (the image's ``sandbox`` user)."""

MAX_SPEC_FILES = 256
MAX_SPEC_FILES_BYTES = 16 * 1024 * 1024
MAX_SECRET_BYTES = 64 * 1024

_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_SECRET_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}")
_HOST_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62})(?:\.[a-z0-9](?:[a-z0-9-]{0,62}))*\.?")
NETWORK_POLICIES = ("none", "allowlist", "full")
MAX_EGRESS = 32
_FORBIDDEN_MOUNTS = ("/", "/proc", "/sys", "/dev", "/work", "/work/request", "/work/result")


@dataclass(frozen=True)
class VolumeMount:
    """A host directory mounted into the sandbox; the runtime checks its allowlist."""

    host_path: str
    container_path: str
    read_only: bool = True

    def __post_init__(self) -> None:
        """Validate the mount's shape (the host-side allowlist is the runtime's job)."""
        for name, value in (("host_path", self.host_path), ("container_path", self.container_path)):
            if not isinstance(value, str) or not value.startswith("/") or "\x00" in value:
                raise InvalidWorkflow(f"volume {name} must be an absolute path")
            if ".." in value.split("/"):
                raise InvalidWorkflow(f"volume {name} {value}: '..' is not allowed")
        target = os.path.normpath(self.container_path)
        if target in _FORBIDDEN_MOUNTS or target.startswith(("/work/request/", "/work/result/")):
            raise InvalidWorkflow(f"volume container_path {target} is reserved")
        if target.startswith(("/proc/", "/sys/", "/dev/")):
            raise InvalidWorkflow(f"volume container_path {target} is reserved")
        if not isinstance(self.read_only, bool):
            raise InvalidWorkflow("volume read_only must be a boolean")


def _tuple(value: object, what: str) -> tuple[object, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise InvalidWorkflow(f"sandbox {what} must be a list")
    return tuple(value)


def _number(value: object, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidWorkflow(f"sandbox {what} must be a number")
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidWorkflow(f"sandbox {what} must be between {low:g} and {high:g}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class SandboxSpec:
    """What a sandbox step asks for: image, command, network, limits and inputs.

    ``network`` is ``none`` (the default: loopback only), ``allowlist`` (only the
    ``host:port`` pairs of ``egress``, through the runtime's egress proxy) or ``full``
    (the default bridge, unrestricted); ``allow_network=True`` is ``full``.
    ``env`` holds explicit, non-secret values. ``secrets`` holds names only; the
    worker injects their values (see :func:`resolve_secret_values`) and nothing
    persists them. ``files`` are written into the request bundle under ``files/``.
    Hardening that is always on (no capabilities, read-only root, non-root user, no
    new privileges) is not configurable here. Raises :class:`InvalidWorkflow`.
    """

    image: str = "smithers-sandbox:latest"
    command: tuple[str, ...]
    allow_network: bool = False
    network: str = "none"
    egress: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    cpus: float = 1.0
    memory_mb: int = 256
    pids_limit: int = 128
    timeout_s: float = 300
    auto_accept_diffs: bool = False
    files: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Validate every field and freeze the collections."""
        if not isinstance(self.image, str) or not _IMAGE_RE.fullmatch(self.image):
            raise InvalidWorkflow(f"sandbox image {self.image!r} is not a valid image name")
        self._set("command", self._check_command())
        for name in ("allow_network", "auto_accept_diffs"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidWorkflow(f"sandbox {name} must be a boolean")
        self._check_network()
        self._set("env", MappingProxyType(self._check_env()))
        self._set("secrets", self._check_secrets())
        self._set("ports", self._check_ports())
        raw_volumes = _tuple(self.volumes, "volumes")
        volumes = tuple(v for v in raw_volumes if isinstance(v, VolumeMount))
        if len(volumes) != len(raw_volumes):
            raise InvalidWorkflow("sandbox volumes must be VolumeMount values")
        targets = [os.path.normpath(v.container_path) for v in volumes]
        if len(set(targets)) != len(targets):
            raise InvalidWorkflow("sandbox volumes mount twice on one container path")
        self._set("volumes", volumes)
        self._set("cpus", _number(self.cpus, "cpus", 0.01, 64))
        self._set("memory_mb", int(_number(self.memory_mb, "memory_mb", 8, 65536)))
        self._set("pids_limit", int(_number(self.pids_limit, "pids_limit", 8, 32768)))
        self._set("timeout_s", _number(self.timeout_s, "timeout_s", 0.1, 86400))
        self._set("files", MappingProxyType(self._check_files()))

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)

    def _check_command(self) -> tuple[str, ...]:
        command = [arg for arg in _tuple(self.command, "command") if isinstance(arg, str)]
        if len(command) != len(_tuple(self.command, "command")):
            raise InvalidWorkflow("sandbox command arguments must be strings")
        if not command or len(command) > 1024:
            raise InvalidWorkflow("sandbox command must have 1 to 1024 arguments")
        if any("\x00" in arg for arg in command):
            raise InvalidWorkflow("sandbox command arguments must not contain NUL")
        if sum(len(arg) for arg in command) > 128 * 1024:
            raise InvalidWorkflow("sandbox command is longer than 128 KiB")
        return tuple(command)

    def _check_network(self) -> None:
        if self.network not in NETWORK_POLICIES:
            raise InvalidWorkflow(f"sandbox network must be one of {', '.join(NETWORK_POLICIES)}")
        network = self.network
        if self.allow_network:
            if network == "allowlist":
                raise InvalidWorkflow("sandbox allow_network=True is network='full', not 'allowlist'")
            network = "full"
        egress: list[str] = []
        for entry in _tuple(self.egress, "egress"):
            egress.append(_egress_entry(entry))
        if network == "allowlist" and not egress:
            raise InvalidWorkflow("sandbox network 'allowlist' needs egress host:port pairs")
        if network != "allowlist" and egress:
            raise InvalidWorkflow("sandbox egress needs network='allowlist'")
        if len(egress) > MAX_EGRESS or len(set(egress)) != len(egress):
            raise InvalidWorkflow(f"sandbox egress lists at most {MAX_EGRESS} distinct host:port pairs")
        self._set("network", network)
        self._set("allow_network", network == "full")
        self._set("egress", tuple(egress))

    def _check_env(self) -> dict[str, str]:
        if not isinstance(self.env, Mapping):
            raise InvalidWorkflow("sandbox env must be a mapping")
        env: dict[str, str] = {}
        for key, value in self.env.items():
            if not isinstance(key, str) or not _ENV_RE.fullmatch(key):
                raise InvalidWorkflow(f"sandbox env name {key!r} is not a valid variable name")
            if not isinstance(value, str) or "\x00" in value:
                raise InvalidWorkflow(f"sandbox env {key}: value must be a string without NUL")
            env[key] = value
        return env

    def _check_secrets(self) -> tuple[str, ...]:
        secrets: list[str] = []
        for name in _tuple(self.secrets, "secrets"):
            if not isinstance(name, str) or not _SECRET_RE.fullmatch(name):
                raise InvalidWorkflow(f"sandbox secret name {name!r} must match [A-Z_][A-Z0-9_]*")
            if name in self.env:
                raise InvalidWorkflow(f"sandbox secret {name} is also set in env")
            secrets.append(name)
        if len(set(secrets)) != len(secrets):
            raise InvalidWorkflow("sandbox secrets are named twice")
        return tuple(secrets)

    def _check_ports(self) -> tuple[int, ...]:
        ports: list[int] = []
        for port in _tuple(self.ports, "ports"):
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise InvalidWorkflow(f"sandbox port {port!r} must be an integer 1..65535")
            ports.append(port)
        if len(set(ports)) != len(ports):
            raise InvalidWorkflow("sandbox ports are listed twice")
        if ports and not self.allow_network:
            raise InvalidWorkflow("sandbox ports need network='full' (allow_network)")
        return tuple(ports)

    def _check_files(self) -> dict[str, str]:
        if not isinstance(self.files, Mapping):
            raise InvalidWorkflow("sandbox files must be a mapping of path to text")
        if len(self.files) > MAX_SPEC_FILES:
            raise InvalidWorkflow(f"sandbox declares more than {MAX_SPEC_FILES} files")
        total = 0
        for path, content in self.files.items():
            check_relpath(path, "sandbox file", 255, InvalidWorkflow)
            if not isinstance(content, str):
                raise InvalidWorkflow(f"sandbox file {path}: content must be text")
            total += len(content.encode("utf-8", "surrogatepass"))
        if total > MAX_SPEC_FILES_BYTES:
            raise InvalidWorkflow(f"sandbox files are larger than {MAX_SPEC_FILES_BYTES} bytes")
        check_unique(self.files, "sandbox file", InvalidWorkflow)
        return dict(self.files)


def _egress_entry(entry: object) -> str:
    """``API.example.com:443`` -> ``api.example.com:443``; IPv6 in brackets."""
    if not isinstance(entry, str) or len(entry) > 260:
        raise InvalidWorkflow(f"sandbox egress entry {entry!r} must be a host:port string")
    host, _, port = entry.lower().rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidWorkflow(f"sandbox egress entry {entry!r} needs a port 1..65535")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        if bare != host or not _HOST_RE.fullmatch(host):
            raise InvalidWorkflow(f"sandbox egress entry {entry!r}: not a host name or address") from None
    return f"{host}:{int(port)}"


def resolve_secret_values(
    names: Iterable[str], environ: Mapping[str, str], secrets_dir: Path | None
) -> dict[str, str]:
    """Look up each secret: ``<secrets_dir>/<NAME>`` first, then the environment.

    One trailing newline of a secret file is dropped. A missing secret raises
    :class:`SandboxError` naming it (never its value).
    """
    values: dict[str, str] = {}
    for name in names:
        if not _SECRET_RE.fullmatch(name):
            raise SandboxError(f"secret name {name!r} is invalid")
        candidate = secrets_dir / name if secrets_dir is not None else None
        if candidate is not None and candidate.is_file():
            with candidate.open("rb") as handle:
                raw = handle.read(MAX_SECRET_BYTES + 1)
            if len(raw) > MAX_SECRET_BYTES:
                raise SandboxError(f"secret {name} is larger than {MAX_SECRET_BYTES} bytes")
            try:
                values[name] = raw.decode("utf-8").removesuffix("\n")
            except UnicodeDecodeError:
                raise SandboxError(f"secret {name} is not UTF-8 text") from None
        elif name in environ:
            values[name] = environ[name]
        else:
            raise SandboxError(f"secret {name} is not available on this worker")
    return values
