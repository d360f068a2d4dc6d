"""Sandbox runtimes: backends that run a :class:`shared.sandbox.SandboxSpec` step.

Only Docker exists today. Importing this package imports the Docker SDK, which is the
optional ``docker`` extra.
"""

from __future__ import annotations

from workers.runtime.docker import ContainerOutcome, DockerRuntime

__all__ = ["ContainerOutcome", "DockerRuntime"]
