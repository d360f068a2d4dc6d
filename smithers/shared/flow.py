"""Flow control of runs: priorities, concurrency limits and rate limits (pure).

A workflow declares its limits (``Workflow(..., concurrency=1, concurrency_key="customer",
rate_limit="10/m")``); a launch may give the run a ``priority``. Before a queued run's
first step is dispatched, the writer deciding it asks the store for admission
(:mod:`smithers.shared.store.flow`): the rules it applies are the plain functions here,
fed what the store read under the gate's lock.

- **Concurrency**: at most ``concurrency`` runs per key value hold a slot at once. A run
  beyond it waits (still ``queued``) in line, highest ``priority`` first, then oldest;
  the slot of a run that ends is handed to the first in line in the same transaction.
- **Rate**: at most ``n`` runs per key value start in any window of ``period_s``
  seconds (a sliding window over the last ``n`` start times). A run beyond it waits for
  the time the window next has room, a durable timer the scheduler keeps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smithers.shared.errors import InvalidInput, InvalidWorkflow

MIN_PRIORITY = 0
MAX_PRIORITY = 9  # kombu's range: 0..9
DEFAULT_PRIORITY = 0
MAX_RATE_N = 1000  # start times kept per key (one JSON list)
MAX_KEY_CHARS = 200  # a key value longer than this is refused at launch
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([smhd])\s*$")


@dataclass(frozen=True)
class RateLimit:
    """At most ``n`` starts in any ``period_s`` seconds."""

    n: int
    period_s: float


def parse_rate(text: str) -> RateLimit:
    """``"10/m"``, ``"2/s"``, ``"100/h"``, ``"5/30s"`` as a :class:`RateLimit`; raises
    InvalidWorkflow naming the expected form."""
    m = _RATE.match(text) if isinstance(text, str) else None
    if m is None:
        raise InvalidWorkflow(f"rate limit {text!r} must look like '10/m' (n per s, m, h or d, or '5/30s')")
    n, count, unit = int(m.group(1)), float(m.group(2) or 1), m.group(3)
    if not 1 <= n <= MAX_RATE_N or count <= 0:
        raise InvalidWorkflow(f"rate limit {text!r}: n must be 1..{MAX_RATE_N} over a positive period")
    return RateLimit(n, count * _UNITS[unit])


@dataclass(frozen=True)
class FlowPolicy:
    """A workflow's limits: ``concurrency`` runs at once per value of the input field
    ``concurrency_key`` (of the whole workflow without one), and ``rate`` starts per
    value of ``rate_key`` (default: the concurrency key)."""

    concurrency: int | None = None
    concurrency_key: str | None = None
    rate: RateLimit | None = None
    rate_key: str | None = None


def make_policy(
    name: str,
    concurrency: int | None,
    concurrency_key: str | None,
    rate_limit: str | None,
    rate_key: str | None,
) -> FlowPolicy | None:
    """The policy a ``Workflow(...)`` declares, checked; None when it declares no limit."""
    where = f"workflow {name!r}"
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise InvalidWorkflow(f"{where}: concurrency must be an integer >= 1")
    for label, key in (("concurrency_key", concurrency_key), ("rate_key", rate_key)):
        if key is not None and (not isinstance(key, str) or not key):
            raise InvalidWorkflow(f"{where}: {label} must name an input field")
    if concurrency_key is not None and concurrency is None:
        raise InvalidWorkflow(f"{where}: concurrency_key needs a concurrency")
    if rate_key is not None and rate_limit is None:
        raise InvalidWorkflow(f"{where}: rate_key needs a rate_limit")
    if concurrency is None and rate_limit is None:
        return None
    try:
        rate = parse_rate(rate_limit) if rate_limit is not None else None
    except InvalidWorkflow as exc:
        raise InvalidWorkflow(f"{where}: {exc.message}") from None
    return FlowPolicy(concurrency, concurrency_key, rate, rate_key or (concurrency_key if rate else None))


def key_value(field: str | None, run_input: Mapping[str, Any]) -> str:
    """The gate key of a run: its input's ``field`` as text (JSON for a non-string),
    ``""`` for a workflow-wide limit or an input without the field."""
    if field is None or field not in run_input:
        return ""
    value = run_input[field]
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text[:MAX_KEY_CHARS]


def check_input(policy: FlowPolicy | None, run_input: Mapping[str, Any]) -> None:
    """Refuse a launch whose input lacks a key field its workflow limits on, or holds
    one too long to be a key (InvalidInput)."""
    if policy is None:
        return
    for field in {policy.concurrency_key, policy.rate_key} - {None}:
        assert field is not None
        if field not in run_input:
            raise InvalidInput(f"input lacks {field!r}: the workflow's flow limits are per {field!r}")
        value = run_input[field]
        if isinstance(value, dict | list) or len(key_value(field, run_input)) >= MAX_KEY_CHARS:
            raise InvalidInput(f"input {field!r} must be a string or number under {MAX_KEY_CHARS} chars")


def check_priority(value: Any) -> int:
    """A launch's priority: an integer 0..9 (higher runs first; default 0)."""
    if value is None:
        return DEFAULT_PRIORITY
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidInput(
            f"priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY} (higher first)"
        )
    return int(value)


@dataclass(frozen=True)
class Waiter:
    """A run in line for a concurrency slot."""

    run_id: str
    priority: int
    since: float


def line_order(w: Waiter) -> tuple[int, float, str]:
    """The order runs take freed slots in: higher priority, then earlier, then by id."""
    return (-w.priority, w.since, w.run_id)


def may_take_slot(limit: int, held: int, me: Waiter, line: Sequence[Waiter]) -> bool:
    """True when ``me`` may take a slot: fewer than ``limit`` are held and fewer runs of
    ``line`` (the others waiting) are ahead of it than there are free slots."""
    free = limit - held
    if free <= 0:
        return False
    ahead = sum(1 for w in line if w.run_id != me.run_id and line_order(w) < line_order(me))
    return ahead < free


def next_in_line(free: int, line: Sequence[Waiter]) -> list[Waiter]:
    """The first ``free`` runs of ``line``, which a freed slot is handed to."""
    return sorted(line, key=line_order)[: max(free, 0)]


def rate_wait(limit: RateLimit, starts: Sequence[float], now: float) -> float | None:
    """None when a start now stays within ``limit`` given the earlier ``starts``; else
    the time a start is next allowed (when the n-th latest leaves the window)."""
    recent = sorted(t for t in starts if t > now - limit.period_s)
    if len(recent) < limit.n:
        return None
    return recent[-limit.n] + limit.period_s


def rate_record(limit: RateLimit, starts: Sequence[float], now: float) -> list[float]:
    """``starts`` with a start at ``now``: the latest ``n`` within the window."""
    kept = sorted(t for t in starts if t > now - limit.period_s)
    return [*kept, now][-limit.n :]
