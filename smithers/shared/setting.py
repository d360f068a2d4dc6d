"""A declared ``SMITHERS_*`` variable: :class:`Setting` (name, default, meaning, parser),
the parsers its values go through, and the :class:`Section` s of the reference.

The declarations themselves are in :mod:`smithers.shared.settings`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from smithers.shared.errors import InvalidInput

T = TypeVar("T")
Parse = Callable[[str, str], T]  # (variable name, non-empty value) -> value, or InvalidInput

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, what: str = "duration") -> int:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h``, ``30d`` or ``2w``."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise InvalidInput(f"{what} {text!r} is not a duration like 90s, 15m, 12h or 30d")
    seconds = int(float(match.group(1)) * _UNIT_S[match.group(2)])
    if seconds < 1:
        raise InvalidInput(f"{what} {text!r} must be at least 1 second")
    return seconds


def format_duration(seconds: int) -> str:
    """The largest whole unit: 900 -> ``15m``, 86400 -> ``1d``, 90 -> ``90s``."""
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- value parsers: (name, raw) -> value ------------------------------------------------


def text(_name: str, raw: str) -> str:
    """The value as given."""
    return raw


def positive(name: str, raw: str) -> float:
    """A number above zero."""
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a number, not {raw!r}") from None
    if value <= 0:
        raise InvalidInput(f"{name} must be > 0")
    return value


def non_negative(name: str, raw: str) -> float:
    """A number of zero or more."""
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a number, not {raw!r}") from None
    if not value >= 0:
        raise InvalidInput(f"{name} must be >= 0")
    return value


def at_least(minimum: float) -> Parse[float]:
    """A number of at least ``minimum`` (itself above zero)."""

    def parse(name: str, raw: str) -> float:
        value = positive(name, raw)
        if value < minimum:
            raise InvalidInput(f"{name} must be at least {minimum:g}, not {value:g}")
        return value

    return parse


def count(name: str, raw: str) -> int:
    """A whole number above zero."""
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer, not {raw!r}") from None
    if value < 1:
        raise InvalidInput(f"{name} must be > 0")
    return value


def whole(name: str, raw: str) -> int:
    """A whole number, zero or more."""
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer, not {raw!r}") from None
    if value < 0:
        raise InvalidInput(f"{name} must be >= 0")
    return value


def duration(name: str, raw: str) -> int:
    """Seconds from a duration such as ``90s``, ``15m``, ``12h`` or ``30d``."""
    return parse_duration(raw, name)


def switch(_name: str, raw: str) -> bool:
    """On, unless ``0`` (or ``false``, ``no``, ``off``)."""
    return raw.lower() not in ("0", "false", "no", "off")


def choice(*values: str) -> Parse[str]:
    """One of ``values``."""

    def parse(name: str, raw: str) -> str:
        if raw not in values:
            raise InvalidInput(f"{name} must be one of {', '.join(values)}, not {raw!r}")
        return raw

    return parse


# -- declarations -----------------------------------------------------------------------


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable: its name, its default, what it means and how it parses.

    An unset or empty variable means ``default``; ``shown`` is the default as the
    reference prints it when the value itself would mislead (a default computed at run
    time, a duration in seconds).
    """

    name: str
    default: T
    help: str
    parse: Parse[T] = field(repr=False, compare=False)
    shown: str | None = None

    def read(self, env: Mapping[str, str]) -> T:
        """The value in ``env``, or the default; InvalidInput naming the variable if bad."""
        raw = env.get(self.name, "").strip()
        return self.default if not raw else self.parse(self.name, raw)

    def given(self, env: Mapping[str, str]) -> T | None:
        """The value in ``env``, or None when it is unset or empty (no default)."""
        raw = env.get(self.name, "").strip()
        return None if not raw else self.parse(self.name, raw)

    def default_text(self) -> str:
        """The default as the reference shows it."""
        if self.shown is not None:
            return self.shown
        if self.default is None or self.default == "":
            return "unset"
        if self.parse is duration and isinstance(self.default, int):
            return f"`{format_duration(self.default)}`"
        if isinstance(self.default, bool):
            return "`1`" if self.default else "`0`"
        if isinstance(self.default, float):
            return f"`{self.default:g}`"
        return f"`{self.default}`"


@dataclass
class Section:
    """A group of settings in the reference: a title, a paragraph and its variables."""

    title: str
    about: str
    settings: list[Setting[Any]] = field(default_factory=list)

    def add(self, setting: Setting[T]) -> Setting[T]:
        """Declare ``setting`` in this section; returns it."""
        self.settings.append(setting)
        return setting


SECTIONS: list[Section] = []


def section(title: str, about: str) -> Section:
    """A new section of the reference, in the order they are declared."""
    made = Section(title, about)
    SECTIONS.append(made)
    return made
