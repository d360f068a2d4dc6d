"""Sandbox runtimes: backends that run a :class:`smithers.shared.sandbox.SandboxSpec` step.

Every runtime has the shape of :class:`SandboxRuntime`; :func:`create_runtime` picks
one by name. Only Docker exists today; importing this package imports the Docker SDK,
which is the optional ``docker`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping

from smithers.shared.bundle import BundleBounds
from smithers.shared.errors import SandboxError
from smithers.workers.runtime.base import ContainerOutcome, LiveAttempts, OnStarted, SandboxRuntime
from smithers.workers.runtime.docker import DockerRuntime

__all__ = [
    "ContainerOutcome",
    "DockerRuntime",
    "LiveAttempts",
    "OnStarted",
    "SandboxRuntime",
    "create_runtime",
]


def create_runtime(
    kind: str,
    worker_id: str,
    *,
    allowed_volume_roots: Mapping[str, bool],
    bounds: BundleBounds,
    work_size_mb: int,
    max_log_bytes: int,
    proxy_image: str = "smithers-sandbox:latest",
) -> SandboxRuntime:
    """The runtime called ``kind`` (``docker``), labelling its containers ``worker_id``."""
    if kind == "docker":
        return DockerRuntime(
            worker_id,
            allowed_volume_roots=allowed_volume_roots,
            bounds=bounds,
            work_size_mb=work_size_mb,
            max_log_bytes=max_log_bytes,
            proxy_image=proxy_image,
        )
    raise SandboxError(f"unknown sandbox runtime {kind!r} (available: docker)")
