"""The Flask gateway: REST API, scoped bearer grants, event streams."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Imported lazily: smithers.gateway.server must set PROMETHEUS_MULTIPROC_DIR before the app
    # (and prometheus_client with it) is imported.
    if name == "create_app":
        from smithers.gateway.app import create_app  # noqa: PLC0415

        return create_app
    raise AttributeError(name)
