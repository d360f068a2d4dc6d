"""Dynamic fan-out: a task mapped over a list taken from an upstream node's output.

``wf.map(over=fetch, key="urls", max_width=500, concurrency=20)`` declares a task that
runs once per item of ``fetch``'s output ``["urls"]`` (the output itself when ``key`` is
None; ``pick(output)`` when given). The node's execution at iteration 0 is the map
itself: it records the width when it starts and succeeds with the list of the items'
outputs in index order. Item ``index`` is the node's execution at iteration
``index + 1`` (:func:`item_iteration`): its own row, attempts, retries, cache key and
output, so a failing item retries alone. A map node is never inside a loop, so its
iterations are free for its items.

Pure functions over plain data; the decision (:mod:`smithers.shared.decision_map`) and
the worker both pick the items with :func:`items_of`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smithers.shared.errors import InvalidInput, InvalidWorkflow

MAX_WIDTH = 10_000  # the widest map a workflow may declare
DEFAULT_MAX_WIDTH = 1_000

PickFn = Callable[[Any], Any]


@dataclass(frozen=True)
class MapSpec:
    """How a map node finds its items and how many it runs at once."""

    over: str  # the upstream node whose output holds the list
    key: str | None = None  # the list is ``output[key]``; None: the output itself
    pick: PickFn | None = None  # or ``pick(output)`` (plain data in, a list out)
    max_width: int = DEFAULT_MAX_WIDTH  # more items than this fails the node (map_too_wide)
    concurrency: int | None = None  # at most this many items in flight; None: max_width

    @property
    def in_flight(self) -> int:
        """How many items may be queued, running or backing off at once."""
        return self.concurrency if self.concurrency is not None else self.max_width


def make_spec(
    node_id: str,
    over: str,
    *,
    key: str | None,
    pick: PickFn | None,
    max_width: int,
    concurrency: int | None,
) -> MapSpec:
    """A checked :class:`MapSpec`; a bad declaration raises :class:`InvalidWorkflow`."""
    where = f"map {node_id!r}"
    if key is not None and pick is not None:
        raise InvalidWorkflow(f"{where}: give key or pick, not both")
    if key is not None and not isinstance(key, str):
        raise InvalidWorkflow(f"{where}: key must be a string")
    if isinstance(max_width, bool) or not isinstance(max_width, int) or not 1 <= max_width <= MAX_WIDTH:
        raise InvalidWorkflow(f"{where}: max_width must be an integer from 1 to {MAX_WIDTH}")
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise InvalidWorkflow(f"{where}: concurrency must be an integer >= 1")
    return MapSpec(over, key, pick, max_width, concurrency)


def item_iteration(index: int) -> int:
    """The node execution (iteration) that runs item ``index`` of a map."""
    return index + 1


def item_index(iteration: int) -> int | None:
    """The item a map node's execution at ``iteration`` runs; None for the map itself."""
    return iteration - 1 if iteration > 0 else None


def items_of(spec: MapSpec, output: Any) -> list[Any]:
    """The items a map runs over, from its ``over`` node's output.

    Raises :class:`InvalidInput` (code ``invalid_input``) naming what was wrong: no such
    key, not a list, or ``pick`` failed."""
    if spec.pick is not None:
        try:
            found = spec.pick(output)
        except Exception as exc:
            raise InvalidInput(
                f"pick on the output of {spec.over!r} raised {type(exc).__name__}: {exc}"
            ) from None
        where = f"pick(output of {spec.over!r})"
    elif spec.key is not None:
        if not isinstance(output, dict) or spec.key not in output:
            raise InvalidInput(f"the output of {spec.over!r} has no key {spec.key!r}")
        found, where = output[spec.key], f"the output of {spec.over!r}[{spec.key!r}]"
    else:
        found, where = output, f"the output of {spec.over!r}"
    if not isinstance(found, list):
        raise InvalidInput(f"{where} is {type(found).__name__}, not a list")
    return found
