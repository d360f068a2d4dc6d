"""Size bounds on what the store keeps: run input, step output, event payload.

Each is measured as its compact JSON encoding, in bytes, and checked before anything
is written: an oversized launch is refused (413), an oversized step output fails the
step with ``output_too_large`` and is not stored, an oversized event is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smithers.shared import settings
from smithers.shared.errors import InvalidInput, PayloadTooLarge


class OutputTooLarge(PayloadTooLarge):
    """A step returned more than the step output limit."""

    code = "output_too_large"


@dataclass(frozen=True)
class SizeLimits:
    """The largest run input, step output and event payload, in bytes of JSON."""

    input_bytes: int = settings.MAX_INPUT_BYTES.default
    output_bytes: int = settings.MAX_OUTPUT_BYTES.default
    event_bytes: int = settings.MAX_EVENT_BYTES.default

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SizeLimits:
        """Read SMITHERS_MAX_INPUT_BYTES, SMITHERS_MAX_OUTPUT_BYTES and SMITHERS_MAX_EVENT_BYTES."""
        return cls(
            input_bytes=settings.MAX_INPUT_BYTES.read(env),
            output_bytes=settings.MAX_OUTPUT_BYTES.read(env),
            event_bytes=settings.MAX_EVENT_BYTES.read(env),
        )


def json_size(value: Any, what: str) -> int:
    """Bytes of ``value`` as compact JSON (UTF-8); not JSON is invalid input."""
    try:
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not JSON: {exc}") from None


def check_size(value: Any, limit: int, what: str, error: type[PayloadTooLarge] = PayloadTooLarge) -> int:
    """Raise ``error`` when ``value`` is larger than ``limit`` bytes of JSON; its size."""
    size = json_size(value, what)
    if size > limit:
        raise error(f"{what} is {size} bytes of JSON; the limit is {limit}")
    return size
