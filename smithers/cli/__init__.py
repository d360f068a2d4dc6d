"""The ``smithers`` command: composes the gateway, scheduler and workers."""

from __future__ import annotations

from smithers.cli.entry import main

__all__ = ["main"]
