"""Whether gevent patched this process's standard library (``smithers gateway`` with
gevent workers, ``smithers worker --pool gevent``: :mod:`smithers.cli.entry` patches)."""

from __future__ import annotations

import sys


def gevent_patched() -> bool:
    """True once gevent patched the standard library in this process (nothing imported
    ``gevent.monkey``: not patched, and gevent is not imported to find out)."""
    if "gevent.monkey" not in sys.modules:
        return False
    from gevent import monkey  # type: ignore[import-untyped]  # noqa: PLC0415

    return bool(monkey.is_module_patched("socket"))
