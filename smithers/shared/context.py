"""What a step function and a branch/loop predicate see when they run."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from smithers.shared.budget import SpendMeter
from smithers.shared.errors import InvalidInput


@dataclass(frozen=True)
class StepContext:
    """Passed to a task function on a worker.

    ``outputs`` holds the outputs of the node's direct upstream nodes by node id (for a
    body node of a loop: its upstream body nodes in the same iteration, plus the loop's
    own upstream nodes); ``output(name)`` reads the output of any node it depends on,
    directly or not; ``previous`` holds the body outputs of the previous iteration. An
    item of a map node (:mod:`smithers.shared.fanout`) reads its item as ``item`` and its
    place in the list as ``index``; both are None for other nodes.
    """

    run_id: str
    node_id: str
    iteration: int
    attempt: int
    input: Mapping[str, Any]
    outputs: Mapping[str, Any]
    previous: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    heartbeat: Callable[[], bool] = field(default=lambda: True, repr=False)
    upstream: Mapping[str, Any] = field(default_factory=dict, repr=False)
    item: Any = None
    index: int | None = None
    meter: SpendMeter = field(default_factory=SpendMeter, repr=False)

    def output(self, name: str) -> Any:
        """The output of ``name``, a node this one depends on directly or not (``None``
        if it was skipped); read from the store on first use if it is not a parent."""
        return _output(self.node_id, name, self.outputs, self.upstream)

    def spend(self, tokens_in: int = 0, tokens_out: int = 0, cost: float = 0.0) -> None:
        """Report what this attempt spent (model tokens in and out, a cost in the
        deployment's currency); reports add up. Stored with the attempt when it commits,
        whether it succeeds or fails, and checked against the run's budget before the
        next step is dispatched (smithers.shared.budget)."""
        self.meter.add(tokens_in, tokens_out, cost)

    def secret(self, name: str) -> str:
        """The value of a secret the node declared; injected by the worker, never stored."""
        try:
            return self.secrets[name]
        except KeyError:
            raise InvalidInput(f"secret {name!r} is not declared by node {self.node_id!r}") from None


@dataclass(frozen=True)
class DecisionContext:
    """Passed to a branch's ``choose`` and a loop's ``until`` in the scheduler.

    For ``choose``, ``outputs`` holds the outputs of the branch's direct upstream nodes
    and ``output(name)`` reads any node it depends on, directly or not; for ``until``,
    ``outputs`` holds the body outputs of the iteration just finished.
    """

    run_id: str
    input: Mapping[str, Any]
    outputs: Mapping[str, Any]
    iteration: int = 0
    upstream: Mapping[str, Any] = field(default_factory=dict, repr=False)
    node_id: str = ""

    def output(self, name: str) -> Any:
        """The output of ``name``, a node this one depends on directly or not."""
        return _output(self.node_id, name, self.outputs, self.upstream)


def _output(node_id: str, name: str, outputs: Mapping[str, Any], upstream: Mapping[str, Any]) -> Any:
    if name in outputs:
        return outputs[name]
    try:
        return upstream[name]
    except KeyError:
        message = f"node {node_id!r} does not depend on {name!r}: its output is not readable"
        raise InvalidInput(message) from None


class UpstreamOutputs(Mapping[str, Any]):
    """The outputs a node may read, by node id: its direct parents are given, the
    others are read on first use.

    ``read(name)`` returns at least ``name``'s output and may return others it read
    along (a worker reads every missing one in one query). Keys are exactly ``names``.
    """

    def __init__(
        self,
        names: tuple[str, ...],
        known: Mapping[str, Any],
        read: Callable[[str], Mapping[str, Any]],
    ) -> None:
        self._names = names
        self._allowed = frozenset(names)
        self._known = {k: v for k, v in known.items() if k in self._allowed}
        self._read = read

    def __getitem__(self, name: str) -> Any:
        if name not in self._allowed:
            raise KeyError(name)
        if name not in self._known:
            got = self._read(name)
            self._known.update((k, v) for k, v in got.items() if k in self._allowed)
            self._known.setdefault(name, None)
        return self._known[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def missing(self) -> tuple[str, ...]:
        """The names not read yet."""
        return tuple(n for n in self._names if n not in self._known)
