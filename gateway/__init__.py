"""The Flask gateway: REST API, scoped bearer grants, event stream."""

from __future__ import annotations

__all__: list[str] = []
