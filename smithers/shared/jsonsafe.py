"""Strict JSON: the values every store and every strict JSON parser can hold.

Refused, naming where: non-finite numbers (``NaN``, ``Infinity``, ``1e400``), integers
past :data:`MAX_INT` (what a 64-bit column and most parsers hold), and strings or keys
with a NUL character (PostgreSQL's ``jsonb`` and ``text`` hold none) or a lone UTF-16
surrogate (no UTF-8 encoding exists). Run input, request bodies and query strings, and
step outputs pass :func:`check_json` before they are stored.
"""

from __future__ import annotations

import math
import re
from typing import Any

from smithers.shared.errors import InvalidInput

MAX_INT = 2**63 - 1
MAX_INT_DIGITS = 19
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")


def check_text(text: str, where: str) -> None:
    """Refuse a NUL or a lone surrogate in ``text`` (a string value, a key, a query value)."""
    found = _BAD_CHAR.search(text)
    if found is not None:
        what = "a NUL character" if found.group() == "\x00" else "a lone UTF-16 surrogate"
        raise InvalidInput(f"{where} contains {what} (not storable JSON text)")


def check_json(value: Any, where: str) -> None:
    """Raise InvalidInput naming the first field of ``value`` that strict JSON cannot hold."""
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if abs(value) > MAX_INT:
            raise InvalidInput(f"{where} is an integer past ±{MAX_INT}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{where} is not a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{where} has a key that is not a string: {key!r}")
            check_text(key, f"a key of {where}")
            check_json(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_json(item, f"{where}[{i}]")
    else:
        raise InvalidInput(f"{where} is a {type(value).__name__}, not a JSON value")


def parse_int(text: str) -> int:
    """``json.loads``'s ``parse_int``: refuse integers longer than :data:`MAX_INT_DIGITS` digits
    before converting them (a 5,000-digit integer would otherwise raise ValueError)."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise InvalidInput(f"an integer of {len(text.lstrip('-'))} digits is past ±{MAX_INT}")
    return int(text)


def parse_float(text: str) -> float:
    """``json.loads``'s ``parse_float``: refuse numbers that overflow to infinity (``1e400``)."""
    value = float(text)
    if not math.isfinite(value):
        raise InvalidInput(f"the number {text[:40]} is out of range")
    return value
