"""The ``smithers`` command: composes the gateway, scheduler and workers."""

from __future__ import annotations

__all__: list[str] = []
